"""Issue 14 part 2: the system on a 3-node NATS cluster with JetStream, the snapshot bucket and the
events stream replicated three times (``VLB_NATS_REPLICAS=3``), every plane given all three URLs.

Snapshot propagation and the event pipeline work on it; the node the engine is connected to is killed
(SIGKILL) under a steady call load while a snapshot update is published: no call event is lost (one
record and one CDR per call, each event stored once), the engine reconnects to another node and runs
the update. The counts are printed (``pytest -s``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from loadtests.natscluster import NatsCluster
from routing_engine.app import EngineApp
from shared.settings import nats_servers
from tests.e2e.test_lifecycle_faults import (
    CATCH_UP_S,
    Rig,
    _quiet,
    _true,
    caught_up,
    counts,
    one_call,
    start_control_plane,
    tokens,
    wait_until,
)
from tests.routing_engine.harness import (
    demo_tenant,
    engine_settings,
    new_session,
    open_bucket,
    put_snapshot,
    running_engine,
)

pytestmark = pytest.mark.slow


def test_comma_separated_urls_are_a_server_list() -> None:
    assert nats_servers("nats://a:1, nats://b:2,,nats://c:3 ") == ["nats://a:1", "nats://b:2", "nats://c:3"]
    assert nats_servers("nats://127.0.0.1:4222") == ["nats://127.0.0.1:4222"]


def connected_node(cluster: NatsCluster, engine: EngineApp) -> int:
    assert engine.nc is not None
    url = engine.nc.connected_url
    assert url is not None
    return cluster.client_ports.index(int(url.port or 0))


async def test_snapshots_and_events_on_a_replicated_cluster_survive_a_node(
    schema: str, nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    rate, duration_s, kill_at_s, update_at_s = 30, 12.0, 3.0, 5.0
    calls = int(rate * duration_s)
    cluster = nats_cluster
    db = create_async_engine(schema, pool_size=2)
    config = demo_tenant(tenant_id=910_000 + secrets.randbelow(80_000))
    nc: NATS | None = None
    cp = None
    async with db.begin() as conn:  # config_version 0: the publisher leaves our snapshots alone
        await conn.execute(
            text(
                "INSERT INTO tenants (id, name, settings, config_version, created_at, updated_at) "
                "VALUES (:id, :name, '{}'::jsonb, 0, now(), now())"
            ),
            {"id": config.tenant_id, "name": f"cluster {config.tenant_id}"},
        )
    try:
        nc = await nats.connect(
            cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=_quiet
        )
        settings = engine_settings(nats_url=cluster.url, nats_replicas="3")
        async with running_engine(settings, wait_loaded=False) as engine:
            await wait_until(lambda: _true(engine.store.loaded), 20.0, "engine loaded the bucket")
            kv = await open_bucket(nc, os.environ["VLB_CONFIG_BUCKET"])
            await put_snapshot(kv, config.snapshot)
            assert await engine.store.wait_for(config.tenant_id, 1, within_s=10.0)
            js = nc.jetstream(timeout=5)
            bucket = await js.stream_info(f"KV_{os.environ['VLB_CONFIG_BUCKET']}")
            assert bucket.config.num_replicas == 3, "the engine created the bucket without replicas"
            cp_env = {**os.environ, "VLB_NATS_URL": cluster.url, "VLB_NATS_REPLICAS": "3"}
            cp_env |= {"VLB_EVENTS_ACK_WAIT_S": "2", "VLB_LOG_LEVEL": "warning"}
            rig = Rig(nats=None, nc=nc, engine=engine, tenant=config, db=db, cp_env=cp_env, logs=tmp_path)  # type: ignore[arg-type]
            cp = await start_control_plane(rig, "cp-cluster")
            sessions = [new_session() for _ in range(calls)]
            victim = connected_node(cluster, engine)
            marks: dict[str, float] = {}
            update = config.bump()

            async def chaos(t0: float) -> None:
                await asyncio.sleep(max(0.0, t0 + kill_at_s - time.monotonic()))
                await asyncio.to_thread(cluster.kill, victim)
                marks["killed"] = time.monotonic()
                await asyncio.sleep(max(0.0, t0 + update_at_s - time.monotonic()))
                # The snapshot update goes in while the engine's node is down (the test's client is
                # on another node or moves to one).
                for _ in range(50):
                    try:
                        await put_snapshot(kv, update.snapshot)
                        break
                    except Exception:
                        await asyncio.sleep(0.2)
                marks["updated"] = time.monotonic()

            answered = 0
            async with contextlib.AsyncExitStack() as stack:
                from tests.routing_engine.harness import asgi_client

                client = await stack.enter_async_context(asgi_client(engine))
                t0 = time.monotonic()
                chaos_task = asyncio.create_task(chaos(t0))
                tasks = []
                for i, session in enumerate(sessions):
                    await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                    tasks.append(asyncio.create_task(one_call(client, config, session)))
                latencies = await asyncio.gather(*tasks)
                answered = len(latencies)
                await chaos_task
            assert await engine.store.wait_for(config.tenant_id, update.snapshot.version, within_s=20.0), (
                "the snapshot update made while a node was down never reached the engine"
            )
            await wait_until(lambda: _true(engine.events.pending == 0), 30.0, "engine buffer drained")
            now_on = connected_node(cluster, engine)
            assert now_on != victim, "the engine is not connected to a live node"
            await wait_until(lambda: caught_up(rig, calls), CATCH_UP_S, "consumer caught up")
            c = await counts(db, config.tenant_id)
            records = await tokens(db, "call_records", config.tenant_id)
            cdrs = await tokens(db, "cdrs", config.tenant_id)
            lost = len(set(sessions) - set(records))
            events_stream = await js.stream_info(os.environ["VLB_EVENTS_STREAM"])
            print(
                f"\nNATS node {victim} (the engine's) killed under load: sent {calls}, answered {answered}, "
                f"recorded {len(records)} ({len(cdrs)} CDRs), lost {lost}; events {c.events} stored, "
                f"{c.distinct_events} distinct; engine published {engine.events.published}, dropped "
                f"{engine.events.dropped}; engine moved to node {now_on}; snapshot v{update.snapshot.version} "
                f"applied; events stream replicas {events_stream.config.num_replicas}"
            )
            assert sorted(records) == sorted(sessions), "a call without its record, or one recorded twice"
            assert sorted(cdrs) == sorted(sessions), "a call without its CDR, or one stored twice"
            assert c.events == c.distinct_events == 3 * calls
            assert engine.events.dropped == 0
            assert events_stream.config.num_replicas == 3
    finally:
        if cp is not None:
            cp.stop(grace_s=5.0)
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        with contextlib.suppress(Exception):
            async with db.begin() as conn:
                await conn.execute(text("DELETE FROM tenants WHERE id = :id"), {"id": config.tenant_id})
        await db.dispose()


def test_launcher_probe_takes_the_cluster_urls(nats_cluster: NatsCluster) -> None:
    """`vlb run` / `vlb services` probe VLB_NATS_URL before using it: a cluster's list answers while
    one of its servers does."""
    from launcher.probes import nats_answers

    assert nats_answers(nats_cluster.url)
    assert nats_answers("nats://127.0.0.1:1," + nats_cluster.urls[1])
    nats_cluster.kill(0)
    # If the killed node led JetStream's meta group, the others elect a new leader first (seconds).
    deadline = time.monotonic() + 20
    while not nats_answers(nats_cluster.url) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert nats_answers(nats_cluster.url)
    assert not nats_answers("nats://127.0.0.1:1,nats://127.0.0.1:2")
