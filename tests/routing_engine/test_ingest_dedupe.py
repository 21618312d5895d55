"""The session-update/CDR dedupe mark outlives a day whatever the idempotency TTL is set to."""

from __future__ import annotations

from nats.js.kv import KeyValue

from tests.routing_engine.harness import (
    asgi_client,
    demo_tenant,
    engine_settings,
    new_session,
    publish,
    running_engine,
)
from tests.routing_engine.test_ingest import cdr_body, cdr_url


async def test_dedupe_mark_is_kept_a_day_even_with_a_short_idempotency_ttl(kv: KeyValue) -> None:
    async with running_engine(engine_settings(idempotency_ttl_s="5")) as app, asgi_client(app) as c:
        config = demo_tenant()
        await publish(kv, app, config)
        session = new_session()
        response = await c.post(cdr_url(config), json=cdr_body(config, session), headers=config.auth)
        assert response.status_code == 204
        ttl = await app.redis.ttl(app.balancer.keys(config.tenant_id).seen(f"{session}:cdr"))
        assert ttl >= 86400 - 5


async def test_without_redis_a_delivery_is_taken_as_new_and_still_recorded() -> None:
    """Redis unreachable (nothing listens on its port): the session update is not lost or refused; it
    is recorded as new (release is idempotent; the consumer's unique event id drops a repeat)."""
    import redis.asyncio as aioredis

    from routing_engine.balancer import Balancer
    from routing_engine.events import EventPublisher
    from routing_engine.ingest import Ingestor, SessionUpdate, parse_session_update
    from routing_engine.script_client import ScriptClient
    from tests.routing_engine.harness import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    scripts = ScriptClient(url, connect_timeout_s=0.2)
    client = aioredis.Redis.from_url(url, socket_connect_timeout=0.2)
    events = EventPublisher(stream="unused", subject_prefix="unused")
    ingestor = Ingestor(
        client,
        Balancer(client, prefix="nowhere", scripts=scripts, timeout_s=0.3),
        events,
        dedupe_ttl_s=60,
        engine_id="test",
        scripts=scripts,
    )
    body = b'{"token": "tok-1", "status": "answer", "eventId": "e-1", "domain": "d.example"}'
    update = parse_session_update("application/json", body)
    assert isinstance(update, SessionUpdate)
    try:
        assert await ingestor.apply(7, "d.example", update, 1) == "recorded"
        assert await ingestor.apply(7, "d.example", update, 1) == "recorded"  # no mark: told apart later
        assert events.pending == 2
    finally:
        await scripts.aclose()
        await client.aclose()
