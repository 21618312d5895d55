"""Exact sums of ``call_stats`` over any segments of time, without scanning call records.

A question is a list of cuts ``c0 < c1 < … < cn`` (UTC); segment ``i`` is ``[ci, ci+1)``. Whole UTC
hours come from the hourly aggregate rows (one indexed range of ``call_stats``, grouped by segment in
SQL with ``width_bucket``). A cut inside an hour (a day boundary in a half- or quarter-hour time zone
such as Asia/Kolkata or Asia/Kathmandu, or a range given to the minute) splits that hour's row: the row
is first counted whole in the segment where the hour starts, then the records of the part after the cut
(at most the hour's remainder, read through the ``(tenant_id, start_time)`` index) are moved to their
own segment. So every answer equals a count over the records themselves, in any time zone.

Without an agent or group filter, and grouped by nothing, direction or routed-and-direction, the whole
hours come from ``call_stats_tenant`` instead (a few rows an hour, not one per agent, group and
direction): the same sums, kept in the same transactions.

Per agent or per group (``agent_group_sums``, for the agent and group reports), a range's whole UTC
days come from ``call_stats_day`` (a row per day, agent and group) and only its edges, the hours before
its first UTC midnight and after its last (a tenant day in any other zone is a UTC day shifted), from
``call_stats`` as above: still exact in any time zone, across DST changes."""

from __future__ import annotations

import bisect
import dataclasses
import datetime
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.analytics.aggregates import COLUMNS, CONTRIBUTION_SQL, DURATION_COLUMNS

HOUR = datetime.timedelta(hours=1)
GroupBy = Literal["agent_id", "group_id", "direction", "routed_direction"] | None
# What each grouping selects from a call_stats row or a record's contribution (alias {t}).
_KEYS = {
    None: "NULL",
    "agent_id": "{t}.agent_id",
    "group_id": "{t}.group_id",
    "direction": "{t}.direction",
    # Whether the call reached an agent, and its direction: "1:inbound", "0:" (unrouted, unknown).
    "routed_direction": "({t}.agent_id <> 0)::int || ':' || {t}.direction",
}
# The same keys from a call_stats_tenant row (the groupings it can answer).
_TENANT_KEYS = {
    None: "NULL",
    "direction": "{t}.direction",
    "routed_direction": "{t}.routed::int || ':' || {t}.direction",
}


@dataclass(slots=True)
class Sums:
    """One ``call_stats`` row's counters (see control_plane/db/models/analytics.py), summed."""

    calls: int = 0
    finished: int = 0
    completed: int = 0
    busy: int = 0
    failed: int = 0
    no_answer: int = 0
    canceled: int = 0
    duration_sum: int = 0
    completed_duration_sum: int = 0
    completed_duration_n: int = 0
    billsec_sum: int = 0
    # Records per duration bucket (aggregates.DURATION_COLUMNS).
    dur_lt_10: int = 0
    dur_10_20: int = 0
    dur_20_30: int = 0
    dur_30_45: int = 0
    dur_45_60: int = 0
    dur_60_90: int = 0
    dur_90_120: int = 0
    dur_120_180: int = 0
    dur_180_240: int = 0
    dur_240_300: int = 0
    dur_300_360: int = 0
    dur_360_420: int = 0
    dur_420_480: int = 0
    dur_480_540: int = 0
    dur_540_600: int = 0
    dur_600_900: int = 0
    dur_900_1200: int = 0
    dur_1200_1800: int = 0
    dur_1800_3600: int = 0
    dur_ge_3600: int = 0

    def outcome_fields(self) -> dict[str, Any]:
        """The outcome figures the per-agent, per-group and per-split-branch reports share."""
        return {
            "calls": self.calls,
            "answered": self.completed,
            "finished": self.finished,
            "success_rate": self.success_rate,
            "avg_duration": self.avg_duration,
            "avg_talk_time": self.avg_talk_time,
            "total_talk_time": self.billsec_sum,
        }

    def add(self, values: Sequence[Any], sign: int = 1, names: Sequence[str] = COLUMNS) -> None:
        for name, value in zip(names, values, strict=True):
            setattr(self, name, getattr(self, name) + sign * int(value or 0))

    def merge(self, other: Sums) -> None:
        self.add(dataclasses.astuple(other))

    @property
    def success_rate(self) -> float:
        """Answered (completed) calls over finished ones; 0 when none finished."""
        return round(self.completed / self.finished, 4) if self.finished else 0.0

    @property
    def avg_duration(self) -> float:
        """Mean duration of the answered calls, seconds; 0 when none."""
        n = self.completed_duration_n
        return round(self.completed_duration_sum / n, 1) if n else 0.0

    @property
    def avg_talk_time(self) -> float:
        """Mean talk time (billsec) per answered call, seconds; 0 when none."""
        return round(self.billsec_sum / self.completed, 1) if self.completed else 0.0


