"""The control plane's client address (login throttle, ops guard) believes X-Forwarded-For only from
the proxies in VLB_TRUSTED_PROXIES (shared/client_address.py); and API bodies over the limit are 413."""

from __future__ import annotations

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from control_plane.app import create_app
from control_plane.settings import ControlPlaneSettings
from tests.control_plane.conftest import Account, register_account

PROXY = "10.0.0.5"
STRANGER = "203.0.113.7"


@pytest.fixture
def proxied_app(cp_settings: ControlPlaneSettings) -> Litestar:
    settings = msgspec.structs.replace(cp_settings, trusted_proxies="10.0.0.0/8", api_max_body_bytes=4096)
    return create_app(settings)


def _from(app: Litestar, peer: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(peer, 40000)), base_url="http://cp"
    )


async def _fail(app: Litestar, account: Account, peer: str, xff: str | None = None) -> int:
    headers = {"X-Forwarded-For": xff} if xff is not None else {}
    async with _from(app, peer) as c:
        r = await c.post("/api/login", json={"email": account.email, "password": "wrong"}, headers=headers)
        return r.status_code


async def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    proxied_app: Litestar, account: Account
) -> None:
    async with proxied_app.lifespan():
        # Each attempt claims another address; from a peer we do not trust they all count as that peer.
        statuses = [await _fail(proxied_app, account, STRANGER, f"198.51.100.{i}") for i in range(7)]
        assert statuses == [401] * 5 + [429] * 2


async def test_a_trusted_proxy_chain_names_the_client(
    proxied_app: Litestar, client: AsyncTestClient[Litestar]
) -> None:
    async with proxied_app.lifespan():
        account = await register_account(client)
        # Five failures of one client behind the proxy lock that client out ...
        for _ in range(5):
            assert await _fail(proxied_app, account, PROXY, "1.1.1.1, 198.51.100.1") == 401
        assert await _fail(proxied_app, account, PROXY, "198.51.100.1") == 429
        # ... whatever it writes left of the proxy's entry ...
        assert await _fail(proxied_app, account, PROXY, "9.9.9.9, 198.51.100.1, 10.0.0.9") == 429
        # ... and not another client behind the same proxy.
        assert await _fail(proxied_app, account, PROXY, "198.51.100.2") == 401


async def test_a_malformed_chain_is_one_unknown_client(
    proxied_app: Litestar, client: AsyncTestClient[Litestar]
) -> None:
    async with proxied_app.lifespan():
        account = await register_account(client)
        junk = ["garbage", "198.51.100.1, ", ",,,", "[::1", "1.2.3.4:5:6", "x" * 3000]
        statuses = [await _fail(proxied_app, account, PROXY, j) for j in junk]
        # never a 5xx; all of them are the same unknown client, so the sixth is throttled
        assert statuses == [401] * 5 + [429]
        assert await _fail(proxied_app, account, PROXY, "198.51.100.3") == 401


async def test_ops_metrics_through_a_trusted_proxy(proxied_app: Litestar) -> None:
    async with proxied_app.lifespan():
        async with _from(proxied_app, PROXY) as c:
            assert (await c.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})).status_code == 200
            assert (await c.get("/metrics", headers={"X-Forwarded-For": "198.51.100.1"})).status_code == 401
        async with _from(proxied_app, "127.0.0.1") as c:
            # an unlisted local proxy forwarding the internet: refused
            assert (await c.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})).status_code == 401
            assert (await c.get("/metrics")).status_code == 200


async def test_api_bodies_over_the_limit_are_413(
    proxied_app: Litestar, client: AsyncTestClient[Litestar]
) -> None:
    async with proxied_app.lifespan():
        account = await register_account(client)
        async with _from(proxied_app, STRANGER) as c:
            r = await c.put("/api/user", json={"name": "x" * 5000}, headers=account.headers)
            assert r.status_code == 413
            r = await c.put("/api/user", json={"name": "Renamed"}, headers=account.headers)
            assert r.status_code == 200
