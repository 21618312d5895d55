"""Phase (b): phase (a) plus one Redis EVALSHA of a trivial script per request: what one Redis round trip
per request costs under granian, the baseline the engine (one script call per decision, or fewer when
coalesced) is compared with."""

from __future__ import annotations

import os
from typing import Any

import redis.asyncio as aioredis

from loadtests.apps.bare import CXML, START, drain, lifespan

SCRIPT = "return redis.call('INCR', KEYS[1])"
KEY = b"vlb-bench:evalsha:n"
_state: dict[str, Any] = {}


async def _start() -> None:
    client = aioredis.Redis.from_url(os.environ["VLB_REDIS_URL"])
    _state["redis"] = client
    _state["sha"] = await client.script_load(SCRIPT)


async def _stop() -> None:
    await _state["redis"].aclose()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send, _start, _stop)
    if scope["type"] != "http":
        return
    await drain(receive)
    await _state["redis"].evalsha(_state["sha"], 1, KEY)
    await send(START)
    await send({"type": "http.response.body", "body": CXML})
