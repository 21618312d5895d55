"""Calls active now, from the live state the engines keep in Redis (never from call records, which lag
and may miss a lost hang-up): each agent's ``active`` sorted set holds the sessions using one of its
slots, scored by the slot's expiry, so the members scored after now are the live calls."""

from __future__ import annotations

from collections.abc import Sequence

from litestar.exceptions import ServiceUnavailableException
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.redis_keys import TenantKeys


async def active_by_agent(redis: Redis, keys: TenantKeys, agent_ids: Sequence[int]) -> dict[int, int]:
    """Live calls per agent: one ``ZCOUNT`` per agent in one pipeline, against Redis's clock (the one
    the balancer scores slots with). 503 when Redis does not answer."""
    if not agent_ids:
        return {}
    try:
        seconds, micros = await redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        async with redis.pipeline(transaction=False) as pipe:
            for agent_id in agent_ids:
                pipe.zcount(keys.active(agent_id), f"({now_ms}", "+inf")
            counts = await pipe.execute()
    except RedisError as exc:
        raise ServiceUnavailableException("Live call counts are unavailable (Redis).") from exc
    return {agent_id: int(n) for agent_id, n in zip(agent_ids, counts, strict=True)}
