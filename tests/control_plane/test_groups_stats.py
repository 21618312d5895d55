"""GET /api/agent-groups/{id}/stats and POST …/reset-strategy (SPEC §2.9) against counters laid out
as the engine's balancer writes them (shared/redis_keys.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from control_plane.settings import get_settings
from shared.redis_keys import TenantKeys
from tests.conftest import REDIS_URL
from tests.control_plane.conftest import Account
from tests.control_plane.test_groups import make_agent, make_group


@pytest.fixture
def store() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


def route_call(store: redis.Redis, keys: TenantKeys, agent_id: int, minute: int) -> None:
    """What the balancer does when it routes a call: bump the minute and the hour bucket."""
    store.hincrby(keys.window_minute(minute), str(agent_id), 1)
    store.hincrby(keys.window_hour(minute // 60), str(agent_id), 1)


async def test_stats_and_reset(account: Account, store: redis.Redis) -> None:
    a = (await make_agent(account, "A"))["id"]
    b = (await make_agent(account, "B"))["id"]
    group = await make_group(account, strategy="round_robin", settings={"window_hours": 24})
    url = f"/api/agent-groups/{group['id']}"
    await account.post(f"{url}/members", json={"agent_id": a, "capacity": 4})
    await account.post(f"{url}/members", json={"agent_id": b, "priority": 2})

    keys = TenantKeys(get_settings().redis_prefix, account.tenant_id)
    seconds, _ = store.time()
    now_ms = seconds * 1000
    now_min = seconds // 60
    for _ in range(3):
        route_call(store, keys, a, now_min)
    for _ in range(2):
        route_call(store, keys, a, now_min - 300)
    for _ in range(5):
        route_call(store, keys, a, now_min - 25 * 60)  # outside the 24 h window
    route_call(store, keys, b, now_min - 10)
    store.zadd(keys.active(a), {"live-call": now_ms + 60_000, "expired-call": now_ms - 1_000})
    store.hset(keys.last_chosen(), str(a), now_ms)
    store.set(keys.round_robin(group["id"]), f"1:{a}")

    stats = await account.get(f"{url}/stats")
    assert stats.status_code == 200, stats.text
    body = stats.json()
    assert body["group_id"] == group["id"]
    assert body["strategy"] == "round_robin"
    assert body["window_hours"] == 24
    assert body["round_robin_last"] == {"priority": 1, "agent_id": a}
    per = {m["agent_id"]: m for m in body["members"]}
    assert [m["agent_id"] for m in body["members"]] == [a, b]
    assert (per[a]["window_calls"], per[a]["active_calls"], per[a]["utilisation"]) == (5, 1, 0.25)
    assert per[a]["last_chosen_at"] is not None
    assert (per[b]["window_calls"], per[b]["active_calls"], per[b]["utilisation"]) == (1, 0, None)
    assert per[b]["last_chosen_at"] is None
    assert (body["window_calls"], body["active_calls"]) == (6, 1)

    reset = await account.post(f"{url}/reset-strategy")
    assert reset.status_code == 200, reset.text
    assert reset.json()["agents"] == 2
    assert reset.json()["keys_deleted"] > 0
    after = (await account.get(f"{url}/stats")).json()
    assert after["round_robin_last"] is None
    assert [(m["window_calls"], m["active_calls"]) for m in after["members"]] == [(0, 1), (0, 0)]
    assert store.zcard(keys.active(a)) == 2  # live slots are real calls: untouched
    store.delete(keys.active(a), keys.last_chosen())


async def test_stats_of_an_empty_group(account: Account) -> None:
    group = await make_group(account)
    stats = (await account.get(f"/api/agent-groups/{group['id']}/stats")).json()
    assert stats["members"] == []
    assert stats["round_robin_last"] is None
    reset = await account.post(f"/api/agent-groups/{group['id']}/reset-strategy")
    assert reset.status_code == 200
    assert reset.json()["agents"] == 0


async def test_window_sums_match_the_engine_script(account: Account, store: redis.Redis) -> None:
    """The control plane's rolling-window sum agrees with balancer.lua's for several window sizes."""
    import redis.asyncio

    from control_plane.groups.counters import group_counters
    from routing_engine.balancer import Balancer

    prefix = get_settings().redis_prefix
    keys = TenantKeys(prefix, account.tenant_id)
    agent = 1_000_000 + account.tenant_id
    now_min = store.time()[0] // 60
    for minute in range(now_min - 30 * 60, now_min + 1, 7):
        route_call(store, keys, agent, minute)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    balancer = Balancer(client, prefix=prefix)
    try:
        for window_hours in (1, 2, 5, 24):
            for _ in range(3):  # retry when a minute boundary falls between the two reads
                before = store.time()[0] // 60
                ours, _ = await group_counters(client, keys, 0, window_hours, [agent])
                engine = await balancer.group_stats(account.tenant_id, 0, [agent], window_hours)
                if store.time()[0] // 60 == before:
                    break
            assert ours[agent].window_calls == engine[agent].window_calls, window_hours
            assert ours[agent].window_calls > 0
    finally:
        names = [keys.window_minute(m) for m in range(now_min - 30 * 60, now_min + 1)]
        names += [keys.window_hour(h) for h in range(now_min // 60 - 31, now_min // 60 + 1)]
        store.delete(*names)
        await client.aclose()
