"""Degraded modes on private Redis/NATS servers this test starts and stops: Redis down → calls still
answered from the local view and /ready says degraded; NATS down → last snapshot keeps serving and
events are buffered, then delivered when NATS is back; NATS down at start → not ready."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import httpx
import msgspec
import nats

from routing_engine.app import EngineApp
from tests.routing_engine.harness import (
    PrivateServer,
    TenantConfig,
    asgi_client,
    demo_tenant,
    engine_settings,
    load_fixture,
    local_client,
    new_session,
    open_bucket,
    publish,
    put_snapshot,
    running_engine,
)

INBOUND = load_fixture("application-inbound.json")


async def call(client: httpx.AsyncClient, config: TenantConfig) -> ET.Element:
    body = dict(INBOUND, Session=new_session(), Domain=config.domain)
    r = await client.post(f"/api/voice/application/{config.domain}", json=body, headers=config.auth)
    assert r.status_code == 200
    return ET.fromstring(r.content)


async def test_redis_down_answers_degraded_and_recovers(
    private_redis: PrivateServer, kv: object, engine: EngineApp
) -> None:
    settings = engine_settings(redis_url=private_redis.url)
    async with running_engine(settings) as app, asgi_client(app) as c:
        config = demo_tenant()
        await publish(kv, app, config)  # type: ignore[arg-type]
        assert (await call(c, config)).find("Dial") is not None
        private_redis.stop()
        root = await call(c, config)
        assert root.find("Dial/Service") is not None, "degraded mode must still dial an agent"
        ready = (await c.get("/ready")).json()
        assert ready["status"] == "degraded"
        assert ready["redis"] is False
        async with local_client(app) as local:
            assert "vlb_engine_degraded_decisions_total" in (await local.get("/metrics")).text
        private_redis.start()
        await asyncio.sleep(1.1)  # the balancer retries Redis after its pause
        assert (await call(c, config)).find("Dial") is not None
        assert (await c.get("/ready")).json()["status"] == "ready"


async def test_nats_lost_keeps_serving_and_buffers_events(private_nats: PrivateServer) -> None:
    settings = engine_settings(nats_url=private_nats.url)
    nc = await nats.connect(private_nats.url)
    try:
        bucket = await open_bucket(nc, settings.config_bucket)
        async with running_engine(settings) as app, asgi_client(app) as c:
            config = demo_tenant()
            await publish(bucket, app, config)
            await call(c, config)
            for _ in range(100):
                if app.events.pending == 0 and app.events.published:
                    break
                await asyncio.sleep(0.02)
            assert app.events.published >= 1
            await nc.close()
            private_nats.stop()
            for _ in range(5):
                assert (await call(c, config)).find("Dial") is not None
            assert app.events.pending >= 5
            assert (await c.get("/ready")).json()["nats"] is False
            private_nats.start()
            for _ in range(300):
                if app.events.pending == 0:
                    break
                await asyncio.sleep(0.05)
            assert app.events.pending == 0, "buffered events were not delivered after NATS came back"
            assert app.events.dropped == 0
            assert app.events.published >= 6
            # The snapshot watch resumes too: a new version put after the outage is applied.
            nc2 = await nats.connect(private_nats.url)
            try:
                await publish(await open_bucket(nc2, settings.config_bucket), app, config.bump())
            finally:
                await nc2.close()
    finally:
        if nc.is_connected:
            await nc.close()


async def test_nats_down_at_start_is_not_ready(private_nats: PrivateServer) -> None:
    """Not ready, and a webhook before the first load is a 503 with Retry-After (Cloudonix retries it),
    never a 404 "unknown domain" for a domain the bucket holds; one that arrives while the load
    happens waits for it and is routed."""
    config = demo_tenant()
    nc = await nats.connect(private_nats.url)
    try:
        await publish_only(nc, config)
    finally:
        await nc.close()
    private_nats.stop()
    settings = engine_settings(nats_url=private_nats.url, unloaded_request_wait_s="0.2")
    async with running_engine(settings, wait_loaded=False) as app, asgi_client(app) as c:
        r = await c.get("/ready")
        assert r.status_code == 503
        assert r.json()["status"] == "not_ready"
        assert (await c.get("/health")).status_code == 200
        body = dict(INBOUND, Session=new_session(), Domain=config.domain)
        url = f"/api/voice/application/{config.domain}"
        r = await c.post(url, json=body, headers=config.auth)
        assert (r.status_code, r.headers.get("retry-after")) == (503, "1"), r.text

        app.settings = msgspec.structs.replace(app.settings, unloaded_request_wait_s=10.0)
        waiting = asyncio.ensure_future(c.post(url, json=body, headers=config.auth))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        private_nats.start()
        r = await waiting
        assert r.status_code == 200
        assert ET.fromstring(r.content).find("Dial") is not None
        assert app.store.loaded
        assert (await c.get("/ready")).status_code == 200


async def publish_only(nc: nats.NATS, config: TenantConfig) -> None:
    kv = await open_bucket(nc, engine_settings().config_bucket)
    await put_snapshot(kv, config.snapshot)
