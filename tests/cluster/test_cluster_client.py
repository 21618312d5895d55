"""The engine's cluster script client against a real Redis Cluster: a tenant's calls go to the master
owning its slot on one pipelined connection per master, coalescing still batches, a slot moved under
it is followed (ASK while it migrates, MOVED after), and each master loads the script on its own
NOSCRIPT."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
import redis

from routing_engine.balancer import Balancer, Candidate, DecideRequest
from routing_engine.script_client import ClusterScriptClient, key_slot, script_client_from_settings
from shared.redis_client import RedisClient, parse_nodes, redis_from_settings
from shared.redis_keys import TenantKeys
from shared.settings import CommonSettings
from tests.cluster.cluster import RedisClusterUnderTest


def make_request(tenant: int, session: str) -> DecideRequest:
    return DecideRequest(
        tenant_id=tenant,
        session=session,
        stage="app",
        strategy="round_robin",
        group_id=1,
        window_hours=1,
        max_attempts=3,
        fallback_enabled=True,
        candidates=tuple(Candidate(agent_id=a, priority=1, capacity=0) for a in (1, 2, 3)),
        answers=tuple((f"<Dial>{a}</Dial>", "") for a in (1, 2, 3)),
        no_agent="<Hangup/>",
    )


@pytest.fixture
async def clients(
    redis_cluster: RedisClusterUnderTest,
) -> AsyncIterator[tuple[RedisClient, ClusterScriptClient]]:
    settings = CommonSettings(redis_cluster_nodes=redis_cluster.seeds)
    scripts = script_client_from_settings(
        settings.redis_url, parse_nodes(settings.redis_cluster_nodes), connect_timeout_s=0.5
    )
    assert isinstance(scripts, ClusterScriptClient)
    client = redis_from_settings(settings)
    yield client, scripts
    await scripts.aclose()
    await client.aclose()


async def test_each_tenant_goes_to_its_master_coalesced(
    redis_cluster: RedisClusterUnderTest, clients: tuple[RedisClient, ClusterScriptClient]
) -> None:
    client, scripts = clients
    balancer = Balancer(client, scripts=scripts, prefix=os.environ["VLB_REDIS_PREFIX"])
    tenants = [owned[0] for owned in redis_cluster.tenants_per_master(start=60_000).values()]
    assert len({redis_cluster.master_of(key_slot(f"{{t{t}}}")) for t in tenants}) == 3
    results = await asyncio.gather(
        *(balancer.decide(make_request(t, f"s{t}-{i:020d}")) for i in range(60) for t in tenants)
    )
    assert not any(r.degraded for r in results)
    # Round robin per tenant: each tenant's 60 calls spread 20/20/20, decided in its own master.
    for t in tenants:
        assert await balancer.active_calls(t, [1, 2, 3]) == {1: 20, 2: 20, 3: 20}
        owner = scripts.node_for_slot(key_slot(f"{{t{t}}}"))
        assert owner == ("127.0.0.1", redis_cluster.master_of(key_slot(f"{{t{t}}}")))
    # Coalesced: far fewer script calls than decisions; one connection per master.
    assert balancer.script_calls_total < len(results) // 3
    assert len(scripts._nodes) == 3


async def test_each_master_loads_the_script_on_its_own_noscript(
    redis_cluster: RedisClusterUnderTest, clients: tuple[RedisClient, ClusterScriptClient]
) -> None:
    client, scripts = clients
    for port in redis_cluster.masters():
        with redis_cluster.client(port) as node:
            node.script_flush()
    balancer = Balancer(client, scripts=scripts, prefix=os.environ["VLB_REDIS_PREFIX"])
    tenants = [owned[1] for owned in redis_cluster.tenants_per_master(start=60_000).values()]
    for t in tenants:
        assert not (await balancer.decide(make_request(t, f"ns{t:025d}"))).degraded
    # The first NOSCRIPT loaded it on every master: one reload for three masters.
    assert balancer.script_reloads_total == 1
    for port in redis_cluster.masters():
        with redis_cluster.client(port) as node:
            node.script_flush()
    # A master that lost its cache (a restart, a failover) reloads on its own NOSCRIPT.
    assert not (await balancer.decide(make_request(tenants[2], f"ns2{tenants[2]:025d}"))).degraded
    assert balancer.script_reloads_total == 2


async def test_a_migrating_slot_is_followed_ask_then_moved(
    redis_cluster: RedisClusterUnderTest, clients: tuple[RedisClient, ClusterScriptClient]
) -> None:
    _client, scripts = clients
    tenant = redis_cluster.tenants_per_master(start=70_000)[redis_cluster.masters()[0]][0]
    slot = key_slot(f"{{t{tenant}}}")
    keys = TenantKeys(os.environ["VLB_REDIS_PREFIX"], tenant)
    source = redis_cluster.master_of(slot)
    target = redis_cluster.masters()[1]
    assert await scripts.call("SET", keys.seen("old"), "1") == b"OK"
    src, dst = redis_cluster.client(source), redis_cluster.client(target)
    try:
        src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        # A key not on the source any more (a new one): ASK, answered by the target after ASKING.
        assert await scripts.call("SET", keys.seen("new"), "1") == b"OK"
        assert scripts.ask_total == 1
        assert scripts.node_for_slot(slot) == ("127.0.0.1", source)  # ASK moves nothing for good
        for key in src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target, key, 0, 5000)
        for port in redis_cluster.masters():
            with redis_cluster.client(port) as node:
                node.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        # Now owned by the target: MOVED, the map follows, the command answered there.
        assert await scripts.call("GET", keys.seen("old")) == b"1"
        assert scripts.moved_total == 1
        assert scripts.node_for_slot(slot) == ("127.0.0.1", target)
        assert await scripts.call("GET", keys.seen("new")) == b"1"
        assert scripts.moved_total == 1
    finally:
        src.close()
        dst.close()
    await asyncio.to_thread(redis_cluster.wait_healthy, 3)


def test_the_factory_picks_the_kind(redis_cluster: RedisClusterUnderTest) -> None:
    single = CommonSettings()
    assert (
        type(script_client_from_settings(single.redis_url, [], connect_timeout_s=0.5)).__name__
        == "ScriptClient"
    )
    assert script_client_from_settings("rediss://h:1/0", [("h", 1)], connect_timeout_s=0.5) is None
    assert parse_nodes(" a:1,[::1]:2 ,") == [("a", 1), ("::1", 2)]
    with pytest.raises(ValueError):
        parse_nodes("nohostport")
    sync = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.masters()[0])
    try:
        assert sync.ping()
    finally:
        sync.close()


async def test_the_engine_builds_its_clients_for_the_cluster(redis_cluster: RedisClusterUnderTest) -> None:
    from redis.asyncio.cluster import RedisCluster

    from routing_engine.app import EngineApp
    from routing_engine.settings import EngineSettings
    from shared.settings import load_settings

    settings = load_settings(
        EngineSettings, env={**os.environ, "VLB_REDIS_CLUSTER_NODES": redis_cluster.seeds}
    )
    app = EngineApp(settings)
    try:
        assert isinstance(app.redis, RedisCluster)
        assert isinstance(app.scripts, ClusterScriptClient)
        app.scripts.read_map_soon()  # what startup() does
        await asyncio.sleep(0.2)
        assert app.scripts.refreshes_total == 1
        assert await app.redis_ok()  # /ready's PING
        tenants = [owned[2] for owned in redis_cluster.tenants_per_master(start=60_000).values()]
        for t in tenants:
            assert not (await app.balancer.decide(make_request(t, f"eng{t:026d}"))).degraded
            # The ingest's dedupe SET NX, on the tenant's master.
            assert await app.ingestor.first_delivery(t, "tok:cdr") is True
            assert await app.ingestor.first_delivery(t, "tok:cdr") is False
        app._sync_balancer_metrics()
        from routing_engine import metrics

        body, _ctype = metrics.render_latest()
        assert b'vlb_engine_redis_cluster_events_total{kind="map_read"}' in body
    finally:
        await app.scripts.aclose()
        await app.redis.aclose()


async def test_a_dropped_connection_resends_only_what_is_safe(
    redis_cluster: RedisClusterUnderTest, clients: tuple[RedisClient, ClusterScriptClient]
) -> None:
    """The connection drops with two commands written: a blocking pop (it may have run: not resent,
    the caller hears of it) and a GET behind it (a read: resent, answered)."""
    _client, scripts = clients
    tenant = redis_cluster.tenants_per_master(start=75_000)[redis_cluster.masters()[1]][0]
    keys = TenantKeys(os.environ["VLB_REDIS_PREFIX"], tenant)
    assert await scripts.call("SET", keys.seen("kept"), "v") == b"OK"
    master = redis_cluster.master_of(key_slot(keys.base))
    pop = asyncio.ensure_future(scripts.call("BLPOP", keys.seen("never"), "5"))
    read = asyncio.ensure_future(scripts.call("GET", keys.seen("kept"), reply_within_s=1.0))
    await asyncio.sleep(0.2)
    with redis_cluster.client(master) as admin:
        assert admin.execute_command("CLIENT KILL TYPE normal SKIPME yes") >= 1
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(pop, 2)
    assert await asyncio.wait_for(read, 2) == b"v"
    assert scripts.retries_total >= 1
