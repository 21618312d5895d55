"""The balancer's live counters for one group, read and reset from the control plane. Key names and
the rolling-window arithmetic follow shared/redis_keys.py (and routing_engine/balancer.lua, which the
control plane must not import: the window sum below mirrors its ``range_sum``)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from shared.redis_keys import MINUTES_PER_HOUR, TenantKeys

# Keys per UNLINK when resetting (bounds one command's size).
RESET_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class AgentCounters:
    window_calls: int
    active_calls: int
    last_chosen_at: datetime.datetime | None


def window_keys(keys: TenantKeys, agent_id: int, first: int, last: int) -> list[str]:
    """The buckets holding calls routed to ``agent_id`` in epoch minutes [first, last]: whole hours
    from the hour buckets, the partial hours at either edge from the minute buckets."""
    if first > last:
        return []
    h_first, h_last = first // MINUTES_PER_HOUR, last // MINUTES_PER_HOUR
    starts_on_hour = first % MINUTES_PER_HOUR == 0
    ends_on_hour = last % MINUTES_PER_HOUR == MINUTES_PER_HOUR - 1
    if h_first == h_last and not (starts_on_hour and ends_on_hour):
        return [keys.window_minute(agent_id, m) for m in range(first, last + 1)]
    out: list[str] = []
    full_first, full_last = h_first, h_last
    if not starts_on_hour:
        out.extend(keys.window_minute(agent_id, m) for m in range(first, (h_first + 1) * MINUTES_PER_HOUR))
        full_first = h_first + 1
    if not ends_on_hour:
        out.extend(keys.window_minute(agent_id, m) for m in range(h_last * MINUTES_PER_HOUR, last + 1))
        full_last = h_last - 1
    out.extend(keys.window_hour(agent_id, h) for h in range(full_first, full_last + 1))
    return out


def _ms_to_datetime(ms: int) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC) if ms > 0 else None


async def group_counters(
    redis: Redis,
    keys: TenantKeys,
    group_id: int,
    window_hours: int,
    agent_ids: Sequence[int],
) -> tuple[dict[int, AgentCounters], tuple[int, int] | None]:
    """Per agent: calls routed in the rolling window, live slots, last chosen; and the group's
    round-robin pointer ``(priority, agent_id)``. One pipeline; Redis's clock, as the script uses."""
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    now_min = int(seconds) // 60
    first = now_min - window_hours * MINUTES_PER_HOUR + 1
    async with redis.pipeline(transaction=False) as pipe:
        for agent_id in agent_ids:
            pipe.mget(window_keys(keys, agent_id, first, now_min))
            pipe.zcount(keys.active(agent_id), f"({now_ms}", "+inf")
            pipe.get(keys.last_chosen(agent_id))
        pipe.get(keys.round_robin(group_id))
        replies = await pipe.execute()
    out: dict[int, AgentCounters] = {}
    for i, agent_id in enumerate(agent_ids):
        buckets, active, last = replies[3 * i : 3 * i + 3]
        out[agent_id] = AgentCounters(
            window_calls=sum(int(v) for v in buckets if v is not None),
            active_calls=int(active),
            last_chosen_at=_ms_to_datetime(int(last or 0)),
        )
    return out, _pointer(replies[-1])


def _pointer(raw: bytes | str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    priority, _, agent = text.partition(":")
    try:
        return int(priority), int(agent)
    except ValueError:
        return None


async def reset_group_counters(
    redis: Redis, keys: TenantKeys, group_id: int, agent_ids: Sequence[int]
) -> int:
    """Clear the members' window buckets and the group's round-robin pointer; active slots stay (they
    are real calls). Window buckets are per agent, so other groups sharing an agent see it too.
    Answers how many keys existed and were removed."""
    seconds, _micros = await redis.time()
    now_min = int(seconds) // 60
    names: list[str] = [keys.round_robin(group_id)]
    for agent_id in agent_ids:
        # The engine's cached window sums too, or it would count the old calls until the minute turns.
        names.extend(keys.window_keys_reaching(agent_id, now_min))
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(0, len(names), RESET_CHUNK):
            pipe.unlink(*names[i : i + RESET_CHUNK])
        removed = await pipe.execute()
    return sum(int(n) for n in removed)
