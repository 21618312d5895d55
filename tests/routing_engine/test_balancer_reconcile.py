"""Degraded decisions merged back into Redis when it returns (issue 13 part 4), on a redis-server this
test starts, stops and restarts on its own port (never the shared one): calls admitted from the local
view hold their slots in Redis afterwards (no over-admission), calls that ended during the outage free
theirs (no leak), ending the adopted calls frees their slots exactly once, and merging twice moves
nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import msgspec
import pytest
import redis.asyncio as aioredis

from routing_engine.balancer import BUCKET_TTL, SCRIPT_SHA, Balancer, Candidate, DecideRequest
from routing_engine.script_client import ScriptClient
from tests.routing_engine.harness import PrivateServer

TENANT = 7
RETRY_S = 0.2


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    srv = PrivateServer("redis")
    srv.start()
    yield srv
    srv.cleanup()


@pytest.fixture
async def redis(server: PrivateServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    yield client
    await client.aclose()


def balancer_on(server: PrivateServer, redis: aioredis.Redis, *, lean: bool = True) -> Balancer:
    """A balancer as the engine has it: script calls through the lean client (or redis-py), quick
    retries."""
    return Balancer(
        redis,
        scripts=ScriptClient(server.url) if lean else None,
        prefix="rec",
        redis_retry_s=RETRY_S,
        timeout_s=0.3,
    )


def req(session: str, *, stage: str = "app", failed_agent: int | None = None) -> DecideRequest:
    cands = (Candidate(agent_id=1, priority=1, capacity=1), Candidate(agent_id=2, priority=2, capacity=1))
    return DecideRequest(
        tenant_id=TENANT,
        session=session,
        stage=stage,
        strategy="priority",
        group_id=3,
        window_hours=24,
        max_attempts=3,
        fallback_enabled=True,
        candidates=cands,
        answers=(("dial-1", ""), ("dial-2", "")),
        no_agent="none",
        failed_agent=failed_agent,
    )


async def active(redis: aioredis.Redis, agent: int) -> set[str]:
    members = await redis.zrange(f"rec:{{t{TENANT}}}:active:{agent}", 0, -1)
    return {m.decode() for m in members}


async def back_up(server: PrivateServer, redis: aioredis.Redis) -> None:
    """Redis started again on the same port, and the balancer's pause after its failure over."""
    server.start()
    await redis.connection_pool.disconnect()  # the test's own client: no stale connection
    await asyncio.sleep(RETRY_S + 0.05)


@pytest.mark.parametrize("lean", [True, False], ids=["script-client", "redis-py"])
async def test_degraded_admissions_hold_their_slots_after_redis_returns(
    server: PrivateServer, redis: aioredis.Redis, lean: bool
) -> None:
    balancer = balancer_on(server, redis, lean=lean)
    try:
        server.stop()  # restarted empty (no persistence): only the engine knows its calls now
        s1, s2, s3 = [await balancer.decide(req(s)) for s in ("s1", "s2", "s3")]
        assert [(r.agent_id, r.degraded) for r in (s1, s2, s3)] == [(1, True), (2, True), (None, True)]
        assert balancer.reconcile_pending == 3
        await back_up(server, redis)
        # Both agents are full: s1 and s2 are live. Without the merge Redis would hand out agent 1.
        s4 = await balancer.decide(req("s4"))
        assert (s4.agent_id, s4.degraded) == (None, False)
        assert balancer.reconcile_pending == 0
        assert (await active(redis, 1), await active(redis, 2)) == ({"s1"}, {"s2"})
        stats = await balancer.group_stats(TENANT, 3, [1, 2], 24)
        assert [stats[a].window_calls for a in (1, 2)] == [1, 1]  # degraded choices counted once
        # Ending an adopted call frees its slot in Redis, exactly once.
        assert await balancer.release(TENANT, "s1", reason="cdr", ended=True)
        assert not await balancer.release(TENANT, "s1", reason="cdr", ended=True)
        assert (await balancer.decide(req("s5"))).agent_id == 1
        assert (await balancer.decide(req("s6"))).agent_id is None
        for session in ("s2", "s5"):
            assert await balancer.release(TENANT, session, reason="cdr", ended=True)
        assert (await active(redis, 1), await active(redis, 2)) == (set(), set())  # no leak
        # An adopted call's dial-status moves on from the agent Redis now knows it holds.
        assert (await balancer.decide(req("s7"))).agent_id == 1
    finally:
        await balancer.aclose()


