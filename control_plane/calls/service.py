"""Reading calls: live ones, today's counts, one call's timeline, and the filtered record lists."""

from __future__ import annotations

import bisect
import dataclasses
import datetime
from dataclasses import dataclass
from typing import Any

from litestar.exceptions import NotFoundException
from sqlalchemy import ColumnElement, Select, case, func, select, text

from control_plane.analytics.aggregates import DURATION_COLUMNS, DURATION_EDGES
from control_plane.analytics.sums import StatFilter, Sums, range_sums, whole_utc_days
from control_plane.calls import filters
from control_plane.calls.decisions import explain
from control_plane.calls.schemas import (
    ActiveCall,
    CallDetail,
    CallRecordRead,
    CallRecordSummary,
    CallStatistics,
    FilterOptions,
    NamedRef,
    RoutingAttempt,
    TimelineEntry,
)
from control_plane.db.models import AgentGroup, CallRecord, CallTimelineEntry, VoiceAgent
from control_plane.errors import FieldError
from control_plane.pagination import Page, page_meta
from control_plane.tenancy import TenantScope
from shared.enums import TERMINAL_STATUSES, CallStatus, Disposition, EventKind

# A call with no terminal event for this long is not shown as live (a lost webhook must not leave a
# call "active" forever).
ACTIVE_MAX_AGE = datetime.timedelta(hours=12)
ACTIVE_LIMIT = 1000
LIVE = [s.value for s in CallStatus if s not in TERMINAL_STATUSES]
DIRECTIONS = ("inbound", "outbound", "subscriber", "outbound-api")
# Sort columns that may hold NULLs in practice (those sort last either way).
NULLABLE_SORTS = frozenset({"end_time", "duration"})
# The call_stats column that counts the records of a terminal status.
STATUS_COLUMNS = {
    CallStatus.COMPLETED: "completed",
    CallStatus.BUSY: "busy",
    CallStatus.FAILED: "failed",
    CallStatus.NO_ANSWER: "no_answer",
    CallStatus.CANCELED: "canceled",
}
# Bounds for a range left open: every bucket call_stats may hold.
EARLIEST = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
LATEST = datetime.datetime(9999, 1, 1, tzinfo=datetime.UTC)
SORTS: dict[str, Any] = {
    "start_time": CallRecord.start_time,
    "end_time": CallRecord.end_time,
    "duration": CallRecord.duration,
    "created_at": CallRecord.created_at,
    "status": CallRecord.status,
    "id": CallRecord.id,
}


def _scoped(scope: TenantScope, stmt: Any, model: type[Any]) -> Any:
    """``scope.where`` for selects of several columns (typed loosely: SQLAlchemy types them per column)."""
    return scope.where(stmt, model)


