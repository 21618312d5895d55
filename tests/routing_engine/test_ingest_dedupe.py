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
