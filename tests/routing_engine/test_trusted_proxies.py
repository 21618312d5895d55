"""X-Forwarded-For on the engine is believed only from the proxy networks in VLB_TRUSTED_PROXIES
(shared/client_address.py): the webhook allowlist sees the peer unless a listed proxy forwarded the
request, a spoofed header from anyone else is ignored, a malformed chain is refused cleanly, and the
X-Forwarded-Proto/-Host of the action URLs follow the same trust. Through ASGI in-process and, once,
through granian's RSGI the way production runs it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import httpx
import pytest
from nats.js.kv import KeyValue

from routing_engine.app import EngineApp
from tests.routing_engine.harness import (
    TenantConfig,
    demo_tenant,
    engine_settings,
    granian_engine,
    load_fixture,
    new_session,
    publish,
    put_snapshot,
    running_engine,
)

INBOUND = load_fixture("application-inbound.json")
ALLOWED = "198.51.100.0/24"
PROXY = "10.0.0.5"  # inside the trusted 10.0.0.0/8
STRANGER = "203.0.113.7"


def _client(app: EngineApp, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://engine.test")


async def _post(
    app: EngineApp, config: TenantConfig, peer: str, xff: str | None, **headers: str
) -> httpx.Response:
    sent = {**config.auth, **headers}
    if xff is not None:
        sent["X-Forwarded-For"] = xff
    async with _client(app, peer) as c:
        return await c.post(
            f"/api/voice/application/{config.domain}",
            json=dict(INBOUND, Session=new_session(), Domain=config.domain),
            headers=sent,
        )


@pytest.fixture
async def proxied_engine(kv: KeyValue) -> AsyncIterator[EngineApp]:
    settings = engine_settings(trusted_proxies="10.0.0.0/8, 2001:db8:ff::/48", engine_public_url="")
    async with running_engine(settings) as app:
        yield app


@pytest.mark.parametrize(
    ("peer", "xff", "status"),
    [
        (STRANGER, "198.51.100.1", 403),  # spoofed from a peer we do not trust: ignored
        (STRANGER, None, 403),
        ("198.51.100.9", "203.0.113.1", 200),  # an allowed peer is itself the client, whatever it says
        (PROXY, "198.51.100.1", 200),  # the trusted proxy's entry
        (PROXY, "198.51.100.1, 203.0.113.9", 403),  # the client is the right-most non-proxy hop
        (PROXY, "203.0.113.9, 198.51.100.1", 200),  # the client's own spoofed entry means nothing
        (PROXY, "198.51.100.1, 10.9.9.9", 200),  # an inner proxy is skipped
        ("2001:db8:ff::1", "198.51.100.1", 200),
        (PROXY, None, 403),  # the proxy itself is not in the allowlist
        (PROXY, "garbage", 403),  # malformed: no client, refused without a 5xx
        (PROXY, "198.51.100.1, ", 403),
        (PROXY, "198.51.100.1,\t[::1", 403),
        (PROXY, ",".join(["10.0.0.1"] * 5000), 403),
    ],
)
async def test_allowlist_sees_the_client_through_trusted_proxies_only(
    proxied_engine: EngineApp, kv: KeyValue, peer: str, xff: str | None, status: int
) -> None:
    config = demo_tenant(allowed_networks=[ALLOWED])
    await publish(kv, proxied_engine, config)
    r = await _post(proxied_engine, config, peer, xff)
    assert r.status_code == status, r.text
    if status == 403:
        assert r.text == "source address not allowed\n"


async def test_default_trusts_no_proxy(engine: EngineApp, kv: KeyValue) -> None:
    config = demo_tenant(allowed_networks=[ALLOWED])
    await publish(kv, engine, config)
    assert not engine.proxies.enabled
    assert (await _post(engine, config, STRANGER, "198.51.100.1")).status_code == 403
    assert (await _post(engine, config, "10.0.0.5", "198.51.100.1")).status_code == 403
    assert (await _post(engine, config, "198.51.100.3", None)).status_code == 200


async def test_legacy_trust_proxy_still_believes_the_last_hop(kv: KeyValue) -> None:
    async with running_engine(engine_settings(trust_proxy="true")) as app:
        config = demo_tenant(allowed_networks=[ALLOWED])
        await publish(kv, app, config)
        assert (await _post(app, config, STRANGER, "203.0.113.1, 198.51.100.1")).status_code == 200
        assert (await _post(app, config, STRANGER, "198.51.100.1, 203.0.113.1")).status_code == 403


async def test_forwarded_host_only_from_a_trusted_proxy(proxied_engine: EngineApp, kv: KeyValue) -> None:
    config = demo_tenant()
    await publish(kv, proxied_engine, config)
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "vlb.example.com"}
    spoofed = await _post(proxied_engine, config, STRANGER, "198.51.100.1", **forwarded)
    assert "vlb.example.com" not in spoofed.text
    assert "http://engine.test/api/voice/application/" in spoofed.text
    proxied = await _post(proxied_engine, config, PROXY, "198.51.100.1", **forwarded)
    assert "https://vlb.example.com/api/voice/application/" in proxied.text


async def test_through_granian(kv: KeyValue) -> None:
    """RSGI's peer address (loopback here) feeds the same rule: loopback listed as a proxy, the header
    decides; not listed, the header is ignored."""
    config = demo_tenant(allowed_networks=[ALLOWED])
    await put_snapshot(kv, config.snapshot)
    env = {k: v for k, v in os.environ.items() if k != "VLB_ENGINE_PUBLIC_URL"}
    body = dict(INBOUND, Domain=config.domain)
    for trusted, expected in (("127.0.0.0/8", 200), ("10.0.0.0/8", 403)):
        with granian_engine(workers=1, env={**env, "VLB_TRUSTED_PROXIES": trusted}) as url:
            async with httpx.AsyncClient(base_url=url, timeout=5) as http:
                for _ in range(200):
                    status = (await http.get("/status")).json()
                    if str(config.tenant_id) in status["tenants"]:
                        break
                    await asyncio.sleep(0.05)
                r = await http.post(
                    f"/api/voice/application/{config.domain}",
                    json=dict(body, Session=new_session()),
                    headers={**config.auth, "X-Forwarded-For": "203.0.113.3, 198.51.100.77"},
                )
                assert r.status_code == expected, (trusted, r.text)
                junk = await http.post(
                    f"/api/voice/application/{config.domain}",
                    json=dict(body, Session=new_session()),
                    headers={**config.auth, "X-Forwarded-For": "%%, ::::"},
                )
                assert junk.status_code == 403
