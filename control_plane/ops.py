"""Operations routes and middleware: /health, /ready, /metrics, request ids and access logs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from litestar import Controller, Request, get
from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.client_address import forwarded_for, proxies_of
from shared.ops_access import OPS_REALM, ops_allowed

log = structlog.get_logger("control_plane.access")

prometheus_config = PrometheusConfig(
    app_name="vlb_control_plane",
    prefix="vlb_cp",
    group_path=True,  # label by route template, not raw path (bounded cardinality)
    excluded_http_methods=[],
    exclude=["/metrics"],
)


def ops_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """/metrics only for the ops token, or without one a client on this host (shared/ops_access.py)."""
    client = connection.client.host if connection.client else ""
    settings = connection.app.state.settings
    headers: Mapping[str, str] = connection.headers
    chain = forwarded_for(connection)
    if chain is not None:  # every X-Forwarded-For line, not just the first
        headers = {**dict(connection.headers.items()), "x-forwarded-for": chain}
    if not ops_allowed(headers, client, settings.ops_token, proxies_of(connection)):
        raise NotAuthorizedException(detail="ops token required", headers={"WWW-Authenticate": OPS_REALM})


class MetricsController(PrometheusController):
    path = "/metrics"
    include_in_schema = False
    guards = [ops_guard]


class HealthController(Controller):
    include_in_schema = True
    tags = ["ops"]

    @get("/health")
    async def health(self) -> dict[str, str]:
        """The process is alive (no dependency is checked)."""
        return {"status": "ok"}

    @get("/ready")
    async def ready(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> dict[str, Any]:
        """PostgreSQL and Redis answer; 503 otherwise."""
        checks: dict[str, str] = {}
        try:
            await db_session.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # readiness reports any failure as not ready
            checks["database"] = f"error: {type(exc).__name__}"
        try:
            await request.app.state.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        if any(v != "ok" for v in checks.values()):
            raise HTTPException(
                status_code=503, detail="not ready: " + ", ".join(f"{k} {v}" for k, v in checks.items())
            )
        return {"status": "ready", **checks}


def request_context_middleware(app: ASGIApp) -> ASGIApp:
    """Bind a request id (incoming X-Request-ID or a new one) to every log line; log one line per request."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = incoming or uuid.uuid4().hex
        started = time.perf_counter()
        status = 500
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableScopeHeaders.from_message(message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            log.info(
                "request",
                method=scope.get("method"),
                path=scope.get("path"),
                status=status,
                latency_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()

    return middleware
