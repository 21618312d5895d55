"""settings.outlier through the API: validation (422 naming the field), who is out in
``GET /api/agent-groups/{id}/stats``, and ``DELETE /api/agent-groups/{id}/ejections/{agent_id}`` (admin
only, tenant-scoped). Redis holds the ejections as the engine's balancer.lua writes them
(shared/redis_keys.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from control_plane.live.messages import call_frame, encode_text
from control_plane.settings import get_settings
from shared.enums import EventKind
from shared.events import CallEvent
from shared.redis_keys import TenantKeys
from tests.conftest import REDIS_URL
from tests.control_plane.conftest import Account
from tests.control_plane.test_groups import make_agent, make_group


@pytest.fixture
def store() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.mark.parametrize(
    ("outlier", "field"),
    [
        ({"consecutive_failures": 0}, "settings.outlier.consecutive_failures"),
        ({"failure_rate": 1.5}, "settings.outlier.failure_rate"),
        ({"failure_rate": 0}, "settings.outlier.failure_rate"),
        ({"window_s": 5}, "settings.outlier.window_s"),
        ({"max_ejected_percent": 101}, "settings.outlier.max_ejected_percent"),
        ({"short_call_s": -1}, "settings.outlier.short_call_s"),
        ({"base_ejection_s": "30"}, "settings.outlier.base_ejection_s"),
        ({"base_ejection_s": 60, "max_ejection_s": 30}, "settings.outlier.max_ejection_s"),
        ({"bogus": 1}, "settings.outlier.bogus"),
        ({"allow_eject_all": "yes"}, "settings.outlier.allow_eject_all"),
    ],
)
async def test_bad_outlier_settings_are_422_naming_the_field(
    account: Account, outlier: dict[str, Any], field: str
) -> None:
    r = await account.post("/api/agent-groups", json={"name": "G", "settings": {"outlier": outlier}})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]


async def test_outlier_settings_round_trip(account: Account) -> None:
    group = await make_group(
        account, settings={"outlier": {"consecutive_failures": 3, "short_call_s": 4, "failure_rate": 0.5}}
    )
    stored = group["settings"]["outlier"]
    assert {k: stored[k] for k in ("consecutive_failures", "short_call_s", "failure_rate")} == {
        "consecutive_failures": 3,
        "short_call_s": 4,
        "failure_rate": 0.5,
    }
    assert (stored["base_ejection_s"], stored["max_ejection_s"], stored["max_ejected_percent"]) == (
        30,
        600,
        50,
    )
    assert stored["allow_eject_all"] is False
    r = await account.put(f"/api/agent-groups/{group['id']}", json={"settings": {"outlier": None}})
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["outlier"] is None


async def group_with_ejection(account: Account, store: redis.Redis) -> tuple[dict[str, Any], int, int, str]:
    a = (await make_agent(account, "A"))["id"]
    b = (await make_agent(account, "B"))["id"]
    group = await make_group(account, strategy="priority", settings={"outlier": {}})
    for agent_id in (a, b):
        r = await account.post(f"/api/agent-groups/{group['id']}/members", json={"agent_id": agent_id})
        assert r.status_code == 201, r.text
    keys = TenantKeys(get_settings().redis_prefix, account.tenant_id)
    now_ms = int(time.time() * 1000)
    store.hset(
        keys.outlier_ejections(group["id"]),
        mapping={
            str(a): f"{now_ms + 60_000}|2|consecutive:busy|{now_ms}|{'a' * 32}",
            str(b): f"{now_ms - 1_000}|1|consecutive:short_call|{now_ms - 31_000}|{'b' * 32}",  # probation
        },
    )
    store.hset(keys.outlier_state(group["id"]), mapping={f"s:{b}": 2, f"w:{b}": f"{now_ms}:2:3"})
    return group, a, b, keys.outlier_ejections(group["id"])


async def test_stats_show_who_is_out_until_when_and_why(account: Account, store: redis.Redis) -> None:
    group, a, b, _ = await group_with_ejection(account, store)
    body = (await account.get(f"/api/agent-groups/{group['id']}/stats")).json()
    per = {m["agent_id"]: m for m in body["members"]}
    assert per[a]["ejected_until"] is not None
    assert (per[a]["ejection_reason"], per[a]["ejections"], per[a]["on_probation"]) == (
        "consecutive:busy",
        2,
        False,
    )
    assert per[b]["ejected_until"] is None
    assert (per[b]["on_probation"], per[b]["consecutive_failures"]) == (True, 2)
    assert [(e["agent_id"], e["reason"], e["ejections"], e["session_token"]) for e in body["ejected"]] == [
        (a, "consecutive:busy", 2, "a" * 32)
    ]


async def test_admin_lifts_an_ejection(account: Account, other_account: Account, store: redis.Redis) -> None:
    group, a, b, olx = await group_with_ejection(account, store)
    url = f"/api/agent-groups/{group['id']}/ejections/{a}"

    # a viewer may read the stats but not lift
    email = f"viewer-{group['id']}@example.com"
    created = await account.post(
        "/api/users", json={"name": "V", "email": email, "password": "viewer-pass-1", "role": "viewer"}
    )
    assert created.status_code == 201, created.text
    login = await account.client.post("/api/login", json={"email": email, "password": "viewer-pass-1"})
    viewer = {"Authorization": f"Bearer {login.json()['token']}"}
    assert (
        await account.client.get(f"/api/agent-groups/{group['id']}/stats", headers=viewer)
    ).status_code == 200
    assert (await account.client.delete(url, headers=viewer)).status_code == 403

    # another tenant: 404, and nothing moves
    assert (await other_account.delete(url)).status_code == 404
    assert (await other_account.get(f"/api/agent-groups/{group['id']}/stats")).status_code == 404
    assert store.hexists(olx, str(a))

    r = await account.delete(url)
    assert r.status_code == 204, r.text
    assert not store.hexists(olx, str(a))
    body = (await account.get(f"/api/agent-groups/{group['id']}/stats")).json()
    assert body["ejected"] == []
    assert (await account.delete(url)).status_code == 404  # not ejected any more
    assert (await account.delete(f"/api/agent-groups/{group['id']}/ejections/999999")).status_code == 404

    # lifting an agent on probation clears it too (with its failures)
    r = await account.delete(f"/api/agent-groups/{group['id']}/ejections/{b}")
    assert r.status_code == 204
    per = {
        m["agent_id"]: m
        for m in (await account.get(f"/api/agent-groups/{group['id']}/stats")).json()["members"]
    }
    assert (per[b]["on_probation"], per[b]["consecutive_failures"]) == (False, 0)


def test_outlier_events_become_agent_frames() -> None:
    event = CallEvent(
        event_id="7:s:outlier:ejected:1:2:1",
        kind=EventKind.OUTLIER,
        tenant_id=7,
        domain="",
        session_token="s" * 32,
        occurred_at=1_780_000_000.5,
        group_id=1,
        agent_id=2,
        outcome="ejected",
        status="consecutive:busy",
        payload={"until_ms": 1_780_000_030_500, "ejections": 1, "backoff_s": 30},
    )
    frame = call_frame(event)
    assert frame is not None
    text = encode_text(frame)
    assert '"type":"agent.ejected"' in text
    assert '"until":"' in text
    assert frame.type == "agent.ejected"
    lifted = call_frame(
        CallEvent(**{**_fields(event), "outcome": "lifted", "session_token": "", "payload": None})
    )
    assert lifted is not None
    assert lifted.type == "agent.lifted"
    assert call_frame(CallEvent(**{**_fields(event), "outcome": "something"})) is None


def _fields(event: CallEvent) -> dict[str, Any]:
    return {f: getattr(event, f) for f in event.__struct_fields__}
