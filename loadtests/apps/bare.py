"""Phase (a): the thinnest ASGI app granian can serve: read the body, answer a fixed CXML document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

CXML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Dial action="http://127.0.0.1/api/voice/application/'
    b'bench.example/dial-status?attempt=1&amp;agent=1" method="POST" timeout="30" callerId="+14155550100">'
    b'<Service provider="vapi">+12125550101</Service></Dial></Response>'
)
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/xml; charset=utf-8"),
        (b"content-length", str(len(CXML)).encode()),
    ],
}


async def drain(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        chunk: bytes = message.get("body", b"")
        body += chunk
        if not message.get("more_body"):
            return body


async def lifespan(
    receive: Any, send: Any, start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """An ASGI lifespan: ``start`` at startup, ``stop`` at shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await drain(receive)
    await send(START)
    await send({"type": "http.response.body", "body": CXML})
