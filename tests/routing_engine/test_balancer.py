"""The balancer's choice rules, slots, windows and idempotency, against the shared Redis."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from collections import Counter

import pytest
import redis.asyncio as aioredis

from control_plane.groups.counters import reset_group_counters
from routing_engine.balancer import Balancer, Candidate, DecideRequest
from shared.redis_keys import MAX_WINDOW_HOURS, TenantKeys

_tenants = itertools.count(1000)
_sessions = itertools.count(1)


@pytest.fixture
async def balancer(redis_client: aioredis.Redis) -> Balancer:
    return Balancer(redis_client, prefix=os.environ["VLB_REDIS_PREFIX"])


@pytest.fixture
def tenant() -> int:
    return next(_tenants)


def members(*specs: tuple[int, int, int]) -> tuple[Candidate, ...]:
    """(agent_id, priority, capacity) in the (priority, agent_id) order the engine passes."""
    return tuple(
        Candidate(agent_id=a, priority=p, capacity=c) for a, p, c in sorted(specs, key=lambda s: (s[1], s[0]))
    )


def request(
    tenant: int,
    candidates: tuple[Candidate, ...],
    *,
    strategy: str,
    session: str | None = None,
    stage: str = "app",
    group_id: int = 1,
    window_hours: int = 24,
    max_attempts: int = 3,
    fallback_enabled: bool = True,
    failed_agent: int | None = None,
) -> DecideRequest:
    answers = tuple((f"<Response><Dial>{c.agent_id}</Dial></Response>", "") for c in candidates)
    return DecideRequest(
        tenant_id=tenant,
        session=session or f"sess{next(_sessions):028d}",
        stage=stage,
        strategy=strategy,
        group_id=group_id,
        window_hours=window_hours,
        max_attempts=max_attempts,
        fallback_enabled=fallback_enabled,
        candidates=candidates,
        answers=answers,
        no_agent="<Response><Hangup/></Response>",
        failed_agent=failed_agent,
    )


async def choose_agents(balancer: Balancer, requests: list[DecideRequest]) -> list[int | None]:
    return [r.agent_id for r in await asyncio.gather(*(balancer.decide(q) for q in requests))]


async def test_priority_takes_lowest_priority_then_lowest_id(balancer: Balancer, tenant: int) -> None:
    cands = members((9, 1, 1), (5, 1, 1), (3, 2, 1))
    chosen = [(await balancer.decide(request(tenant, cands, strategy="priority"))).agent_id for _ in range(4)]
    assert chosen == [5, 9, 3, None]


async def test_no_agent_answer_when_all_full(balancer: Balancer, tenant: int) -> None:
    cands = members((1, 1, 1))
    await balancer.decide(request(tenant, cands, strategy="priority"))
    result = await balancer.decide(request(tenant, cands, strategy="priority"))
    assert (result.index, result.agent_id, result.cxml) == (-1, None, "<Response><Hangup/></Response>")


async def test_round_robin_spreads_within_one(balancer: Balancer, tenant: int) -> None:
    cands = members((1, 1, 0), (2, 1, 0), (3, 2, 0), (4, 5, 0))
    chosen: list[int | None] = []
    for _ in range(10):  # coalesced bursts and single decisions alike
        chosen += await choose_agents(
            balancer, [request(tenant, cands, strategy="round_robin") for _ in range(9)]
        )
        chosen.append((await balancer.decide(request(tenant, cands, strategy="round_robin"))).agent_id)
    counts = Counter(chosen)
    assert set(counts) == {1, 2, 3, 4}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert chosen[:5] == [1, 2, 3, 4, 1]


async def test_round_robin_skips_full_members(balancer: Balancer, tenant: int) -> None:
    cands = members((1, 1, 0), (2, 1, 1), (3, 1, 0))
    chosen = await choose_agents(balancer, [request(tenant, cands, strategy="round_robin") for _ in range(7)])
    assert chosen == [1, 2, 3, 1, 3, 1, 3]


async def test_round_robin_continues_after_removed_member(balancer: Balancer, tenant: int) -> None:
    await balancer.decide(request(tenant, members((1, 1, 0), (2, 1, 0), (3, 1, 0)), strategy="round_robin"))
    await balancer.decide(request(tenant, members((1, 1, 0), (2, 1, 0), (3, 1, 0)), strategy="round_robin"))
    # agent 2 was chosen last and has left the group: the next in order is 3
    result = await balancer.decide(request(tenant, members((1, 1, 0), (3, 1, 0)), strategy="round_robin"))
    assert result.agent_id == 3


async def test_load_balanced_follows_the_window(
    balancer: Balancer, redis_client: aioredis.Redis, tenant: int
) -> None:
    keys = TenantKeys(os.environ["VLB_REDIS_PREFIX"], tenant)
    seconds, _ = await redis_client.time()
    minute = seconds // 60
    await redis_client.hset(keys.window_minute(minute), "1", 4)
    await redis_client.hset(keys.window_hour(minute // 60), "1", 4)
    # Agent 2 was busy 3 hours ago: outside a 1 h window, inside a 24 h one.
    await redis_client.hset(keys.window_hour(minute // 60 - 3), "2", 50)
    cands = members((1, 1, 0), (2, 2, 0), (3, 3, 0))
    first = await choose_agents(
        balancer, [request(tenant, cands, strategy="load_balanced", window_hours=1) for _ in range(8)]
    )
    assert Counter(first) == {2: 4, 3: 4}
    assert first[:2] == [2, 3]
    # all at 4 now: ties go by priority, then spread evenly
    nxt = await choose_agents(
        balancer, [request(tenant, cands, strategy="load_balanced", window_hours=1) for _ in range(3)]
    )
    assert nxt == [1, 2, 3]
    wide = await balancer.decide(request(tenant, cands, strategy="load_balanced", window_hours=24))
    assert wide.agent_id == 1  # agent 2's old calls count in a 24 h window


async def test_a_short_window_groups_calls_count_for_a_long_window_group(
    balancer: Balancer, redis_client: aioredis.Redis, tenant: int
) -> None:
    """Window counts are the agent's, whichever group routed the call: a bucket written by a 1 h
    group lives as long as the longest window can read it."""
    keys = TenantKeys(os.environ["VLB_REDIS_PREFIX"], tenant)
    before, _ = await redis_client.time()
    await balancer.decide(request(tenant, members((4, 1, 0)), strategy="load_balanced", window_hours=1))
    after, _ = await redis_client.time()
    minutes = {before // 60, after // 60}  # the minute may turn meanwhile
    assert max([await redis_client.ttl(keys.window_minute(m)) for m in minutes]) > MAX_WINDOW_HOURS * 3600
    hour_ttls = [await redis_client.ttl(keys.window_hour(m // 60)) for m in minutes]
    assert max(hour_ttls) > (MAX_WINDOW_HOURS + 1) * 3600
    assert (await balancer.group_stats(tenant, 2, [4], MAX_WINDOW_HOURS))[4].window_calls == 1


async def test_load_balanced_is_relative_to_capacity(balancer: Balancer, tenant: int) -> None:
    cands = members((1, 1, 10), (2, 1, 20))
    chosen: list[int | None] = []
    for _ in range(30):
        req = request(tenant, cands, strategy="load_balanced")
        chosen.append((await balancer.decide(req)).agent_id)
        assert await balancer.release(tenant, req.session, reason="completed")
    assert Counter(chosen) == {1: 10, 2: 20}


async def test_window_sum_matches_minute_buckets(
    balancer: Balancer, redis_client: aioredis.Redis, tenant: int
) -> None:
    """The script's hour+minute decomposition equals a plain sum of the window's minutes."""
    keys = TenantKeys(os.environ["VLB_REDIS_PREFIX"], tenant)
    rng = random.Random(7)
    for agent in (7, 8, 9):  # a fresh agent for each try
        seconds, _ = await redis_client.time()
        now = seconds // 60
        per_minute = {now - back: rng.randint(1, 5) for back in rng.sample(range(0, 5 * 60), 120)}
        hours = Counter[int]()
        async with redis_client.pipeline(transaction=False) as pipe:
            for m, n in per_minute.items():
                pipe.hset(keys.window_minute(m), str(agent), n)
                hours[m // 60] += n
            for h, n in hours.items():
                pipe.hset(keys.window_hour(h), str(agent), n)
            await pipe.execute()
        stats = {
            w: (await balancer.group_stats(tenant, 1, [agent], w))[agent].window_calls for w in (1, 2, 4)
        }
        seconds_after, _ = await redis_client.time()
        if seconds_after // 60 != now:
            continue  # the minute turned while measuring: measure again
        for w, got in stats.items():
            assert got == sum(n for m, n in per_minute.items() if m > now - w * 60), w
        return
    pytest.fail("minute kept turning")


async def test_single_agent_target_respects_capacity(balancer: Balancer, tenant: int) -> None:
    cands = members((4, 1, 1))
    first = request(tenant, cands, strategy="single", group_id=0)
    assert (await balancer.decide(first)).agent_id == 4
    assert (await balancer.decide(request(tenant, cands, strategy="single", group_id=0))).agent_id is None
    assert await balancer.release(tenant, first.session, reason="completed")
    assert (await balancer.decide(request(tenant, cands, strategy="single", group_id=0))).agent_id == 4


async def test_unlimited_capacity_never_fills(balancer: Balancer, tenant: int) -> None:
    cands = members((4, 1, 0))
    chosen = await choose_agents(balancer, [request(tenant, cands, strategy="single") for _ in range(50)])
    assert chosen == [4] * 50
    assert await balancer.active_calls(tenant, [4]) == {4: 50}


async def test_fallback_skips_tried_agents_up_to_max_attempts(balancer: Balancer, tenant: int) -> None:
    cands = members((1, 1, 0), (2, 2, 0), (3, 3, 0), (4, 4, 0))
    session = "a" * 32
    first = await balancer.decide(request(tenant, cands, strategy="priority", session=session))
    second = await balancer.decide(
        request(tenant, cands, strategy="priority", session=session, stage="dial-1", failed_agent=1)
    )
    third = await balancer.decide(
        request(tenant, cands, strategy="priority", session=session, stage="dial-2", failed_agent=2)
    )
    fourth = await balancer.decide(
        request(tenant, cands, strategy="priority", session=session, stage="dial-3", failed_agent=3)
    )
    assert [(r.agent_id, r.attempt) for r in (first, second, third, fourth)] == [
        (1, 1),
        (2, 2),
        (3, 3),
        (None, 4),
    ]
    # every failed dial freed its slot, and nothing holds one now
    assert await balancer.active_calls(tenant, [1, 2, 3, 4]) == {1: 0, 2: 0, 3: 0, 4: 0}
    assert not await balancer.release(tenant, session, reason="cdr")


async def test_round_robin_fallback_never_retries_an_agent(balancer: Balancer, tenant: int) -> None:
    cands = members((1, 1, 0), (2, 1, 0))
    session = "b" * 32
    chosen = [
        (await balancer.decide(request(tenant, cands, strategy="round_robin", session=session))).agent_id
    ]
    for n in (1, 2):
        result = await balancer.decide(
            request(
                tenant,
                cands,
                strategy="round_robin",
                session=session,
                stage=f"dial-{n}",
                failed_agent=chosen[-1],
                max_attempts=5,
            )
        )
        chosen.append(result.agent_id)
    assert chosen == [1, 2, None]


async def test_fallback_disabled_answers_no_agent_and_frees_the_slot(balancer: Balancer, tenant: int) -> None:
    cands = members((1, 1, 1), (2, 2, 1))
    session = "c" * 32
    await balancer.decide(
        request(tenant, cands, strategy="priority", session=session, fallback_enabled=False)
    )
    result = await balancer.decide(
        request(
            tenant,
            cands,
            strategy="priority",
            session=session,
            stage="dial-1",
            failed_agent=1,
            fallback_enabled=False,
        )
    )
    assert (result.agent_id, result.cxml) == (None, "<Response><Hangup/></Response>")
    assert await balancer.active_calls(tenant, [1, 2]) == {1: 0, 2: 0}


async def test_release_frees_exactly_once(balancer: Balancer, tenant: int) -> None:
    cands = members((1, 1, 1))
    req = request(tenant, cands, strategy="priority")
    await balancer.decide(req)
    results = await asyncio.gather(*(balancer.release(tenant, req.session, reason="cdr") for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert not await balancer.release(tenant, req.session, reason="session_update")
    # a failed dial-status after the release frees nothing more
    other = request(tenant, cands, strategy="priority")
    assert (await balancer.decide(other)).agent_id == 1
    await balancer.decide(
        request(tenant, cands, strategy="priority", session=req.session, stage="dial-1", failed_agent=1)
    )
    assert await balancer.active_calls(tenant, [1]) == {1: 1}


async def test_slot_frees_itself_after_the_safety_ttl(redis_client: aioredis.Redis, tenant: int) -> None:
    short = Balancer(redis_client, prefix=os.environ["VLB_REDIS_PREFIX"], active_slot_ttl_s=1)
    cands = members((1, 1, 1))
    assert (await short.decide(request(tenant, cands, strategy="priority"))).agent_id == 1
    assert (await short.decide(request(tenant, cands, strategy="priority"))).agent_id is None
    await asyncio.sleep(1.1)
    assert await short.active_calls(tenant, [1]) == {1: 0}
    assert (await short.decide(request(tenant, cands, strategy="priority"))).agent_id == 1


async def test_replay_answers_the_same_and_moves_nothing(
    balancer: Balancer, redis_client: aioredis.Redis, tenant: int
) -> None:
    cands = members((1, 1, 2), (2, 1, 2))
    req = request(tenant, cands, strategy="round_robin")
    first = await balancer.decide(req)
    before = await balancer.group_stats(tenant, 1, [1, 2], 24)
    # the same request on another replica, and twice in one coalesced batch
    replica = Balancer(redis_client, prefix=os.environ["VLB_REDIS_PREFIX"])
    again = [await replica.decide(req), *(await asyncio.gather(balancer.decide(req), balancer.decide(req)))]
    assert all(r.replay for r in again)
    assert {(r.index, r.agent_id, r.attempt, r.cxml) for r in again} == {
        (first.index, first.agent_id, first.attempt, first.cxml)
    }
    assert await balancer.group_stats(tenant, 1, [1, 2], 24) == before
    assert balancer.replays_total == 2
    assert replica.replays_total == 1
    # the round-robin pointer did not move either
    assert (await balancer.decide(request(tenant, cands, strategy="round_robin"))).agent_id == 2


async def test_same_session_twice_in_one_batch_is_decided_once(balancer: Balancer, tenant: int) -> None:
    req = request(tenant, members((1, 1, 0), (2, 1, 0)), strategy="round_robin")
    a, b = await asyncio.gather(balancer.decide(req), balancer.decide(req))
    assert (a.replay, b.replay) == (False, True)
    assert (a.agent_id, a.cxml) == (b.agent_id, b.cxml)
    assert await balancer.active_calls(tenant, [1, 2]) == {1: 1, 2: 0}


async def test_burst_is_two_script_calls(redis_client: aioredis.Redis, tenant: int) -> None:
    """The first decision goes at once, alone; the 19 that arrive while it is out go together."""
    balancer = Balancer(redis_client, prefix=os.environ["VLB_REDIS_PREFIX"])
    cands = members((1, 1, 0), (2, 1, 0))
    chosen = await choose_agents(
        balancer, [request(tenant, cands, strategy="round_robin") for _ in range(20)]
    )
    assert balancer.script_calls_total == 2
    assert chosen == [1, 2] * 10  # in arrival order
    uncoalesced = Balancer(redis_client, prefix=os.environ["VLB_REDIS_PREFIX"], coalesce=False)
    await choose_agents(uncoalesced, [request(tenant, cands, strategy="round_robin") for _ in range(20)])
    assert uncoalesced.script_calls_total == 20


async def test_two_calls_in_flight_keep_arrival_order(redis_client: aioredis.Redis, tenant: int) -> None:
    """With two calls allowed out, the first two decisions go at once, each alone; the 18 that arrive
    meanwhile go together when the first comes back; slots and pointer move as if decided one by one."""
    balancer = Balancer(redis_client, prefix=os.environ["VLB_REDIS_PREFIX"], in_flight=2)
    cands = members((1, 1, 0), (2, 1, 0), (3, 1, 0))
    requests = [request(tenant, cands, strategy="round_robin") for _ in range(20)]
    chosen = await choose_agents(balancer, requests)
    assert balancer.script_calls_total == 3
    assert chosen == ([1, 2, 3] * 7)[:20]
    assert await balancer.active_calls(tenant, [1, 2, 3]) == {1: 7, 2: 7, 3: 6}
    # Replays of all of them, again two at once then the rest: the same answers, nothing moves.
    again = await asyncio.gather(*(balancer.decide(r) for r in requests))
    assert [r.agent_id for r in again] == chosen
    assert all(r.replay for r in again)
    assert await balancer.active_calls(tenant, [1, 2, 3]) == {1: 7, 2: 7, 3: 6}
    assert not balancer._in_flight
    assert not balancer._queues


async def test_reset_group_clears_window_and_pointer_not_slots(
    balancer: Balancer, redis_client: aioredis.Redis, tenant: int
) -> None:
    """The control plane's reset-strategy, seen by the engine's script."""
    cands = members((1, 1, 0), (2, 1, 0))
    await choose_agents(balancer, [request(tenant, cands, strategy="round_robin") for _ in range(3)])
    # agent 3 shares the tenant's buckets but is not in the group being reset
    await balancer.decide(request(tenant, members((3, 1, 0)), strategy="priority"))
    before = await balancer.group_stats(tenant, 1, [1, 2, 3], 24)
    assert (before[1].window_calls, before[2].window_calls, before[3].window_calls) == (2, 1, 1)
    await reset_group_counters(redis_client, TenantKeys(os.environ["VLB_REDIS_PREFIX"], tenant), 1, [1, 2])
    after = await balancer.group_stats(tenant, 1, [1, 2, 3], 24)
    assert (after[1].window_calls, after[2].window_calls, after[3].window_calls) == (0, 0, 1)
    assert (after[1].active_calls, after[2].active_calls) == (2, 1)
    assert after[1].last_chosen_ms is not None
    assert (await balancer.decide(request(tenant, cands, strategy="round_robin"))).agent_id == 1


async def test_reset_also_clears_the_scripts_cached_window_sums(
    balancer: Balancer, redis_client: aioredis.Redis, tenant: int
) -> None:
    keys = TenantKeys(os.environ["VLB_REDIS_PREFIX"], tenant)
    seconds, _ = await redis_client.time()
    minute = seconds // 60
    await redis_client.hset(keys.window_minute(minute - 1), "5", 7)
    await redis_client.hset(keys.window_hour((minute - 1) // 60), "5", 7)
    decided = await balancer.decide(
        request(tenant, members((5, 1, 0)), strategy="load_balanced", window_hours=1)
    )
    assert decided.agent_id == 5
    assert (await balancer.group_stats(tenant, 1, [5], 1))[5].window_calls == 8
    assert await redis_client.hexists(keys.window_base(1), "5")  # the completed minutes, cached
    await reset_group_counters(redis_client, keys, 1, [5])
    assert (await balancer.group_stats(tenant, 1, [5], 1))[5].window_calls == 0


async def test_stats_for_a_never_chosen_agent(balancer: Balancer, tenant: int) -> None:
    stats = await balancer.group_stats(tenant, 1, [42], 168)
    assert (stats[42].window_calls, stats[42].active_calls, stats[42].last_chosen_ms) == (0, 0, None)


async def test_bad_stage_is_refused_before_redis(balancer: Balancer, tenant: int) -> None:
    with pytest.raises(ValueError):
        await balancer.decide(request(tenant, members((1, 1, 0)), strategy="priority", stage="dial-x"))
