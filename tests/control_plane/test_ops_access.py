"""The control plane's /metrics answers only the ops token (or, without one, a client on its own host
that no proxy forwarded); /health and /ready stay open (shared/ops_access.py)."""

from __future__ import annotations

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from control_plane.app import create_app
from control_plane.settings import ControlPlaneSettings


def _client(app: Litestar, host: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(host, 40000)), base_url="http://cp"
    )


async def test_metrics_only_from_this_host(client: AsyncTestClient[Litestar], cp_app: Litestar) -> None:
    async with _client(cp_app, "203.0.113.7") as remote, _client(cp_app, "127.0.0.1") as local:
        refused = await remote.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert (await local.get("/metrics")).status_code == 200
        assert (await local.get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"})).status_code == 401
        assert (await remote.get("/health")).status_code == 200


async def test_with_a_token_only_the_token_reads_metrics(cp_settings: ControlPlaneSettings) -> None:
    import msgspec

    app = create_app(msgspec.structs.replace(cp_settings, ops_token="s3cret"))
    async with AsyncTestClient(app) as c, _client(app, "127.0.0.1") as local:
        assert (await local.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await c.get("/metrics", headers={"Authorization": "Bearer s3cret"})).status_code == 200
