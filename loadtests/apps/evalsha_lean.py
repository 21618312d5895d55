"""Phase (f): phase (b) with the engine's own lean script client (routing_engine/script_client.py)
instead of redis-py: the same one EVALSHA per request, at the client cost the engine pays per script
call. (c)/(f) compares the engine with a naive app that is as fast at talking to Redis as it is.

Phase (g): the same app served through granian's RSGI interface (``rsgi_app``), as the engine is:
(c)/(g) compares the engine with a naive app on equal terms in everything but the engine's own work."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from loadtests.apps.bare import CXML, START, drain
from loadtests.apps.evalsha import KEY, SCRIPT
from routing_engine.script_client import ScriptClient

_state: dict[str, Any] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                client = ScriptClient(os.environ["VLB_REDIS_URL"])
                _state["redis"] = client
                sha = await client.call("SCRIPT", "LOAD", SCRIPT)
                _state["sha"] = sha.decode() if isinstance(sha, bytes) else sha
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _state["redis"].aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
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
        async def start() -> None:
            self.client = ScriptClient(os.environ["VLB_REDIS_URL"])
            sha = await self.client.call("SCRIPT", "LOAD", SCRIPT)
            self.sha = sha.decode() if isinstance(sha, bytes) else sha

        loop.run_until_complete(start())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.client.aclose())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        await proto()
        await self.client.call("EVALSHA", self.sha, "1", KEY)
        proto.response_bytes(200, self.HEADERS, CXML)


rsgi_app = RsgiApp()
