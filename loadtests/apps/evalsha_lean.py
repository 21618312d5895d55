"""Phase (f): phase (b) with the engine's own lean script client (routing_engine/script_client.py)
instead of redis-py: the same one EVALSHA per request, at the client cost the engine pays per script
call. (c)/(f) compares the engine with a naive app that is as fast at talking to Redis as it is.

Phase (g): the same app served through granian's RSGI interface (``rsgi_app``), as the engine is:
(c)/(g) compares the engine with a naive app on equal terms in everything but the engine's own work."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from loadtests.apps.bare import CXML, START, drain, lifespan
from loadtests.apps.evalsha import KEY, SCRIPT
from routing_engine.script_client import ScriptClient

_state: dict[str, Any] = {}


async def _connect() -> tuple[ScriptClient, str]:
    """The lean client and the loaded script's sha."""
    client = ScriptClient(os.environ["VLB_REDIS_URL"])
    sha = await client.call("SCRIPT", "LOAD", SCRIPT)
    return client, sha.decode() if isinstance(sha, bytes) else str(sha)


async def _start() -> None:
    _state["redis"], _state["sha"] = await _connect()


async def _stop() -> None:
    await _state["redis"].aclose()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send, _start, _stop)
    if scope["type"] != "http":
        return
    await drain(receive)
    await _state["redis"].call("EVALSHA", _state["sha"], "1", KEY)
    await send(START)
    await send({"type": "http.response.body", "body": CXML})


class RsgiApp:
    """Phase (g): (f) over RSGI: read the body, one EVALSHA, the fixed answer."""

    HEADERS = [("content-type", "application/xml; charset=utf-8")]

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.client, self.sha = loop.run_until_complete(_connect())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.client.aclose())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        await proto()
        await self.client.call("EVALSHA", self.sha, "1", KEY)
        proto.response_bytes(200, self.HEADERS, CXML)


rsgi_app = RsgiApp()
