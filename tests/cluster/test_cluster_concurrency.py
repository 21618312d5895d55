"""Two engine processes racing for the last slots of one tenant on each master of a Redis Cluster,
through the engine's own clients (built from VLB_REDIS_CLUSTER_NODES as the engine builds them): the
script keeps capacity exact on every master, nothing is degraded, repeats replay."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from asyncio.subprocess import PIPE

from routing_engine.balancer import Balancer
from routing_engine.script_client import ClusterScriptClient
from shared.redis_client import parse_nodes, redis_from_settings
from shared.redis_keys import TenantKeys
from shared.settings import CommonSettings
from tests.cluster.cluster import RedisClusterUnderTest
from tests.routing_engine.test_balancer_concurrency import AGENTS, CAPACITY, PER_PROCESS, REPO

WORKER = """
import asyncio, json, sys, time
import msgspec
from routing_engine.balancer import Balancer
from routing_engine.script_client import script_client_from_settings
from routing_engine.settings import get_engine_settings
from shared.redis_client import cluster_nodes, redis_from_settings
from tests.routing_engine.test_balancer_concurrency import PER_PROCESS, make_request

async def main() -> None:
    name, start_at, tenants = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
    settings = get_engine_settings()
    client = redis_from_settings(settings)
    scripts = script_client_from_settings(settings.redis_url, cluster_nodes(settings), connect_timeout_s=0.5)
    prefix = settings.redis_prefix
    balancers = [
        Balancer(client, scripts=scripts, prefix=prefix, max_batch=4),
        Balancer(client, scripts=scripts, prefix=prefix, max_batch=4, in_flight=3),
        Balancer(client, scripts=scripts, prefix=prefix, coalesce=False),
    ]
    await asyncio.gather(*(scripts.call("PING") for _ in range(3)))  # read the slot map now
    await asyncio.sleep(max(0.0, start_at - time.time()))
    requests = [
        msgspec.structs.replace(make_request(f"{name}{t}-{i}"), tenant_id=t)
        for i in range(PER_PROCESS) for t in tenants
    ]
    results = await asyncio.gather(*(balancers[i % 3].decide(r) for i, r in enumerate(requests)))
    print(json.dumps([[r.tenant_id, r.session, res.index, res.replay, res.degraded] for r, res in zip(requests, results)]))
    await scripts.aclose()
    await client.aclose()

asyncio.run(main())
"""


async def test_two_processes_never_exceed_capacity_on_any_master(
    redis_cluster: RedisClusterUnderTest,
) -> None:
    tenants = [owned[0] for owned in redis_cluster.tenants_per_master(start=80_000).values()]
    env = {**os.environ, "VLB_REDIS_CLUSTER_NODES": redis_cluster.seeds, "PYTHONPATH": str(REPO)}
    start_at = f"{time.time() + 2.0:.3f}"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            name,
            start_at,
            json.dumps(tenants),
            cwd=REPO,
            env=env,
            stdout=PIPE,
            stderr=PIPE,
        )
        for name in "ab"
    ]
    async with asyncio.timeout(60):
        outputs = await asyncio.gather(*(p.communicate() for p in procs))
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    rows = [row for out, _err in outputs for row in json.loads(out.splitlines()[-1])]  # after any log line
    assert len(rows) == 2 * PER_PROCESS * len(tenants)
    assert not any(replay or degraded for _t, _s, _i, replay, degraded in rows)

    client = redis_from_settings(CommonSettings(redis_cluster_nodes=redis_cluster.seeds))
    scripts = ClusterScriptClient(parse_nodes(redis_cluster.seeds))
    prefix = os.environ["VLB_REDIS_PREFIX"]
    try:
        balancer = Balancer(client, scripts=scripts, prefix=prefix)
        for tenant in tenants:
            routed = {s for t, s, index, _r, _d in rows if t == tenant and index >= 0}
            assert len(routed) == len(AGENTS) * CAPACITY
            keys = TenantKeys(prefix, tenant)
            holders: set[str] = set()
            for agent in AGENTS:
                members = {m.decode() for m in await client.zrange(keys.active(agent), 0, -1)}
                assert len(members) == CAPACITY
                holders |= members
            assert holders == routed
            assert await balancer.active_calls(tenant, AGENTS) == dict.fromkeys(AGENTS, CAPACITY)
        assert balancer.degraded_total == 0
    finally:
        for tenant in tenants:
            async for key in client.scan_iter(match=f"{TenantKeys(prefix, tenant).base}*"):
                await client.unlink(key)
        await scripts.aclose()
        await client.aclose()