async def test_releases_during_the_outage_free_redis_slots(
    server: PrivateServer, redis: aioredis.Redis
) -> None:
    balancer = balancer_on(server, redis)
    try:
        a, b = await balancer.decide(req("a")), await balancer.decide(req("b"))
        assert (a.agent_id, b.agent_id, a.degraded) == (1, 2, False)
        await redis.save()  # this Redis comes back with its data: a and b still hold slots in it
        server.stop()
        # During the outage: a ends (its Redis slot must not leak), c is admitted from the local view
        # (which knows nothing of a and b), and b's agent fails, so b moves on locally.
        assert not await balancer.release(TENANT, "a", reason="cdr", ended=True)
        c = await balancer.decide(req("c"))
        assert (c.agent_id, c.degraded) == (1, True)
        b2 = await balancer.decide(req("b", stage="dial-1", failed_agent=2))
        assert (b2.agent_id, b2.degraded) == (2, True)  # the local view never saw b try agent 2
        await back_up(server, redis)
        d = await balancer.decide(req("d"))
        assert d.agent_id is None, "a full agent was handed another call"
        assert (await active(redis, 1), await active(redis, 2)) == ({"c"}, {"b"})
        # a is over in Redis too: a late dial-status takes no slot for it.
        late = await balancer.decide(req("a", stage="dial-1", failed_agent=1))
        assert late.agent_id is None
        for session in ("b", "c"):
            assert await balancer.release(TENANT, session, reason="cdr", ended=True)
        assert (await active(redis, 1), await active(redis, 2)) == (set(), set())
        assert (await balancer.decide(req("e"))).agent_id == 1
    finally:
        await balancer.aclose()


async def test_idle_engine_merges_in_the_background_and_a_repeat_moves_nothing(
    server: PrivateServer, redis: aioredis.Redis
) -> None:
    balancer = balancer_on(server, redis)
    try:
        server.stop()
        assert (await balancer.decide(req("s1"))).agent_id == 1
        rows = balancer.adopt_rows(TENANT, ["s1"])
        server.start()
        for _ in range(50):  # no call comes: the background task merges on its own
            if balancer.reconcile_pending == 0:
                break
            await asyncio.sleep(0.05)
        assert balancer.reconcile_pending == 0
        assert await active(redis, 1) == {"s1"}
        before = await balancer.group_stats(TENANT, 3, [1, 2], 24)
        # The same merge again (a reply lost on the way back, say): nothing counted or taken twice.
        base = f"rec:{{t{TENANT}}}:"
        again = await redis.evalsha(
            SCRIPT_SHA,
            1,
            base,
            "adopt",
            "86400",
            "14400000",
            BUCKET_TTL,
            msgspec.msgpack.encode(rows),
        )
        assert again == [0, 0, 0]
        assert await balancer.group_stats(TENANT, 3, [1, 2], 24) == before
        assert await active(redis, 1) == {"s1"}
    finally:
        await balancer.aclose()


async def test_a_call_ended_on_another_replica_is_not_adopted(
    server: PrivateServer, redis: aioredis.Redis
) -> None:
    one, other = balancer_on(server, redis), balancer_on(server, redis)
    try:
        server.stop()
        assert (await one.decide(req("x"))).agent_id == 1
        server.start()
        # The call's CDR reaches the other replica (Redis up there) before the first one merged.
        assert not await other.release(TENANT, "x", reason="cdr", ended=True)
        await asyncio.sleep(RETRY_S + 0.05)
        assert (await one.decide(req("y"))).agent_id == 1  # x is over: its slot is not taken back
        assert await active(redis, 1) == {"y"}
    finally:
        await one.aclose()
        await other.aclose()