assert tuple(f.name for f in dataclasses.fields(Sums)) == COLUMNS, "Sums must follow aggregates.COLUMNS"


@dataclass(frozen=True, slots=True)
class StatFilter:
    """Restricts the sums to one agent, group or direction (0 / '' select the "none" rows)."""

    agent_id: int | None = None
    group_id: int | None = None
    direction: str | None = None

    def sql(self, alias: str) -> tuple[str, dict[str, Any]]:
        parts, params = [], {}
        for name in ("agent_id", "group_id", "direction"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"AND {alias}.{name} = :f_{name}")
                params[f"f_{name}"] = value
        return " ".join(parts), params

    def per_tenant(self, by: GroupBy) -> bool:
        """Whether ``call_stats_tenant`` answers this filter grouped by ``by``."""
        return self.agent_id is None and self.group_id is None and by in _TENANT_KEYS


# What a question sums unless it asks for other columns: every counter but the duration buckets (the
# record list's duration filters ask for those alone).
SUMMED = tuple(c for c in COLUMNS if c not in DURATION_COLUMNS)


def _sum_list(columns: Sequence[str]) -> str:
    return ", ".join(f"sum({c})" for c in columns)


# Built from constant column names only; every value is a bound parameter.
_STATS_SQL = """
    SELECT width_bucket(s.bucket, CAST(:cuts AS timestamptz[])) - 1 AS seg, {key} AS key, {sums}
    FROM {table} s
    WHERE s.tenant_id = :tenant_id AND s.bucket >= :low AND s.bucket < :high {where}
    GROUP BY 1, 2
"""
_SPLIT_SQL = """
    SELECT width_bucket(c.moment, CAST(:cuts AS timestamptz[])) - 1 AS seg, c.bucket, {key} AS key, {sums}
    FROM unnest(CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[])) AS p(a, b)
    CROSS JOIN LATERAL (
        SELECT {contribution}, COALESCE(r.start_time, r.created_at) AS moment
        FROM call_records r
        WHERE r.tenant_id = :tenant_id AND r.start_time >= p.a AND r.start_time < p.b
        OFFSET 0  -- a fence: one index range per part, whatever the planner believes of the table
    ) c
    WHERE true {where}
    GROUP BY 1, 2, 3
"""


# For this transaction (one request): hash the rows into their segments (with stale statistics the
# planner expects a handful of rows and sorts tens of thousands instead, spilling to disk at the default
# work_mem), and no parallel workers (with fresh statistics it starts two for some 40,000 rows, which on
# a busy control-plane database costs more than it saves).
_PLAN_SQL = (
    "SELECT set_config('enable_sort', 'off', true), set_config('max_parallel_workers_per_gather', '0', true)"
)


def floor_hour(moment: datetime.datetime) -> datetime.datetime:
    return moment.astimezone(datetime.UTC).replace(minute=0, second=0, microsecond=0)


