"""Phase (b): phase (a) plus one Redis EVALSHA per request — the naive ceiling for "one script call per
decision". The script touches a key per session like the balancer's idempotency check does."""

from __future__ import annotations

import os
from typing import Any

import redis.asyncio as aioredis

from loadtests.apps.bare import CXML, START, drain

SCRIPT = "redis.call('SET', KEYS[1], ARGV[1], 'EX', 60) return redis.call('INCR', KEYS[2])"
_state: dict[str, Any] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                client = aioredis.Redis.from_url(os.environ["VLB_REDIS_URL"])
                _state["redis"] = client
                _state["sha"] = await client.script_load(SCRIPT)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _state["redis"].aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = await drain(receive)
    await _state["redis"].evalsha(_state["sha"], 2, b"bench:{t1}:idem:" + body[-48:], b"bench:{t1}:n", b"1")
    await send(START)
    await send({"type": "http.response.body", "body": CXML})
