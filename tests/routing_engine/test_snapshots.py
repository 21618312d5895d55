"""Snapshots through the real KV bucket: applied in order, corrupt/stale/too-new values ignored, key
delete removes routing, and propagation time."""

from __future__ import annotations

import time

import httpx
import msgspec
from nats.js.kv import KeyValue

from routing_engine.app import EngineApp
from shared.snapshot import SNAPSHOT_ENCODER, SNAPSHOT_SCHEMA_VERSION, snapshot_key
from tests.routing_engine.harness import (
    TenantConfig,
    demo_tenant,
    load_fixture,
    new_session,
    publish,
    put_snapshot,
)

INBOUND = load_fixture("application-inbound.json")


async def call(client: httpx.AsyncClient, config: TenantConfig) -> httpx.Response:
    body = dict(INBOUND, Session=new_session(), Domain=config.domain)
    return await client.post(f"/api/voice/application/{config.domain}", json=body, headers=config.auth)


async def test_snapshot_put_is_applied_and_routes(
    client: httpx.AsyncClient, kv: KeyValue, engine: EngineApp
) -> None:
    config = demo_tenant()
    assert (await call(client, config)).status_code == 404
    started = time.perf_counter()
    await publish(kv, engine, config)
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"snapshot propagation (put -> applied): {elapsed_ms:.1f} ms")
    assert elapsed_ms < 2000
    assert (await call(client, config)).status_code == 200


async def test_corrupt_stale_and_too_new_values_are_ignored(
    client: httpx.AsyncClient, kv: KeyValue, engine: EngineApp
) -> None:
    config = demo_tenant()
    config = config.bump()  # version 2
    await publish(kv, engine, config)
    key = snapshot_key(config.tenant_id)
    newer = config.bump()  # version 3: used as the probe that the watcher is still alive
    await put_snapshot(kv, b"\xc1not msgpack", config.tenant_id)
    stale = msgspec.structs.replace(config.snapshot, version=1, domains=[])
    await put_snapshot(kv, stale)
    too_new = msgspec.structs.replace(newer.snapshot, version=99, schema_version=SNAPSHOT_SCHEMA_VERSION + 1)
    await put_snapshot(kv, too_new)
    wrong_tenant = msgspec.structs.replace(newer.snapshot, tenant_id=config.tenant_id + 100_000, version=98)
    await kv.put(key, SNAPSHOT_ENCODER.encode(wrong_tenant))
    await publish(kv, engine, newer)
    assert engine.store.state.tenants[config.tenant_id].version == 3
    assert (await call(client, config)).status_code == 200


async def test_invalid_pattern_keeps_the_previous_version(kv: KeyValue, engine: EngineApp) -> None:
    config = demo_tenant()
    await publish(kv, engine, config)
    broken = config.bump(
        inbound_rules=[msgspec.structs.replace(config.snapshot.inbound_rules[0], pattern="re:(a+)+")]
    )
    await put_snapshot(kv, broken.snapshot)
    probe = TenantConfig(
        tenant_id=config.tenant_id,
        domain=config.domain,
        key=config.key,
        snapshot=msgspec.structs.replace(config.snapshot, version=3),
    )
    await publish(kv, engine, probe)  # version 3 applies; version 2 never did
    assert engine.store.state.tenants[config.tenant_id].version == 3


async def test_key_delete_removes_routing(client: httpx.AsyncClient, kv: KeyValue, engine: EngineApp) -> None:
    config = demo_tenant()
    await publish(kv, engine, config)
    assert (await call(client, config)).status_code == 200
    await kv.delete(snapshot_key(config.tenant_id))
    assert await engine.store.wait_for(config.tenant_id, None, within_s=5)
    assert (await call(client, config)).status_code == 404
    # A purge works too, after the tenant comes back.
    await publish(kv, engine, config.bump())
    await kv.purge(snapshot_key(config.tenant_id))
    assert await engine.store.wait_for(config.tenant_id, None, within_s=5)


async def test_updates_change_routing_without_restart(
    client: httpx.AsyncClient, kv: KeyValue, engine: EngineApp
) -> None:
    config = demo_tenant()
    await publish(kv, engine, config)
    first = await call(client, config)
    assert 'provider="vapi"' in first.text
    agents = [msgspec.structs.replace(a, enabled=a.provider != "vapi") for a in config.snapshot.agents]
    await publish(kv, engine, config.bump(agents=agents))
    second = await call(client, config)
    assert 'provider="synthflow"' in second.text


async def test_a_new_engine_loads_the_whole_bucket(kv: KeyValue, engine: EngineApp) -> None:
    from tests.routing_engine.harness import running_engine

    config = demo_tenant()
    await publish(kv, engine, config)
    async with running_engine() as fresh:
        assert fresh.store.state.tenants[config.tenant_id].version == config.snapshot.version
        assert set(fresh.store.state.tenants) == set(engine.store.state.tenants)