def split_parts(cuts: Sequence[datetime.datetime]) -> list[tuple[datetime.datetime, datetime.datetime]]:
    """For each hour holding a cut that is not on the hour: from its first such cut to the hour's end."""
    firsts: dict[datetime.datetime, datetime.datetime] = {}
    for cut in cuts:
        hour = floor_hour(cut)
        if cut != hour and hour not in firsts:
            firsts[hour] = cut
    return [(cut, hour + HOUR) for hour, cut in sorted(firsts.items())]


def segment_of(cuts: Sequence[datetime.datetime], moment: datetime.datetime) -> int:
    """The segment holding ``moment``: -1 before the first cut, len(cuts) - 1 from the last one."""
    return bisect.bisect_right(cuts, moment) - 1


async def segment_sums(
    session: AsyncSession,
    tenant_id: int,
    cuts: Sequence[datetime.datetime],
    where: StatFilter | None = None,
    by: GroupBy = None,
    columns: Sequence[str] = SUMMED,
) -> dict[tuple[int, Hashable], Sums]:
    """Sums per (segment, key) over ``[cuts[0], cuts[-1])``; key is the ``by`` column's value (0, or
    '' for direction, is "none"), or None. Only ``columns`` are summed (the others stay 0). Segments
    with nothing are absent."""
    cuts = sorted({c.astimezone(datetime.UTC) for c in cuts})
    if len(cuts) < 2:
        return {}
    where = where or StatFilter()
    rollup = where.per_tenant(by)
    if not rollup and set(columns) & set(DURATION_COLUMNS):
        raise ValueError("the duration buckets are only summed without an agent or group filter")
    key = (_TENANT_KEYS if rollup else _KEYS)[by].format(t="s")
    table = "call_stats_tenant" if rollup else "call_stats"
    condition, params = where.sql("s")
    params |= {"tenant_id": tenant_id, "cuts": cuts, "low": floor_hour(cuts[0]), "high": cuts[-1]}
    out: dict[tuple[int, Hashable], Sums] = defaultdict(Sums)
    last = len(cuts) - 1
    await session.execute(text(_PLAN_SQL))
    rows = await session.execute(
        text(_STATS_SQL.format(key=key, sums=_sum_list(columns), where=condition, table=table)), params
    )
    for seg, value, *values in rows:
        if 0 <= seg < last:
            out[(seg, value)].add(values, names=columns)
    parts = split_parts(cuts)
    if parts:
        condition, params = where.sql("c")
        params |= {
            "tenant_id": tenant_id,
            "cuts": cuts,
            "starts": [a for a, _ in parts],
            "ends": [b for _, b in parts],
        }
        sql = _SPLIT_SQL.format(
            key=_KEYS[by].format(t="c"),
            sums=_sum_list(columns),
            contribution=CONTRIBUTION_SQL,
            where=condition,
        )
        for seg, bucket, value, *values in await session.execute(text(sql), params):
            counted_in = segment_of(cuts, bucket)
            if seg == counted_in:
                continue
            if 0 <= counted_in < last:
                out[(counted_in, value)].add(values, -1, columns)
            if 0 <= seg < last:
                out[(seg, value)].add(values, names=columns)
    return {k: v for k, v in out.items() if any(getattr(v, c) for c in columns)}


async def range_sums(
    session: AsyncSession,
    tenant_id: int,
    since: datetime.datetime,
    until: datetime.datetime,
    where: StatFilter | None = None,
    by: GroupBy = None,
    columns: Sequence[str] = SUMMED,
) -> dict[Hashable, Sums]:
    """Sums of ``columns`` over ``[since, until)``, per ``by`` key (or under the key None)."""
    found = await segment_sums(session, tenant_id, [since, until], where, by, columns)
    return {key: sums for (_, key), sums in found.items()}


