"""The engine's /metrics and /status answer only the ops token (or, without one, a client on this host
that no proxy forwarded); /health and /ready stay open for the probes (shared/ops_access.py)."""

from __future__ import annotations

import httpx
import pytest
from nats.js.kv import KeyValue

from routing_engine.app import EngineApp
from shared.ops_access import ops_allowed
from tests.routing_engine.harness import asgi_client, engine_settings, running_engine

OPS_PATHS = ("/metrics", "/status")


@pytest.mark.parametrize(
    ("headers", "client", "token", "allowed"),
    [
        ({}, "127.0.0.1", "", True),
        ({}, "::1", "", True),
        ({}, "203.0.113.7", "", False),
        ({}, "", "", False),
        ({"x-forwarded-for": "203.0.113.7"}, "127.0.0.1", "", False),
        ({"forwarded": "for=203.0.113.7"}, "127.0.0.1", "", False),
        ({}, "127.0.0.1", "s3cret", False),
        ({"authorization": "Bearer s3cret"}, "203.0.113.7", "s3cret", True),
        ({"authorization": "bearer s3cret"}, "203.0.113.7", "s3cret", True),
        ({"authorization": "Bearer nope"}, "127.0.0.1", "s3cret", False),
        ({"authorization": "Bearer "}, "127.0.0.1", "s3cret", False),
    ],
)
def test_ops_allowed(headers: dict[str, str], client: str, token: str, allowed: bool) -> None:
    assert ops_allowed(headers, client, token) is allowed


async def test_ops_endpoints_are_refused_to_the_internet(
    client: httpx.AsyncClient, engine: EngineApp
) -> None:
    # the harness's client is 203.0.113.7
    for path in OPS_PATHS:
        response = await client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "tenants" not in response.text
    for path in ("/health", "/ready"):
        assert (await client.get(path)).status_code == 200
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=engine, client=("127.0.0.1", 40000)), base_url="http://engine.test"
    ) as local:
        for path in OPS_PATHS:
            assert (await local.get(path)).status_code == 200, path
        forwarded = await local.get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"})
        assert forwarded.status_code == 401


async def test_with_a_token_only_the_token_reads_them(kv: KeyValue) -> None:
    async with running_engine(engine_settings(ops_token="s3cret")) as app, asgi_client(app) as c:
        for path in OPS_PATHS:
            assert (await c.get(path)).status_code == 401
            assert (await c.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 401
            ok = await c.get(path, headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 200, path
        assert (await c.get("/health")).status_code == 200
