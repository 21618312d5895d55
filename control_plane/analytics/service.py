"""The analytics reports: figures from ``call_stats`` (control_plane/analytics/sums.py), active calls
from the engines' live state in Redis, names and capacities from the tenant's configuration.

Ranges are tenant days: ``start_date``/``end_date`` are inclusive days in the tenant's time zone (or
ISO 8601 instants), by default the 30 days ending today; a range longer than
``VLB_ANALYTICS_MAX_RANGE_DAYS`` is a 422 naming ``end_date``."""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from redis.asyncio import Redis
from sqlalchemy import select, text

from control_plane.analytics import schemas
from control_plane.analytics.active import active_by_agent
from control_plane.analytics.sums import StatFilter, Sums, agent_group_sums, range_sums, segment_sums
from control_plane.calls import filters
from control_plane.db.models import AgentGroup, AgentGroupMember, VoiceAgent
from control_plane.errors import FieldError
from control_plane.tenancy import TenantScope
from shared.redis_keys import TenantKeys

DEFAULT_DAYS = 30
# Hour buckets: at most this many days (744 buckets) per request.
MAX_HOUR_RANGE_DAYS = 31
MAX_REALTIME_MINUTES = 60
INTERVALS = ("hour", "day")


@dataclass(frozen=True, slots=True)
class Range:
    since: datetime.datetime  # UTC, inclusive
    until: datetime.datetime  # UTC, exclusive
    zone: ZoneInfo

    @property
    def first_day(self) -> datetime.date:
        return self.since.astimezone(self.zone).date()

    @property
    def last_day(self) -> datetime.date:
        return (self.until - datetime.timedelta(microseconds=1)).astimezone(self.zone).date()

    def window(self) -> schemas.Window:
        return schemas.Window(
            start=self.since,
            end=self.until,
            start_date=self.first_day,
            end_date=self.last_day,
            timezone=self.zone.key,
        )

    def day_cuts(self) -> list[datetime.datetime]:
        """The range cut at each tenant midnight inside it (days of 23 or 25 hours at DST changes)."""
        cuts = [self.since]
        day = self.first_day + datetime.timedelta(days=1)
        while day <= self.last_day:
            cuts.append(midnight(day, self.zone))
            day += datetime.timedelta(days=1)
        cuts.append(self.until)
        return cuts

    def hour_cuts(self) -> list[datetime.datetime]:
        """The range cut at each UTC hour inside it (so each bucket is one ``call_stats`` hour; in a
        half-hour zone the first and last buckets are the partial hours at the range's edges)."""
        cuts = [self.since]
        hour = self.since.replace(minute=0, second=0, microsecond=0) + datetime.timedelta(hours=1)
        while hour < self.until:
            cuts.append(hour)
            hour += datetime.timedelta(hours=1)
        cuts.append(self.until)
        return cuts


def midnight(day: datetime.date, zone: ZoneInfo) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time(), zone).astimezone(datetime.UTC)


def today_range(zone: ZoneInfo) -> Range:
    since, until = filters.today_window(zone)
    return Range(since, until, zone)


async def parse_range(
    scope: TenantScope, start_date: str | None, end_date: str | None, max_days: int
) -> Range:
    """The report's range from the query (422 naming the field when malformed, reversed or too long)."""
    zone = await filters.tenant_zone(scope)
    since = filters.parse_moment("start_date", start_date, zone, end=False)
    until = filters.parse_moment("end_date", end_date, zone, end=True)
    if until is None:
        today = datetime.datetime.now(zone).date()
        last = max(today, since.astimezone(zone).date()) if since else today
        until = midnight(last + datetime.timedelta(days=1), zone)
    if since is None:
        last = (until - datetime.timedelta(microseconds=1)).astimezone(zone).date()
        since = midnight(last - datetime.timedelta(days=DEFAULT_DAYS - 1), zone)
    if until <= since:
        raise FieldError(("end_date", "must not be before start_date"))
    # One extra hour: a range of whole days may hold a 25-hour DST day.
    if until - since > datetime.timedelta(days=max_days, hours=1):
        raise FieldError(("end_date", f"the range may cover at most {max_days} days"))
    return Range(since, until, zone)


async def check_agent(scope: TenantScope, agent_id: int | None) -> None:
    """An agent of the tenant, or one its calls were routed to before it was deleted; else 422."""
    if agent_id is None:
        return
    if agent_id > 0:
        if await scope.find(VoiceAgent, agent_id) is not None:
            return
        if await _in_stats(scope, "agent_id", agent_id):
            return
    raise FieldError(("agent_id", f"no agent {agent_id} in this tenant"))


