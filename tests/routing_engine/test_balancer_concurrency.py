"""Two engine processes racing for the last slots of one group: the script keeps capacity exact."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from asyncio.subprocess import PIPE
from pathlib import Path

import redis.asyncio as aioredis

from routing_engine.balancer import Balancer, Candidate, DecideRequest
from shared.redis_keys import TenantKeys

REDIS_URL = os.environ.get("VLB_REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parents[2]
TENANT = 777
AGENTS = (1, 2, 3, 4, 5)
CAPACITY = 10
PER_PROCESS = 100

# One engine process: waits for the common start time, fires its decisions concurrently, prints them.
WORKER = """
import asyncio, json, os, sys, time
import redis.asyncio as aioredis
from routing_engine.balancer import Balancer
from tests.routing_engine.test_balancer_concurrency import PER_PROCESS, make_request

async def main() -> None:
    name, start_at = sys.argv[1], float(sys.argv[2])
    client = aioredis.Redis.from_url(os.environ["VLB_REDIS_URL"])
    prefix = os.environ["VLB_REDIS_PREFIX"]
    # decisions coalesced (small batches, so they interleave; one or three calls out at a time) or one
    # script call each
    balancers = [
        Balancer(client, prefix=prefix, max_batch=4),
        Balancer(client, prefix=prefix, max_batch=4, in_flight=3),
        Balancer(client, prefix=prefix, coalesce=False),
    ]
    await asyncio.gather(*(client.ping() for _ in range(PER_PROCESS)))  # open the pool's connections now
    await asyncio.sleep(max(0.0, start_at - time.time()))
    results = await asyncio.gather(
        *(balancers[i % 3].decide(make_request(f"{name}{i}")) for i in range(PER_PROCESS))
    )
    print(json.dumps([[r.index, r.agent_id, r.cxml, r.replay, r.degraded] for r in results]))
    await client.aclose()

asyncio.run(main())
"""


def make_request(session: str) -> DecideRequest:
    cands = tuple(Candidate(agent_id=a, priority=1, capacity=CAPACITY) for a in AGENTS)
    return DecideRequest(
        tenant_id=TENANT,
        session=session.rjust(32, "0"),
        stage="app",
        strategy="priority",
        group_id=9,
        window_hours=24,
        max_attempts=3,
        fallback_enabled=True,
        candidates=cands,
        answers=tuple((f"<Dial>{a}</Dial>", "") for a in AGENTS),
        no_agent="<Hangup/>",
    )


async def test_two_processes_never_exceed_capacity() -> None:
    env = {**os.environ, "VLB_REDIS_URL": REDIS_URL, "PYTHONPATH": str(REPO)}
    start_at = f"{time.time() + 2.0:.3f}"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, name, start_at, cwd=REPO, env=env, stdout=PIPE, stderr=PIPE
        )
        for name in "ab"
    ]
    async with asyncio.timeout(60):
        outputs = await asyncio.gather(*(p.communicate() for p in procs))
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    decided = {
        f"{name}{i}": row
        for name, (out, _err) in zip("ab", outputs, strict=True)
        for i, row in enumerate(json.loads(out))
    }
    routed = [s for s, (index, *_rest) in decided.items() if index >= 0]
    assert len(routed) == len(AGENTS) * CAPACITY
    assert sum(1 for row in decided.values() if row[0] == -1) == 2 * PER_PROCESS - len(routed)
    assert not any(row[3] or row[4] for row in decided.values())  # no replays, no degraded answers

    client = aioredis.Redis.from_url(REDIS_URL)
    keys = TenantKeys(os.environ["VLB_REDIS_PREFIX"], TENANT)
    try:
        holders: dict[int, set[str]] = {}
        for agent in AGENTS:
            members = await client.zrange(keys.active(agent), 0, -1)
            holders[agent] = {m.decode() for m in members}
            assert len(holders[agent]) == CAPACITY
        assert set().union(*holders.values()) == {make_request(s).session for s in routed}

        # Cloudonix repeats every request: the same answers, replayed, nothing moves.
        balancer = Balancer(client, prefix=os.environ["VLB_REDIS_PREFIX"])
        again = await asyncio.gather(*(balancer.decide(make_request(s)) for s in decided))
        for session, result in zip(decided, again, strict=True):
            index, agent_id, cxml, _replay, _degraded = decided[session]
            assert (result.index, result.agent_id, result.cxml, result.replay) == (
                index,
                agent_id,
                cxml,
                True,
            )
        assert await balancer.active_calls(TENANT, AGENTS) == dict.fromkeys(AGENTS, CAPACITY)
    finally:
        async for key in client.scan_iter(match=f"{keys.base}*", count=1000):
            await client.unlink(key)
        await client.aclose()