DAY = datetime.timedelta(days=1)
_DAY_SQL = """
    SELECT {key} AS key, {sums}
    FROM call_stats_day s
    WHERE s.tenant_id = :tenant_id AND s.day >= :first AND s.day < :last {where}
    GROUP BY 1
"""
# Whole UTC days from call_stats_day and the whole-hour edges from call_stats, in one statement (one
# round trip: each statement costs the control plane a few ms of Python).
_DAYS_AND_EDGES_SQL = """
    SELECT key, {outer} FROM (
        SELECT {key} AS key, {cols}
        FROM call_stats_day s
        WHERE s.tenant_id = :tenant_id AND s.day >= :first_day AND s.day < :last_day {where}
        UNION ALL
        SELECT {key} AS key, {cols}
        FROM call_stats s
        WHERE s.tenant_id = :tenant_id AND s.bucket >= :since AND s.bucket < :first {where}
        UNION ALL
        SELECT {key} AS key, {cols}
        FROM call_stats s
        WHERE s.tenant_id = :tenant_id AND s.bucket >= :last AND s.bucket < :until {where}
    ) u
    GROUP BY 1
"""


def whole_utc_days(
    since: datetime.datetime, until: datetime.datetime
) -> tuple[datetime.datetime, datetime.datetime] | None:
    """The first and last UTC midnights of ``[since, until)`` (the whole UTC days between them), or None
    when it holds no whole UTC day."""
    since, until = since.astimezone(datetime.UTC), until.astimezone(datetime.UTC)
    first = since.replace(hour=0, minute=0, second=0, microsecond=0)
    if first < since:
        first += DAY
    last = until.replace(hour=0, minute=0, second=0, microsecond=0)
    return (first, last) if first < last else None


async def agent_group_sums(
    session: AsyncSession,
    tenant_id: int,
    since: datetime.datetime,
    until: datetime.datetime,
    where: StatFilter | None = None,
    by: Literal["agent_id", "group_id"] = "agent_id",
) -> dict[Hashable, Sums]:
    """What ``range_sums(..., by=by)`` answers (the ``SUMMED`` columns), reading the range's whole UTC
    days from ``call_stats_day`` and only its edges from ``call_stats``."""
    where = where or StatFilter()
    days = whole_utc_days(since, until)
    if days is None or where.direction is not None:  # call_stats_day has no direction
        return await range_sums(session, tenant_id, since, until, where, by)
    first, last = days
    since, until = since.astimezone(datetime.UTC), until.astimezone(datetime.UTC)
    if since == floor_hour(since) and until == floor_hour(until):
        # Edges of whole hours (a tenant day in a whole-hour zone): one statement.
        condition, params = where.sql("s")
        params |= {
            "tenant_id": tenant_id,
            "first_day": first.date(),
            "last_day": last.date(),
            "since": since,
            "first": first,
            "last": last,
            "until": until,
        }
        sql = _DAYS_AND_EDGES_SQL.format(
            key=_KEYS[by].format(t="s"),
            cols=", ".join(f"s.{c}" for c in SUMMED),
            outer=_sum_list(SUMMED),
            where=condition,
        )
        found: dict[Hashable, Sums] = defaultdict(Sums)
        for value, *values in await session.execute(text(sql), params):
            found[value].add(values, names=SUMMED)
        return {k: v for k, v in found.items() if any(getattr(v, c) for c in SUMMED)}
    # Edges cut inside an hour (a half- or quarter-hour zone, a bound to the minute): the edges as
    # range_sums answers them (the split hours corrected from the records), the days as above.
    out: dict[Hashable, Sums] = defaultdict(Sums)
    for low, high in ((since, first), (last, until)):
        if low < high:
            for key, sums in (await range_sums(session, tenant_id, low, high, where, by)).items():
                out[key].merge(sums)
    condition, params = where.sql("s")
    params |= {"tenant_id": tenant_id, "first": first.date(), "last": last.date()}
    sql = _DAY_SQL.format(key=_KEYS[by].format(t="s"), sums=_sum_list(SUMMED), where=condition)
    for value, *values in await session.execute(text(sql), params):
        out[value].add(values, names=SUMMED)
    return {k: v for k, v in out.items() if any(getattr(v, c) for c in SUMMED)}
