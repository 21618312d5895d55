"""``WS /api/live``: authenticate (``?token=`` or a first ``{"token": …}`` message within the auth
timeout; otherwise close 4401), say hello, then relay what the worker's LiveHub queues for the client
until it leaves, is ended (1013 too slow, 1001 shutting down) or its socket fails. The wire format is
in control_plane/live/messages.py and docs/architecture.md."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
import structlog
from litestar import Litestar, WebSocket, websocket

from control_plane.live import metrics
from control_plane.live.hub import CLOSE_GOING_AWAY, CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED, LiveClient, LiveHub
from control_plane.live.messages import AUTH_DECODER, Hello, encode_text
from control_plane.settings import ControlPlaneSettings

log = structlog.get_logger("control_plane.live")

CLOSE_REASONS = {CLOSE_TOO_SLOW: "did not keep up: reconnect", CLOSE_GOING_AWAY: "server shutting down"}
# How long a close frame may take to go out before the connection is left to the server to drop.
CLOSE_WAIT_S = 2.0


async def _first_message_token(socket: WebSocket[Any, Any, Any], within_s: float) -> str | None:
    try:
        async with asyncio.timeout(within_s):
            message = await socket.receive()
    except TimeoutError:
        return None
    if message["type"] != "websocket.receive":
        return None
    raw = message.get("text") or message.get("bytes") or b""
    try:
        return AUTH_DECODER.decode(raw).token
    except msgspec.DecodeError:  # ValidationError is one
        return None


async def _send_loop(socket: WebSocket[Any, Any, Any], client: LiveClient) -> None:
    queue = client.queue
    while client.close_code is None:
        if not queue:
            client.wake.clear()
            await client.wake.wait()
            continue
        await socket.send_text(queue.popleft())


async def _receive_loop(socket: WebSocket[Any, Any, Any]) -> None:
    """Read (and ignore) what the client sends, until it disconnects."""
    while (await socket.receive())["type"] == "websocket.receive":
        pass


async def _serve(socket: WebSocket[Any, Any, Any], client: LiveClient) -> None:
    tasks = {
        asyncio.create_task(_send_loop(socket, client)),
        asyncio.create_task(_receive_loop(socket)),
        asyncio.create_task(client.ended.wait()),
    }
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
        for task in tasks:  # a send or receive that failed because the client went away
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.debug("live_client_gone", error=type(task.exception()).__name__)
    if client.close_code is not None and socket.connection_state != "disconnect":
        with contextlib.suppress(Exception):  # gone already, or too backed up to take a close frame
            async with asyncio.timeout(CLOSE_WAIT_S):
                await socket.close(code=client.close_code, reason=CLOSE_REASONS.get(client.close_code, ""))


@websocket("/api/live", name="live-feed")
async def live_feed(socket: WebSocket[Any, Any, Any]) -> None:
    """The tenant's call events and stats, as they happen (see docs/architecture.md, "Live feed")."""
    hub: LiveHub = socket.app.state.live_hub
    settings = hub.settings
    await socket.accept()
    token = socket.query_params.get("token")
    if token is None:
        token = await _first_message_token(socket, settings.live_auth_timeout_s)
    tenant_id = await hub.tenant_of(token)
    if tenant_id is None:
        metrics.REFUSED.inc()
        with contextlib.suppress(Exception):
            await socket.close(code=CLOSE_UNAUTHORIZED, reason="missing or invalid token")
        return
    await socket.send_text(
        encode_text(Hello(tenant_id=tenant_id, stats_interval_s=settings.live_stats_interval_s))
    )
    client = hub.join(tenant_id)
    try:
        await _serve(socket, client)
    finally:
        hub.leave(client)


def live_lifespan(settings: ControlPlaneSettings) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """The app lifespan hook: a LiveHub on ``app.state.live_hub`` (after the Redis client exists)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        hub = LiveHub(settings, app.state.redis)
        app.state.live_hub = hub
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    return lifespan
