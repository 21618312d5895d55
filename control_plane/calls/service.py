"""Reading calls: live ones, today's counts, one call's timeline, and the filtered record lists."""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from typing import Any

from litestar.exceptions import NotFoundException
from sqlalchemy import ColumnElement, Select, case, func, select

from control_plane.calls import filters
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
from control_plane.tenancy import TenantScope
from shared.enums import TERMINAL_STATUSES, CallStatus, Disposition, EventKind

# A call with no terminal event for this long is not shown as live (a lost webhook must not leave a
# call "active" forever).
ACTIVE_MAX_AGE = datetime.timedelta(hours=12)
ACTIVE_LIMIT = 1000
LIVE = [s.value for s in CallStatus if s not in TERMINAL_STATUSES]
DIRECTIONS = ("inbound", "outbound", "subscriber", "outbound-api")
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
    today = _scoped(
        scope,
        select(
            func.count(),
            func.count().filter(CallRecord.status == CallStatus.COMPLETED.value),
        ),
        CallRecord,
    ).where(CallRecord.start_time >= since, CallRecord.start_time < until)
    total, completed = (await scope.session.execute(today)).one()
    return CallStatistics(active_calls=active or 0, completed_today=completed or 0, total_today=total or 0)


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
        cond.append(CallRecord.from_number.ilike(f"%{_escape(f.from_number)}%", escape="\\"))
    if f.to_number is not None:
        cond.append(CallRecord.to_number.ilike(f"%{_escape(f.to_number)}%", escape="\\"))
    if f.since is not None:
        cond.append(CallRecord.start_time >= f.since)
    if f.until is not None:
        cond.append(CallRecord.start_time < f.until)
    if f.min_duration is not None:
        cond.append(CallRecord.duration >= f.min_duration)
    if f.max_duration is not None:
        cond.append(CallRecord.duration <= f.max_duration)
    return cond


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def records_stmt(scope: TenantScope, f: RecordFilters) -> Select[Any]:
    column = SORTS[f.sort.lstrip("-")]
    order = column.desc().nulls_last() if f.sort.startswith("-") else column.asc().nulls_last()
    return scope.select(CallRecord).where(*_conditions(f)).order_by(order, CallRecord.id.desc())


async def get_record(scope: TenantScope, record_id: int) -> CallRecordRead:
    return record_read(await scope.get(CallRecord, record_id, "call record"))


async def summary(scope: TenantScope, f: RecordFilters) -> CallRecordSummary:
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