async def check_group(scope: TenantScope, group_id: int | None) -> None:
    if group_id is None:
        return
    if group_id > 0:
        if await scope.find(AgentGroup, group_id) is not None:
            return
        if await _in_stats(scope, "group_id", group_id):
            return
    raise FieldError(("group_id", f"no group {group_id} in this tenant"))


async def _in_stats(scope: TenantScope, column: str, value: int) -> bool:
    sql = f"SELECT 1 FROM call_stats WHERE tenant_id = :t AND {column} = :v LIMIT 1"  # noqa: S608
    found = await scope.session.scalar(text(sql), {"t": scope.tenant_id, "v": value})
    return found is not None


@dataclass(slots=True)
class Config:
    """The tenant's agents, groups and memberships, for names, capacities and live counts."""

    agents: dict[int, tuple[str, bool]]  # id -> (name, enabled)
    groups: dict[int, tuple[str, bool, str]]  # id -> (name, enabled, strategy)
    members: dict[int, list[tuple[int, int]]]  # group id -> [(agent id, capacity)]

    def agent_capacity(self, agent_id: int) -> int | None:
        """The most any of the agent's groups lets it take (its active calls are shared by all its
        groups, and each group compares them with its own capacity); None when one of them, or the
        lack of any group (a rule targeting the agent directly), leaves it unlimited."""
        caps = [cap for members in self.members.values() for a, cap in members if a == agent_id]
        if not caps or 0 in caps:
            return None
        return max(caps)

    def group_capacity(self, group_id: int) -> int | None:
        """The members' capacities summed; None when one is unlimited."""
        caps = [cap for _, cap in self.members.get(group_id, [])]
        return None if 0 in caps else sum(caps)


async def load_config(scope: TenantScope) -> Config:
    session = scope.session
    agents = await session.execute(
        select(VoiceAgent.id, VoiceAgent.name, VoiceAgent.enabled).where(
            VoiceAgent.tenant_id == scope.tenant_id
        )
    )
    groups = await session.execute(
        select(AgentGroup.id, AgentGroup.name, AgentGroup.enabled, AgentGroup.strategy).where(
            AgentGroup.tenant_id == scope.tenant_id
        )
    )
    members = await session.execute(
        select(AgentGroupMember.group_id, AgentGroupMember.agent_id, AgentGroupMember.capacity).where(
            AgentGroupMember.tenant_id == scope.tenant_id
        )
    )
    config = Config(
        agents={i: (n, e) for i, n, e in agents},
        groups={i: (n, e, s) for i, n, e, s in groups},
        members={},
    )
    for group_id, agent_id, capacity in members:
        config.members.setdefault(group_id, []).append((agent_id, capacity))
    return config


def utilisation(active: int, capacity: int | None) -> float | None:
    return round(active / capacity, 4) if capacity else None


class Live:
    """Active calls per agent, read once per request."""

    def __init__(self, by_agent: dict[int, int]) -> None:
        self.by_agent = by_agent

    @classmethod
    async def read(cls, redis: Redis, prefix: str, tenant_id: int, agent_ids: Sequence[int]) -> Live:
        return cls(await active_by_agent(redis, TenantKeys(prefix, tenant_id), sorted(set(agent_ids))))

    def agent(self, agent_id: int) -> int:
        return self.by_agent.get(agent_id, 0)

    def group(self, config: Config, group_id: int) -> int:
        return sum(self.agent(a) for a, _ in config.members.get(group_id, []))

    @property
    def total(self) -> int:
        return sum(self.by_agent.values())


def _scope_agents(config: Config, agent_id: int | None, group_id: int | None) -> list[int]:
    """The agents whose live calls a filtered report counts."""
    if agent_id is not None:
        return [agent_id]
    if group_id is not None:
        return [a for a, _ in config.members.get(group_id, [])]
    return list(config.agents)


def outcomes(s: Sums) -> schemas.Outcomes:
    return schemas.Outcomes(
        calls=s.calls,
        answered=s.completed,
        busy=s.busy,
        failed=s.failed,
        no_answer=s.no_answer,
        canceled=s.canceled,
        in_progress=s.calls - s.finished,
        finished=s.finished,
        success_rate=s.success_rate,
        avg_duration=s.avg_duration,
        total_duration=s.duration_sum,
        avg_talk_time=s.avg_talk_time,
        total_talk_time=s.billsec_sum,
    )


def _total(found: dict[Hashable, Sums]) -> Sums:
    total = Sums()
    for sums in found.values():
        total.merge(sums)
    return total