def record_read(r: CallRecord) -> CallRecordRead:
    return CallRecordRead(
        id=r.id,
        session_token=r.session_token,
        direction=r.direction,
        from_number=r.from_number,
        to_number=r.to_number,
        caller_name=r.caller_name,
        domain=r.domain,
        agent_id=r.agent_id,
        group_id=r.group_id,
        rule_id=r.rule_id,
        split_target=r.split_target,
        status=r.status,
        attempts=r.attempts,
        start_time=r.start_time,
        answer_time=r.answer_time,
        end_time=r.end_time,
        duration=r.duration,
        billsec=r.billsec,
        disposition=r.disposition,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _live(scope: TenantScope, now: datetime.datetime) -> Select[Any]:
    return scope.select(CallRecord).where(
        CallRecord.status.in_(LIVE), CallRecord.start_time >= now - ACTIVE_MAX_AGE
    )


async def active_calls(scope: TenantScope) -> list[ActiveCall]:
    now = datetime.datetime.now(datetime.UTC)
    stmt = _live(scope, now).order_by(CallRecord.start_time.desc()).limit(ACTIVE_LIMIT)
    return [
        ActiveCall(
            session_token=r.session_token,
            from_=r.from_number,
            to=r.to_number,
            direction=r.direction,
            status=r.status,
            agent_id=r.agent_id,
            group_id=r.group_id,
            started_at=r.start_time,
            duration_seconds=max(0, int((now - r.start_time).total_seconds())) if r.start_time else 0,
        )
        for r in (await scope.session.scalars(stmt)).all()
    ]


async def statistics(scope: TenantScope) -> CallStatistics:
    now = datetime.datetime.now(datetime.UTC)
    since, until = filters.today_window(await filters.tenant_zone(scope))
    active = await scope.session.scalar(select(func.count()).select_from(_live(scope, now).subquery()))
    today = _sum((await range_sums(scope.session, scope.tenant_id, since, until)).values())
    return CallStatistics(active_calls=active or 0, completed_today=today.completed, total_today=today.calls)


def _sum(found: Any) -> Sums:
    total = Sums()
    for sums in found:
        total.merge(sums)
    return total


async def call_detail(scope: TenantScope, session_token: str) -> CallDetail:
    record = (
        await scope.session.scalars(scope.select(CallRecord).where(CallRecord.session_token == session_token))
    ).one_or_none()
    if record is None:
        raise NotFoundException("call not found")
    events = (
        await scope.session.scalars(
            scope.select(CallTimelineEntry)
            .where(CallTimelineEntry.session_token == session_token)
            .order_by(CallTimelineEntry.occurred_at, CallTimelineEntry.id)
        )
    ).all()
    timeline = [
        TimelineEntry(
            id=e.id,
            kind=e.kind,
            status=e.status,
            outcome=e.outcome,
            disposition=e.disposition,
            source=e.engine_id,
            occurred_at=e.occurred_at,
            agent_id=e.agent_id,
            attempt=e.attempt,
            latency_us=e.latency_us,
            payload=e.payload,
            decision=explain(e.decision, e.rule_id, e.agent_id) if e.decision else None,
        )
        for e in events
    ]
    return CallDetail(
        **{f: getattr(record_read(record), f) for f in CallRecordRead.__struct_fields__},
        timeline=timeline,
        routing_attempts=routing_attempts(events),
    )


def routing_attempts(events: Any) -> list[RoutingAttempt]:
    """One entry per engine decision (the first request and each <Dial action>), with how the dial of
    that attempt ended when a later callback said so."""
    attempts: list[RoutingAttempt] = []
    ended: dict[int, str] = {}
    for e in events:
        if e.kind == EventKind.DIAL_STATUS.value and e.status and e.attempt is not None:
            # A dial-status callback reports the outcome of the attempt before its decision.
            previous = e.attempt - 1 if e.outcome in ("routed", "replay") else e.attempt
            ended[previous] = e.status
    for e in events:
        if e.kind not in (EventKind.ROUTED.value, EventKind.DIAL_STATUS.value):
            continue
        if e.kind == EventKind.DIAL_STATUS.value and e.outcome not in ("routed", "replay", "no_agent"):
            continue  # the end of a dial, already folded into its attempt
        attempts.append(
            RoutingAttempt(
                attempt=e.attempt,
                agent_id=e.agent_id,
                group_id=e.group_id,
                rule_id=e.rule_id,
                outcome=e.outcome,
                dial_status=ended.get(e.attempt) if e.attempt is not None else None,
                at=e.occurred_at,
                overflow_step=(e.decision or {}).get("overflow_step"),
            )
        )
    return attempts


@dataclass(slots=True)
class RecordFilters:
    agent_id: int | None = None
    group_id: int | None = None
    status: CallStatus | None = None
    direction: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    min_duration: int | None = None
    max_duration: int | None = None
    sort: str = "-start_time"


async def record_filters(
    scope: TenantScope,
    *,
    agent_id: int | None,
    group_id: int | None,
    status: str | None,
    direction: str | None,
    from_number: str | None,
    to_number: str | None,
    start_date: str | None,
    end_date: str | None,
    min_duration: int | None,
    max_duration: int | None,
) -> RecordFilters:
    """Validate the query (422 naming the field) into filters (sorted by the default order)."""
    parsed_status = filters.parse_enum("status", status, CallStatus)
    if direction is not None and direction.strip():
        direction = direction.strip().lower()
        if direction not in DIRECTIONS:
            raise FieldError(("direction", f"unknown value; one of {', '.join(DIRECTIONS)}"))
    else:
        direction = None
    filters.check_range("min_duration", min_duration, max_duration, "max_duration")
    since, until = (None, None)
    if start_date or end_date:
        since, until = filters.date_window(start_date, end_date, await filters.tenant_zone(scope))
    return RecordFilters(
        agent_id=agent_id,
        group_id=group_id,
        status=parsed_status,
        direction=direction,
        from_number=(from_number or "").strip() or None,
        to_number=(to_number or "").strip() or None,
        since=since,
        until=until,
        min_duration=min_duration,
        max_duration=max_duration,
    )


def sorted_by(f: RecordFilters, sort: str | None) -> RecordFilters:
    """``f`` ordered by ``sort`` (a field, ``-`` for descending; 422 naming it when unknown)."""
    sort = (sort or "-start_time").strip()
    if sort.lstrip("-") not in SORTS:
        raise FieldError(("sort", f"one of {', '.join(SORTS)}, optionally prefixed with '-'"))
    return dataclasses.replace(f, sort=sort)


def _conditions(f: RecordFilters) -> list[ColumnElement[bool]]:
    cond: list[ColumnElement[bool]] = []
    if f.agent_id is not None:
        cond.append(CallRecord.agent_id == f.agent_id)
    if f.group_id is not None:
        cond.append(CallRecord.group_id == f.group_id)
    if f.status is not None:
        cond.append(CallRecord.status == f.status.value)
    if f.direction is not None:
        cond.append(CallRecord.direction == f.direction)
    if f.from_number is not None:
        cond.append(_contains(CallRecord.from_number, f.from_number))
    if f.to_number is not None:
        cond.append(_contains(CallRecord.to_number, f.to_number))
    candidates = _number_candidates(f)
    if candidates is not None:
        cond.append(CallRecord.id.in_(select(candidates.c.id)))
    if f.since is not None:
        cond.append(CallRecord.start_time >= f.since)
    if f.until is not None:
        cond.append(CallRecord.start_time < f.until)
    if f.min_duration is not None:
        cond.append(CallRecord.duration >= f.min_duration)
    if f.max_duration is not None:
        cond.append(CallRecord.duration <= f.max_duration)
    return cond


def _contains(column: Any, part: str) -> ColumnElement[bool]:
    """``part`` anywhere in the number, ignoring case; a plain LIKE when ``part`` has no letters (the
    usual digits and ``+``): the same answer, and it scans a million numbers faster."""
    pattern = f"%{_escape(part)}%"
    if any(ch.isalpha() for ch in part):
        return column.ilike(pattern, escape="\\")  # type: ignore[no-any-return]
    return column.like(pattern, escape="\\")  # type: ignore[no-any-return]


# A number search at least this long is looked up by its last NUMBER_TAIL characters alone first.
NUMBER_TAIL = 7


def _number_candidates(f: RecordFilters) -> Any:
    """The records of every tenant whose number holds the tail of a long number search, as a
    materialized CTE of ids, or None when no search is long enough.

    Phone numbers share their leading characters (country and area codes: ``+1415…`` in every record of
    a tenant), whose trigrams are in every row of the GIN index; their trailing digits are what tells
    numbers apart. And with stale statistics the planner would rather read the tenant's whole index
    range and filter its million numbers (~300 ms) than the trigram index. In a materialized CTE with
    no other condition the trigram index is the only way in, and its posting lists for the tail are
    short (~6 ms instead of ~55 ms for the whole number); the full search and the tenant filter are then
    checked on those few rows, by primary key. A short or broad search (fewer than NUMBER_TAIL
    characters, matching a large share of the records) keeps the plain conditions: a count of a
    hundred thousand matches costs what it costs either way."""
    tails = [
        _contains(column, part[-NUMBER_TAIL:])
        for column, part in ((CallRecord.from_number, f.from_number), (CallRecord.to_number, f.to_number))
        if part is not None and len(part) >= NUMBER_TAIL
    ]
    if not tails:
        return None
    return select(CallRecord.id).where(*tails).cte("number_matches").prefix_with("MATERIALIZED")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def records_stmt(scope: TenantScope, f: RecordFilters) -> Select[Any]:
    """The filtered records in ``f.sort`` order, ties newest id first. Only end_time and duration sort
    their NULLs last explicitly: for the others (never NULL in practice) the plain order lets an index
    give the rows already sorted, so a page is read, not a million rows sorted."""
    name = f.sort.lstrip("-")
    column = SORTS[name]
    order = column.desc() if f.sort.startswith("-") else column.asc()
    if name in NULLABLE_SORTS:
        order = order.nulls_last()
    return scope.select(CallRecord).where(*_conditions(f)).order_by(order, CallRecord.id.desc())


def stats_question(f: RecordFilters) -> tuple[StatFilter, str] | None:
    """The ``call_stats`` filter and column that count exactly the records ``f`` selects, or None when
    a filter has no aggregate (numbers, durations, a live status, an id of 0 or less)."""
    if f.min_duration is not None or f.max_duration is not None:
        return None
    return _stats_filter(f)


def _stats_filter(f: RecordFilters) -> tuple[StatFilter, str] | None:
    """``stats_question`` for every filter but the durations."""
    if f.from_number or f.to_number:
        return None
    if (f.agent_id is not None and f.agent_id <= 0) or (f.group_id is not None and f.group_id <= 0):
        return None
    column = "calls"
    if f.status is not None:
        if f.status not in STATUS_COLUMNS:
            return None
        column = STATUS_COLUMNS[f.status]
    return StatFilter(agent_id=f.agent_id, group_id=f.group_id, direction=f.direction), column


@dataclass(frozen=True, slots=True)
class DurationQuestion:
    """How to count the records of a duration range exactly: the ``call_stats_tenant`` duration buckets
    (``columns``, summed) plus or minus the records of a few seconds next to a bucket edge (``parts``:
    ``(low, high, sign)``, seconds inclusive, None for open; counted in ``call_stats_duration``)."""

    columns: tuple[str, ...]
    parts: tuple[tuple[int | None, int | None, int], ...]


# Bucket i of aggregates.DURATION_COLUMNS holds durations in [_STARTS[i], _ENDS[i]); None: open.
_STARTS: tuple[int | None, ...] = (None, *DURATION_EDGES)
_ENDS: tuple[int | None, ...] = (*DURATION_EDGES, None)


def _at_least(x: int) -> tuple[int, tuple[int | None, int | None, int] | None]:
    """The records of ``duration >= x`` as the buckets from index ``i`` on, plus or minus one part:
    through the edge nearest to ``x`` (the lower one on a tie), so the part is at most half a bucket.
    Past the last edge, the records from ``x`` up (no bucket)."""
    i = bisect.bisect_right(DURATION_EDGES, x)  # the bucket holding x
    start, end = _STARTS[i], _ENDS[i]
    if start == x:
        return i, None
    if end is None:
        return len(DURATION_COLUMNS), (x, None, 1)
    if start is None or x - start <= end - x:
        return i, (start, x - 1, -1)  # the bucket's records, but those below x
    return i + 1, (x, end - 1, 1)  # the next buckets', and those from x to the edge


def duration_question(low: int | None, high: int | None) -> DurationQuestion:
    """``low <= duration <= high`` (either open) as ``count(>= low) - count(>= high + 1)``, each through
    its nearest bucket edge (``_at_least``): whole buckets between the two edges, and the seconds
    between each bound and its edge added or taken away."""
    first, low_part = (0, None) if low is None else _at_least(low)
    last, high_part = (len(DURATION_COLUMNS), None) if high is None else _at_least(high + 1)
    parts = [] if low_part is None else [low_part]
    if high_part is not None:
        a, b, sign = high_part
        parts.append((a, b, -sign))
    return DurationQuestion(columns=DURATION_COLUMNS[first:last], parts=tuple(parts))


async def count_records(scope: TenantScope, f: RecordFilters) -> tuple[int, bool]:
    """How many records ``f`` selects, and whether the records themselves were counted: from
    ``call_stats`` when the filters allow (a million records are not counted one by one), else an
    exact count of the records. A duration range (with the filters the rollups answer: direction,
    dates) is counted from ``call_stats_tenant``'s duration buckets and ``call_stats_duration``
    (``_count_by_duration``); with an agent, group or status filter it is an exact count (an agent's or
    a group's records are a fraction of the tenant's, and their indexes end with the duration)."""
    question = stats_question(f)
    if question is None:
        if (
            (f.min_duration is not None or f.max_duration is not None)
            and f.status is None
            and f.agent_id is None
            and f.group_id is None
        ):
            answered = _stats_filter(f)
            if answered is not None:
                return await _count_by_duration(scope, f, answered[0]), False
        return await _count_of_records(scope, f), True
    where, column = question
    found = await range_sums(scope.session, scope.tenant_id, f.since or EARLIEST, f.until or LATEST, where)
    return int(sum(getattr(s, column) for s in found.values())), False


async def _count_of_records(scope: TenantScope, f: RecordFilters) -> int:
    stmt = _scoped(scope, select(func.count()), CallRecord).where(*_conditions(f))
    return int(await scope.session.scalar(stmt) or 0)


INT_MIN, INT_MAX = -(2**31), 2**31 - 1
# The signed records of the parts (p: low, high, sign; seconds inclusive): the whole UTC days of the
# range from call_stats_duration (its key leads with the duration: one index range per part), and the
# edges before the first and after the last UTC midnight (e: start, end) from the records, through
# (tenant_id, start_time, duration): the index checks the duration, so only the records counted are
# read from the table. OFFSET 0 fences one index range per part whatever the statistics say.
_PARTS_SQL = """
    SELECT COALESCE(sum(n), 0) FROM (
        SELECT p.sign * d.calls AS n
        FROM unnest(CAST(:lows AS integer[]), CAST(:highs AS integer[]), CAST(:signs AS integer[])) AS p(lo, hi, sign)
        CROSS JOIN LATERAL (
            SELECT s.calls FROM call_stats_duration s
            WHERE s.tenant_id = :tenant_id AND s.duration >= p.lo AND s.duration <= p.hi
              AND s.day >= :first_day AND s.day < :last_day {day_where}
            OFFSET 0
        ) d
        UNION ALL
        SELECT p.sign AS n
        FROM unnest(CAST(:lows AS integer[]), CAST(:highs AS integer[]), CAST(:signs AS integer[])) AS p(lo, hi, sign)
        CROSS JOIN unnest(CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[])) AS e(a, b)
        CROSS JOIN LATERAL (
            SELECT 1 FROM call_records r
            WHERE r.tenant_id = :tenant_id AND r.start_time >= e.a AND r.start_time < e.b
              AND r.duration >= p.lo AND r.duration <= p.hi {record_where}
            OFFSET 0
        ) r
    ) u
"""


def _days_and_edges(
    since: datetime.datetime | None, until: datetime.datetime | None
) -> tuple[datetime.date, datetime.date, list[tuple[datetime.datetime, datetime.datetime]]]:
    """``[since, until)`` (either open: EARLIEST, LATEST) as whole UTC days ``[first, last)`` and the
    edges around them (a range holding no whole UTC day is all edge)."""
    since, until = since or EARLIEST, until or LATEST
    days = whole_utc_days(since, until)
    if days is None:
        return EARLIEST.date(), EARLIEST.date(), [(since, until)]
    first, last = days
    return first.date(), last.date(), [(a, b) for a, b in ((since, first), (last, until)) if a < b]


async def _count_by_duration(scope: TenantScope, f: RecordFilters, where: StatFilter) -> int:
    q = duration_question(f.min_duration, f.max_duration)
    total = 0
    if q.columns:
        found = await range_sums(
            scope.session, scope.tenant_id, f.since or EARLIEST, f.until or LATEST, where, columns=q.columns
        )
        total += sum(getattr(s, c) for s in found.values() for c in q.columns)
    if q.parts:
        first, last, edges = _days_and_edges(f.since, f.until)
        params: dict[str, Any] = {
            "tenant_id": scope.tenant_id,
            "lows": [INT_MIN if a is None else a for a, _, _ in q.parts],
            "highs": [INT_MAX if b is None else b for _, b, _ in q.parts],
            "signs": [sign for _, _, sign in q.parts],
            "first_day": first,
            "last_day": last,
            "starts": [a for a, _ in edges],
            "ends": [b for _, b in edges],
        }
        day_where = record_where = ""
        if f.direction is not None:
            day_where, record_where = "AND s.direction = :direction", "AND r.direction = :direction"
            params["direction"] = f.direction
        sql = _PARTS_SQL.format(day_where=day_where, record_where=record_where)
        total += int(await scope.session.scalar(text(sql), params) or 0)
    return total


async def records_page(
    scope: TenantScope, f: RecordFilters, page: int, per_page: int
) -> Page[CallRecordRead]:
    offset = (page - 1) * per_page
    if _number_candidates(f) is not None:
        return await _searched_page(scope, f, page, per_page, offset)
    total, counted = await count_records(scope, f)
    if counted and offset >= total:
        # Nothing to read (a search that matched nothing, a page past the end): the count just read
        # every candidate record, a page query would read them all again.
        return Page(data=[], meta=page_meta(page, per_page, total, 0))
    if f.from_number is None and f.to_number is None:
        # Walk an index in the page's order (the planner, with stale statistics, would rather bitmap
        # every matching record and sort them). Number searches keep bitmaps: no index orders them.
        await scope.session.execute(text("SET LOCAL enable_bitmapscan = off"))
    stmt = records_stmt(scope, f).limit(per_page).offset(offset)
    rows = (await scope.session.scalars(stmt)).all()
    return Page(data=[record_read(r) for r in rows], meta=page_meta(page, per_page, total, len(rows)))


async def _searched_page(
    scope: TenantScope, f: RecordFilters, page: int, per_page: int, offset: int
) -> Page[CallRecordRead]:
    """A long number search's page and its exact total in one statement (``count(*) OVER ()`` over the
    few records its tail lookup found): the lookup is most of the cost, and a separate count would
    run it twice. A page past the end has no row to carry the total: it is counted then."""
    stmt = records_stmt(scope, f).add_columns(func.count().over()).limit(per_page).offset(offset)
    found = (await scope.session.execute(stmt)).all()
    total = int(found[0][1]) if found else (0 if offset == 0 else await _count_of_records(scope, f))
    rows = [r[0] for r in found]
    return Page(data=[record_read(r) for r in rows], meta=page_meta(page, per_page, total, len(rows)))


async def get_record(scope: TenantScope, record_id: int) -> CallRecordRead:
    return record_read(await scope.get(CallRecord, record_id, "call record"))


async def summary(scope: TenantScope, f: RecordFilters) -> CallRecordSummary:
    """Counts by status and direction, success rate and durations: from ``call_stats`` (plus the few
    live records, by status) unless a filter has no aggregate."""
    question = stats_question(f)
    if question is None or f.status is not None:
        return await _summary_of_records(scope, f)
    where, _ = question
    by_dir = await range_sums(
        scope.session, scope.tenant_id, f.since or EARLIEST, f.until or LATEST, where, by="direction"
    )
    total = _sum(by_dir.values())
    by_status = {
        status.value: getattr(total, column)
        for status, column in STATUS_COLUMNS.items()
        if getattr(total, column)
    }
    if total.calls > total.finished:
        live = _scoped(scope, select(CallRecord.status, func.count()), CallRecord).where(
            *_conditions(f), CallRecord.status.in_(LIVE)
        )
        for status, n in (await scope.session.execute(live.group_by(CallRecord.status))).all():
            by_status[str(status)] = int(n)
    return CallRecordSummary(
        total=total.calls,
        answered=total.completed,
        success_rate=total.success_rate,
        avg_duration=total.avg_duration,
        total_duration=total.duration_sum,
        by_status=by_status,
        by_direction={str(d or "unknown"): s.calls for d, s in sorted(by_dir.items(), key=str) if s.calls},
    )


async def _summary_of_records(scope: TenantScope, f: RecordFilters) -> CallRecordSummary:
    conds = _conditions(f)
    by_status = {
        str(s): int(n)
        for s, n in (
            await scope.session.execute(
                _scoped(scope, select(CallRecord.status, func.count()), CallRecord)
                .where(*conds)
                .group_by(CallRecord.status)
            )
        ).all()
    }
    by_direction = {
        str(d or "unknown"): int(n)
        for d, n in (
            await scope.session.execute(
                _scoped(scope, select(CallRecord.direction, func.count()), CallRecord)
                .where(*conds)
                .group_by(CallRecord.direction)
            )
        ).all()
    }
    avg, total_duration = (
        await scope.session.execute(
            _scoped(
                scope,
                select(
                    func.avg(case((CallRecord.status == CallStatus.COMPLETED.value, CallRecord.duration))),
                    func.coalesce(func.sum(CallRecord.duration), 0),
                ),
                CallRecord,
            ).where(*conds)
        )
    ).one()
    answered = by_status.get(CallStatus.COMPLETED.value, 0)
    finished = sum(n for s, n in by_status.items() if s in {t.value for t in TERMINAL_STATUSES})
    return CallRecordSummary(
        total=sum(by_status.values()),
        answered=answered,
        success_rate=round(answered / finished, 4) if finished else 0.0,
        avg_duration=round(float(avg), 1) if avg is not None else 0.0,
        total_duration=int(total_duration or 0),
        by_status=by_status,
        by_direction=by_direction,
    )


async def filter_options(scope: TenantScope) -> FilterOptions:
    agents = (
        await scope.session.execute(
            _scoped(scope, select(VoiceAgent.id, VoiceAgent.name), VoiceAgent).order_by(VoiceAgent.name)
        )
    ).all()
    groups = (
        await scope.session.execute(
            _scoped(scope, select(AgentGroup.id, AgentGroup.name), AgentGroup).order_by(AgentGroup.name)
        )
    ).all()
    seen = (
        await scope.session.scalars(
            _scoped(scope, select(CallRecord.direction).distinct(), CallRecord).where(
                CallRecord.direction.is_not(None)
            )
        )
    ).all()
    return FilterOptions(
        statuses=[s.value for s in CallStatus],
        directions=sorted({*DIRECTIONS[:2], *(d for d in seen if d)}),
        dispositions=[d.value for d in Disposition],
        agents=[NamedRef(id=i, name=n) for i, n in agents],
        groups=[NamedRef(id=i, name=n) for i, n in groups],
    )
