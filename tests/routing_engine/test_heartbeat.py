"""Engine heartbeats on core NATS: they stop with the app, never hold up serving while NATS is gone,
and resume on their own when it is back (the basic shape is checked in test_ingest.py)."""

from __future__ import annotations

import asyncio
import time
import uuid

import nats
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from shared.events import HEARTBEAT_DECODER, EngineHeartbeat
from tests.routing_engine.harness import (
    PrivateServer,
    asgi_client,
    demo_tenant,
    engine_settings,
    new_session,
    open_bucket,
    publish,
    running_engine,
)
from tests.routing_engine.test_ingest import update_url


async def next_beat(sub: Subscription, within_s: float) -> EngineHeartbeat:
    return HEARTBEAT_DECODER.decode((await sub.next_msg(timeout=within_s)).data)


async def test_heartbeats_pause_without_nats_and_resume_after(private_nats: PrivateServer) -> None:
    subject = f"vlbt{uuid.uuid4().hex[:8]}.engines.heartbeat"
    settings = engine_settings(
        nats_url=private_nats.url, heartbeat_subject=subject, heartbeat_interval_s="0.05"
    )
    admin: NATS = await nats.connect(private_nats.url)
    try:
        bucket = await open_bucket(admin, settings.config_bucket)
        async with running_engine(settings) as app, asgi_client(app) as c:
            config = demo_tenant()
            await publish(bucket, app, config)
            sub = await admin.subscribe(subject)
            first = await next_beat(sub, 2)
            assert first.engine_id == app.engine_id
            await admin.close()

            private_nats.stop()
            sent = app.heartbeat.sent
            # Serving does not wait on the missing heartbeat: both answers come back at once.
            started = time.perf_counter()
            assert (await c.get("/health")).status_code == 200
            update = {"token": new_session(), "status": "ringing", "eventId": "hb-1"}
            assert (await c.post(update_url(config), json=update, headers=config.auth)).status_code == 204
            assert time.perf_counter() - started < 0.5
            await asyncio.sleep(0.3)
            assert app.heartbeat.sent - sent <= 1  # at most one written just as the server went away

            private_nats.start()
            admin = await nats.connect(private_nats.url)
            sub = await admin.subscribe(subject)
            beat = await next_beat(sub, 10)
            assert beat.engine_id == app.engine_id
            assert beat.started_at == first.started_at
            assert beat.sent_at > first.sent_at
            assert beat.versions == {config.tenant_id: config.snapshot.version}
    finally:
        if admin.is_connected:
            await admin.close()