async def metrics(
    scope: TenantScope,
    live_source: tuple[Redis, str],
    r: Range,
    agent_id: int | None,
    group_id: int | None,
) -> schemas.Metrics:
    where = StatFilter(agent_id=agent_id, group_id=group_id)
    cuts = r.day_cuts()
    per_day = await segment_sums(scope.session, scope.tenant_id, cuts, where)
    today_since, today_until = _today(r.zone)
    if today_since in cuts and today_until in cuts:  # today is one of the range's days (the default)
        today = per_day.get((cuts.index(today_since), None), Sums())
    else:
        today = _total(await range_sums(scope.session, scope.tenant_id, today_since, today_until, where))
    config = await load_config(scope)
    live = await Live.read(*live_source, scope.tenant_id, _scope_agents(config, agent_id, group_id))
    total = Sums()
    trends = []
    for i in range(len(cuts) - 1):
        day = per_day.get((i, None), Sums())
        total.merge(day)
        trends.append(
            schemas.TrendPoint(
                date=cuts[i].astimezone(r.zone).date(),
                start=cuts[i],
                calls=day.calls,
                answered=day.completed,
                finished=day.finished,
                success_rate=day.success_rate,
                avg_duration=day.avg_duration,
            )
        )
    return schemas.Metrics(
        calls_today=today.calls,
        success_rate=total.success_rate,
        avg_duration=total.avg_duration,
        active_calls=live.total,
        total_calls=total.calls,
        answered=total.completed,
        trends=trends,
        window=r.window(),
    )


def _today(zone: ZoneInfo) -> tuple[datetime.datetime, datetime.datetime]:
    return filters.today_window(zone)


async def agents(
    scope: TenantScope, live_source: tuple[Redis, str], r: Range, group_id: int | None
) -> schemas.AgentsReport:
    found = await agent_group_sums(
        scope.session, scope.tenant_id, r.since, r.until, StatFilter(group_id=group_id), by="agent_id"
    )
    config = await load_config(scope)
    listed = set(_scope_agents(config, None, group_id))
    ids = sorted(listed | {int(k) for k in found if k})  # type: ignore[call-overload]
    live = await Live.read(*live_source, scope.tenant_id, [i for i in ids if i in config.agents])
    rows = []
    for agent_id in ids:
        s = found.get(agent_id, Sums())
        name, enabled = config.agents.get(agent_id, (None, False))
        capacity = config.agent_capacity(agent_id) if agent_id in config.agents else None
        active = live.agent(agent_id)
        rows.append(
            schemas.AgentReport(
                agent_id=agent_id,
                name=name,
                enabled=enabled,
                **s.outcome_fields(),
                active_calls=active,
                capacity=capacity,
                utilisation=utilisation(active, capacity),
            )
        )
    return schemas.AgentsReport(data=rows, window=r.window())


async def groups(scope: TenantScope, live_source: tuple[Redis, str], r: Range) -> schemas.GroupsReport:
    found = await agent_group_sums(scope.session, scope.tenant_id, r.since, r.until, by="group_id")
    config = await load_config(scope)
    ids = sorted(set(config.groups) | {int(k) for k in found if k})  # type: ignore[call-overload]
    members = {a for g in config.groups for a, _ in config.members.get(g, [])}
    live = await Live.read(*live_source, scope.tenant_id, sorted(members))
    rows = []
    for group_id in ids:
        s = found.get(group_id, Sums())
        name, enabled, strategy = config.groups.get(group_id, (None, False, None))
        capacity = config.group_capacity(group_id) if group_id in config.groups else None
        active = live.group(config, group_id)
        rows.append(
            schemas.GroupReport(
                group_id=group_id,
                name=name,
                enabled=enabled,
                strategy=strategy,
                members=len(config.members.get(group_id, [])),
                **s.outcome_fields(),
                active_calls=active,
                capacity=capacity,
                utilisation=utilisation(active, capacity),
            )
        )
    return schemas.GroupsReport(data=rows, window=r.window())


async def overview(
    scope: TenantScope,
    live_source: tuple[Redis, str],
    r: Range,
    agent_id: int | None,
    group_id: int | None,
) -> schemas.Overview:
    where = StatFilter(agent_id=agent_id, group_id=group_id)
    found = await range_sums(scope.session, scope.tenant_id, r.since, r.until, where, by="routed_direction")
    totals, unrouted = Sums(), Sums()
    by_direction: dict[str, int] = {}
    for key, sums in sorted(found.items(), key=str):
        routed, _, direction = str(key).partition(":")
        totals.merge(sums)
        if routed == "0":
            unrouted.merge(sums)
        name = direction or "unknown"
        by_direction[name] = by_direction.get(name, 0) + sums.calls
    today = _total(await range_sums(scope.session, scope.tenant_id, *_today(r.zone), where))
    config = await load_config(scope)
    live = await Live.read(*live_source, scope.tenant_id, _scope_agents(config, agent_id, group_id))
    return schemas.Overview(
        totals=outcomes(totals),
        today=outcomes(today),
        by_direction=by_direction,
        unrouted_calls=unrouted.calls,
        active_calls=live.total,
        agents=len(config.agents),
        agents_enabled=sum(1 for _, enabled in config.agents.values() if enabled),
        groups=len(config.groups),
        groups_enabled=sum(1 for _, enabled, _ in config.groups.values() if enabled),
        window=r.window(),
    )


