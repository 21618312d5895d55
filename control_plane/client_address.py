"""The client address of a control-plane request: the peer, or behind a proxy listed in
``VLB_TRUSTED_PROXIES`` the client its ``X-Forwarded-For`` names (shared/client_address.py). What the
login throttle counts failures by, and what the ops guard checks for this host."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection

from shared.client_address import TrustedProxies

UNKNOWN = "unknown"


def proxies_of(connection: ASGIConnection[Any, Any, Any, Any]) -> TrustedProxies:
    proxies: TrustedProxies = connection.app.state.proxies
    return proxies


def forwarded_for(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """Every X-Forwarded-For line of the request joined, in order (None without one)."""
    lines = connection.headers.getall("x-forwarded-for", [])
    return ", ".join(lines) if lines else None


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The client's address as text; ``unknown`` when neither the peer nor a believed chain tells it."""
    peer = connection.client.host if connection.client else ""
    return proxies_of(connection).client(peer, forwarded_for(connection)) or UNKNOWN
