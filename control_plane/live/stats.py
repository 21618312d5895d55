"""A tenant's live stats, from the Redis state every engine keeps (so every control-plane worker and
replica computes the same numbers):

- ``active_calls`` / ``per_agent_active``: the live members of each of the tenant's agents'
  ``active:<agent>`` sorted sets (scored by expiry; ZCOUNT above Redis's ``now``), as the balancer
  counts slots;
- ``calls_last_minute``: calls the balancer routed in the last 60 s, from the per-minute window
  buckets (``win:<epoch minute>``, a field per agent): this minute's bucket plus the previous minute's
  pro rata of the part of it still inside the last 60 s (the buckets are per minute, so this is exact
  when the calls of the previous minute were spread evenly, and exact whenever it is empty).

The tenant's agent ids come from the database (its ``voice_agents``), cached per tenant by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.db.models import VoiceAgent
from control_plane.live.messages import Stats, utc_iso
from control_plane.tenancy import TenantScope
from shared.redis_keys import TenantKeys


async def tenant_agent_ids(session: AsyncSession, tenant_id: int) -> list[int]:
    scope = TenantScope(session, tenant_id)
    return list(await session.scalars(scope.where(select(VoiceAgent.id), VoiceAgent)))


def calls_in_last_minute(current: int, previous: int, seconds_into_minute: float) -> int:
    """This minute's count plus the previous minute's share of the rolling 60 s."""
    return current + int(previous * (60.0 - seconds_into_minute) / 60.0 + 0.5)


async def tenant_stats(redis: Redis, keys: TenantKeys, agent_ids: Sequence[int]) -> Stats:
    """One TIME and one pipeline: Redis's clock, as the balancer's script uses."""
    seconds, micros = await redis.time()
    now_s = int(seconds) + int(micros) / 1e6
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    now_min = int(seconds) // 60
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hvals(keys.window_minute(now_min))
        pipe.hvals(keys.window_minute(now_min - 1))
        for agent_id in agent_ids:
            pipe.zcount(keys.active(agent_id), f"({now_ms}", "+inf")
        replies = await pipe.execute()
    current = sum(int(v) for v in replies[0])
    previous = sum(int(v) for v in replies[1])
    per_agent = {str(a): int(n) for a, n in zip(agent_ids, replies[2:], strict=True) if int(n) > 0}
    return Stats(
        at=utc_iso(now_s),
        active_calls=sum(per_agent.values()),
        calls_last_minute=calls_in_last_minute(current, previous, now_s - now_min * 60),
        per_agent_active=per_agent,
    )
