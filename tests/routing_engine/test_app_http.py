"""The engine's HTTP surface: auth, network and rate limits, bad input, service endpoints, and the
never-a-5xx rule on the voice-application paths."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import httpx
import redis.asyncio as aioredis
from nats.js.kv import KeyValue

from routing_engine.app import EngineApp
from routing_engine.decide import Decider, Decision
from routing_engine.rules import CompiledDomain, CompiledTenant
from routing_engine.webhooks import VoiceRequest
from shared.redis_keys import TenantKeys
from shared.snapshot import TenantSettings
from tests.conftest import REDIS_URL
from tests.routing_engine.harness import (
    TenantConfig,
    demo_tenant,
    load_fixture,
    local_client,
    new_session,
    publish,
)

INBOUND = load_fixture("application-inbound.json")


def body(config: TenantConfig, session: str | None = None, **changes: object) -> dict[str, object]:
    out = dict(INBOUND)
    out.update(Session=session or new_session(), Domain=config.domain)
    out.update(changes)
    return out


def url(config: TenantConfig) -> str:
    return f"/api/voice/application/{config.domain}"


async def test_unknown_domain_is_404(client: httpx.AsyncClient, tenant: TenantConfig) -> None:
    r = await client.post("/api/voice/application/nobody.example", json=body(tenant), headers=tenant.auth)
    assert r.status_code == 404
    assert r.text == "unknown domain\n"


async def test_missing_or_wrong_key_is_401(client: httpx.AsyncClient, tenant: TenantConfig) -> None:
    assert (await client.post(url(tenant), json=body(tenant))).status_code == 401
    r = await client.post(url(tenant), json=body(tenant), headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert "Traceback" not in r.text
    r = await client.post(url(tenant), json=body(tenant), headers={"X-CX-APIKey": tenant.key + "x"})
    assert r.status_code == 401


async def test_allowed_networks_refuse_other_sources(
    client: httpx.AsyncClient, kv: KeyValue, engine: EngineApp
) -> None:
    blocked = demo_tenant(allowed_networks=["10.0.0.0/8"])
    allowed = demo_tenant(allowed_networks=["10.0.0.0/8", "203.0.113.0/24"])
    await publish(kv, engine, blocked)
    await publish(kv, engine, allowed)
    assert (await client.post(url(blocked), json=body(blocked), headers=blocked.auth)).status_code == 403
    assert (await client.post(url(allowed), json=body(allowed), headers=allowed.auth)).status_code == 200


async def test_rate_ceiling_answers_429(client: httpx.AsyncClient, kv: KeyValue, engine: EngineApp) -> None:
    config = demo_tenant(max_rps=3)
    await publish(kv, engine, config)
    codes = [
        (await client.post(url(config), json=body(config), headers=config.auth)).status_code for _ in range(6)
    ]
    assert codes.count(200) == 3
    assert codes.count(429) == 3


async def test_broken_json_is_400_with_a_reason(client: httpx.AsyncClient, tenant: TenantConfig) -> None:
    r = await client.post(
        url(tenant), content=b'{"Session": ', headers={**tenant.auth, "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.text.startswith("malformed JSON body")
    assert r.text.count("\n") == 1


async def test_broken_json_with_known_session_answers_valid_cxml(
    client: httpx.AsyncClient, tenant: TenantConfig
) -> None:
    r = await client.post(
        url(tenant),
        content=b"{broken",
        headers={**tenant.auth, "Content-Type": "application/json", "X-CX-Session": new_session()},
    )
    assert r.status_code == 200
    root = ET.fromstring(r.content)
    assert [e.tag for e in root] == ["Say", "Hangup"]


async def test_wrong_types_are_400(client: httpx.AsyncClient, tenant: TenantConfig) -> None:
    r = await client.post(url(tenant), json={"Session": new_session(), "To": ["+1"]}, headers=tenant.auth)
    assert r.status_code == 400
    assert "To" in r.text


async def test_one_megabyte_body_is_413(client: httpx.AsyncClient, tenant: TenantConfig) -> None:
    big = b'{"Session": "' + b"a" * (1024 * 1024) + b'"}'
    r = await client.post(
        url(tenant), content=big, headers={**tenant.auth, "Content-Type": "application/json"}
    )
    assert r.status_code == 413


async def test_dial_status_without_status_is_answered_with_valid_cxml(
    client: httpx.AsyncClient, tenant: TenantConfig
) -> None:
    r = await client.post(url(tenant) + "/dial-status?attempt=1", json=body(tenant), headers=tenant.auth)
    assert r.status_code == 200
    ET.fromstring(r.content)


async def test_other_methods_and_paths(client: httpx.AsyncClient, tenant: TenantConfig) -> None:
    assert (await client.put(url(tenant), headers=tenant.auth)).status_code == 405
    assert (await client.get("/api/voice/application/")).status_code == 404
    assert (await client.get("/nope")).status_code == 404


async def test_health_ready_status_metrics(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig
) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    async with local_client(engine) as local:
        status = (await local.get("/status")).json()
        assert status["tenants"][str(tenant.tenant_id)]["version"] == 1
        await client.post(url(tenant), json=body(tenant), headers=tenant.auth)
        text = (await local.get("/metrics")).text
    assert 'vlb_engine_decision_seconds_bucket{le="5e-05"}' in text
    assert 'vlb_engine_requests_total{outcome="routed",path="application"}' in text
    assert f'vlb_engine_snapshot_version{{tenant="{tenant.tenant_id}"}} 1.0' in text
    assert "vlb_engine_events_dropped_total 0.0" in text


class _ExplodingDecider(Decider):
    """Fault injection: a decision that fails unexpectedly."""

    async def voice(
        self, tenant: CompiledTenant, domain: CompiledDomain, req: VoiceRequest, base_url: str
    ) -> Decision:
        raise RuntimeError("boom")


async def test_unexpected_error_answers_tenant_fallback(
    client: httpx.AsyncClient, kv: KeyValue, engine: EngineApp
) -> None:
    config = demo_tenant(
        settings=TenantSettings(fallback_cxml='<Response><Reject reason="busy"/></Response>')
    )
    await publish(kv, engine, config)
    saved = engine.decider
    engine.decider = _ExplodingDecider(engine.balancer)
    try:
        r = await client.post(url(config), json=body(config), headers=config.auth)
        plain = demo_tenant()
        await publish(kv, engine, plain)
        r2 = await client.post(url(plain), json=body(plain), headers=plain.auth)
    finally:
        engine.decider = saved
    assert r.status_code == 200
    assert ET.fromstring(r.content)[0].get("reason") == "busy"
    assert r2.status_code == 200
    assert [e.tag for e in ET.fromstring(r2.content)] == ["Say", "Hangup"]


async def test_agent_credentials_never_reach_redis_and_replays_still_carry_them(
    client: httpx.AsyncClient, kv: KeyValue, engine: EngineApp
) -> None:
    """The decision a repeated webhook is answered from lives in Redis for a day: it holds a mark where
    the agent's credentials go, and the engine fills them in from its snapshot, on the first answer
    and on the replay alike."""
    config = demo_tenant(capacities=(1, 0, 0))  # the first call takes agent 1; the next: synthflow
    await publish(kv, engine, config)
    first = await client.post(url(config), json=body(config), headers=config.auth)
    assert first.status_code == 200
    session = new_session()
    answers = [
        await client.post(url(config), json=body(config, session), headers=config.auth) for _ in range(2)
    ]
    for r in answers:
        service = ET.fromstring(r.content).find("Dial/Service")
        assert service is not None, r.text
        assert (service.get("username"), service.get("password")) == ("sf-user", 'p&ss"<w>')
    assert answers[0].text == answers[1].text
    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        held = await redis.hgetall(TenantKeys(engine.settings.redis_prefix, config.tenant_id).call(session))
    finally:
        await redis.aclose()
    stored = b"".join(held.values())
    assert b"d:app" in held
    assert b"<Service" in stored
    assert b"sf-user" not in stored
    assert b"p&amp;ss" not in stored
