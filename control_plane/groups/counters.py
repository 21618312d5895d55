"""The balancer's live counters for one group, read and reset from the control plane. Key names and
the rolling-window arithmetic follow shared/redis_keys.py (and routing_engine/balancer.lua, which the
control plane must not import: the window sum below mirrors its ``range_sums``)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from shared.redis_client import RedisClient
from shared.redis_keys import MINUTES_PER_HOUR, TenantKeys


@dataclass(frozen=True, slots=True)
class AgentCounters:
    window_calls: int
    active_calls: int
    last_chosen_at: datetime.datetime | None


def window_keys(keys: TenantKeys, first: int, last: int) -> list[str]:
    """The buckets holding the calls routed in epoch minutes [first, last]: whole hours from the hour
    buckets, the partial hours at either edge from the minute buckets (each a hash, field = agent)."""
    if first > last:
        return []
    h_first, h_last = first // MINUTES_PER_HOUR, last // MINUTES_PER_HOUR
    starts_on_hour = first % MINUTES_PER_HOUR == 0
    ends_on_hour = last % MINUTES_PER_HOUR == MINUTES_PER_HOUR - 1
    if h_first == h_last and not (starts_on_hour and ends_on_hour):
        return [keys.window_minute(m) for m in range(first, last + 1)]
    out: list[str] = []
    full_first, full_last = h_first, h_last
    if not starts_on_hour:
        out.extend(keys.window_minute(m) for m in range(first, (h_first + 1) * MINUTES_PER_HOUR))
        full_first = h_first + 1
    if not ends_on_hour:
        out.extend(keys.window_minute(m) for m in range(h_last * MINUTES_PER_HOUR, last + 1))
        full_last = h_last - 1
    out.extend(keys.window_hour(h) for h in range(full_first, full_last + 1))
    return out


def _ms_to_datetime(ms: int) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC) if ms > 0 else None


async def group_counters(
    redis: RedisClient,
    keys: TenantKeys,
    group_id: int,
    window_hours: int,
    agent_ids: Sequence[int],
) -> tuple[dict[int, AgentCounters], tuple[int, int] | None]:
    """Per agent: calls routed in the rolling window, live slots, last chosen; and the group's
    round-robin pointer ``(priority, agent_id)``. One pipeline; Redis's clock, as the script uses."""
    if not agent_ids:
        return {}, _pointer(await redis.get(keys.round_robin(group_id)))
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    now_min = int(seconds) // 60
    first = now_min - window_hours * MINUTES_PER_HOUR + 1
    buckets = window_keys(keys, first, now_min)
    async with redis.pipeline(transaction=False) as pipe:
        for bucket in buckets:
            pipe.hmget(bucket, agent_ids)
        for agent_id in agent_ids:
            pipe.zcount(keys.active(agent_id), f"({now_ms}", "+inf")
        pipe.hmget(keys.last_chosen(), agent_ids)
        pipe.get(keys.round_robin(group_id))
        replies = await pipe.execute()
    window = [0] * len(agent_ids)
    for counts in replies[: len(buckets)]:
        for i, value in enumerate(counts):
            if value is not None:
                window[i] += int(value)
    active = replies[len(buckets) : len(buckets) + len(agent_ids)]
    last = replies[-2]
    out = {
        agent_id: AgentCounters(
            window_calls=window[i],
            active_calls=int(active[i]),
            last_chosen_at=_ms_to_datetime(int(last[i] or 0)),
        )
        for i, agent_id in enumerate(agent_ids)
    }
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
    redis: RedisClient, keys: TenantKeys, group_id: int, agent_ids: Sequence[int]
) -> int:
    """Clear the members' window counts (their fields of every bucket and cached window sum) and the
    group's round-robin and priority-rotation pointers; active slots stay (they are real calls). Window counts are per agent,
    so other groups sharing an agent see it too. Answers how many counters existed and were removed."""
    seconds, _micros = await redis.time()
    now_min = int(seconds) // 60
    # The engine's cached window sums too, or it would count the old calls until the minute turns.
    names = keys.window_keys_reaching(now_min) if agent_ids else []
    fields = [str(agent_id) for agent_id in agent_ids]
    async with redis.pipeline(transaction=False) as pipe:
        # As a plain command: a cluster pipeline's own unlink() is a coroutine, not a queued command.
        pipe.execute_command("UNLINK", keys.round_robin(group_id), keys.priority_levels(group_id))
        for name in names:
            pipe.hdel(name, *fields)
        removed = await pipe.execute()
    return sum(int(n) for n in removed)


@dataclass(frozen=True, slots=True)
class Ejection:
    until_ms: int
    ejections: int
    reason: str
    at_ms: int
    session_token: str


async def group_outliers(
    redis: RedisClient, keys: TenantKeys, group_id: int
) -> tuple[int, dict[int, Ejection], dict[int, int]]:
    """Redis's clock (ms), the group's ejection records (settings.outlier; current and on probation)
    and its agents' consecutive failures."""
    seconds, micros = await redis.time()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.outlier_ejections(group_id))
        pipe.hgetall(keys.outlier_state(group_id))
        records, state = await pipe.execute()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    ejections: dict[int, Ejection] = {}
    for agent, raw in records.items():
        try:
            until, k, reason, at, session = _text(raw).split("|", 4)
            ejections[int(_text(agent))] = Ejection(int(until), int(k), reason, int(at), session)
        except ValueError:
            continue
    streaks: dict[int, int] = {}
    for field, value in state.items():
        name = _text(field)
        if name.startswith("s:") and name[2:].isdigit():
            streaks[int(name[2:])] = int(value)
    return now_ms, ejections, streaks


async def lift_ejection(redis: RedisClient, keys: TenantKeys, group_id: int, agent_id: int) -> bool:
    """Let the agent back into the group's selection now, with a clean slate (no probation, no
    failures counted); False when it had no ejection record."""
    agent = str(agent_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hdel(keys.outlier_ejections(group_id), agent)
        pipe.hdel(keys.outlier_state(group_id), f"s:{agent}", f"w:{agent}")
        removed, _ = await pipe.execute()
    return bool(removed)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