async def trends(
    scope: TenantScope, r: Range, interval: str, agent_id: int | None, group_id: int | None
) -> schemas.Trends:
    cuts = r.day_cuts() if interval == "day" else r.hour_cuts()
    found = await segment_sums(
        scope.session, scope.tenant_id, cuts, StatFilter(agent_id=agent_id, group_id=group_id)
    )
    data = []
    for i in range(len(cuts) - 1):
        s = found.get((i, None), Sums())
        local = cuts[i].astimezone(r.zone)
        data.append(
            schemas.TrendBucket(
                start=cuts[i],
                local_start=local,
                date=local.date(),
                calls=s.calls,
                answered=s.completed,
                busy=s.busy,
                failed=s.failed,
                no_answer=s.no_answer,
                canceled=s.canceled,
                finished=s.finished,
                success_rate=s.success_rate,
                avg_duration=s.avg_duration,
                total_talk_time=s.billsec_sum,
            )
        )
    return schemas.Trends(interval=interval, data=data, window=r.window())


def check_interval(interval: str | None, r: Range) -> str:
    value = (interval or "day").strip().lower()
    if value not in INTERVALS:
        raise FieldError(("interval", f"one of {', '.join(INTERVALS)}"))
    if value == "hour" and r.until - r.since > datetime.timedelta(days=MAX_HOUR_RANGE_DAYS, hours=1):
        raise FieldError(("interval", f"hour buckets cover at most {MAX_HOUR_RANGE_DAYS} days; use day"))
    return value


# Calls started per minute, through the (tenant_id, start_time) index: at most an hour of records.
_PER_MINUTE_SQL = """
    SELECT date_trunc('minute', start_time) AS minute, count(*)
    FROM call_records
    WHERE tenant_id = :tenant_id AND start_time >= :since AND start_time < :until
    GROUP BY 1
"""


async def realtime(scope: TenantScope, live_source: tuple[Redis, str], minutes: int) -> schemas.Realtime:
    if not 1 <= minutes <= MAX_REALTIME_MINUTES:
        raise FieldError(("minutes", f"must be between 1 and {MAX_REALTIME_MINUTES}"))
    now = datetime.datetime.now(datetime.UTC)
    this_minute = now.replace(second=0, microsecond=0)
    first = this_minute - datetime.timedelta(minutes=minutes - 1)
    counted = {
        m.astimezone(datetime.UTC): int(n)
        for m, n in await scope.session.execute(
            text(_PER_MINUTE_SQL),
            {
                "tenant_id": scope.tenant_id,
                "since": first,
                "until": this_minute + datetime.timedelta(minutes=1),
            },
        )
    }
    per_minute = [
        schemas.MinuteCount(minute=m, calls=counted.get(m, 0))
        for m in (first + datetime.timedelta(minutes=i) for i in range(minutes))
    ]
    config = await load_config(scope)
    live = await Live.read(*live_source, scope.tenant_id, list(config.agents))
    agent_rows = []
    for agent_id, (name, _) in sorted(config.agents.items(), key=lambda kv: (kv[1][0], kv[0])):
        capacity = config.agent_capacity(agent_id)
        active = live.agent(agent_id)
        agent_rows.append(
            schemas.ActiveAgent(
                agent_id=agent_id,
                name=name,
                active_calls=active,
                capacity=capacity,
                utilisation=utilisation(active, capacity),
            )
        )
    group_rows = []
    for group_id, (name, _, _) in sorted(config.groups.items(), key=lambda kv: (kv[1][0], kv[0])):
        capacity = config.group_capacity(group_id)
        active = live.group(config, group_id)
        group_rows.append(
            schemas.ActiveGroup(
                group_id=group_id,
                name=name,
                active_calls=active,
                capacity=capacity,
                utilisation=utilisation(active, capacity),
            )
        )
    return schemas.Realtime(
        at=now,
        active_calls=live.total,
        agents=agent_rows,
        groups=group_rows,
        minutes=minutes,
        calls_last_minutes=sum(m.calls for m in per_minute),
        per_minute=per_minute,
    )
