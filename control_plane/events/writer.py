"""Turn a batch of CallEvents into rows, in the caller's transaction: the call timeline (call_events),
the audit trail (webhook_audit), CDRs and the call records, the latter folded with shared.lifecycle.

Every table has a unique key (event id; tenant + session token), so writing the same events again
changes nothing: an event whose id is already in call_events is not applied to its record a second
time. Records are locked (``SELECT … FOR UPDATE``) before they are merged, so several consumers can
write at once."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.db.models import CallRecord, CallTimelineEntry, Cdr, Tenant, WebhookAudit
from shared.enums import CallStatus, EventKind
from shared.events import CallEvent
from shared.lifecycle import CallState, LifecycleEvent, advance, is_terminal, normalize_disposition

# Core tables for the bulk inserts (the ORM's bulk path costs a round trip per row with RETURNING).
EVENTS = cast(Table, CallTimelineEntry.__table__)
AUDIT = cast(Table, WebhookAudit.__table__)
CDRS = cast(Table, Cdr.__table__)
RECORDS = cast(Table, CallRecord.__table__)
RECORD_KINDS = frozenset({EventKind.ROUTED, EventKind.DIAL_STATUS, EventKind.SESSION_UPDATE, EventKind.CDR})


@dataclass(slots=True)
class WriteResult:
    written: int = 0  # events new to the timeline or the audit
    duplicates: int = 0  # events already stored
    orphans: int = 0  # events of tenants that no longer exist (dropped)
    by_kind: dict[str, int] = field(default_factory=dict)


# Plausible bounds: an event outside them is refused (poison) rather than stored or retried forever.
MAX_EPOCH_S = 4_102_444_800.0  # 2100-01-01
MAX_SECONDS = 10_000_000  # a duration of about 115 days
MAX_ID = 2**63 - 1


def problem(event: CallEvent) -> str | None:
    """Why an event that decoded still cannot be stored, or None when it can."""
    if not 0 <= event.occurred_at <= MAX_EPOCH_S:  # also false for NaN
        return "occurred_at out of range"
    for name in ("call_start_ms", "call_answer_ms", "call_end_ms"):
        value = getattr(event, name)
        if value is not None and not 0 <= value <= MAX_EPOCH_S * 1000:
            return f"{name} out of range"
    for name in ("duration", "billsec", "attempt"):
        value = getattr(event, name)
        if value is not None and not 0 <= value <= MAX_SECONDS:
            return f"{name} out of range"
    for name in ("tenant_id", "agent_id", "group_id", "rule_id", "latency_us", "snapshot_version"):
        value = getattr(event, name)
        if value is not None and not -MAX_ID <= value <= MAX_ID:
            return f"{name} out of range"
    if not event.event_id:
        return "empty event_id"
    return None


def _cut(value: str | None, size: int) -> str | None:
    return value[:size] if value is not None else None


def _ts(epoch_s: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.UTC)


def _ms_ts(ms: int | None) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC) if ms is not None else None


def _seconds(start_ms: int | None, end_ms: int | None) -> int | None:
    if start_ms is None or end_ms is None:
        return None
    return max(0, round((end_ms - start_ms) / 1000))


def lifecycle_event(event: CallEvent) -> LifecycleEvent:
    return LifecycleEvent(
        kind=event.kind,
        occurred_ms=round(event.occurred_at * 1000),
        status=event.status,
        disposition=event.disposition,
        outcome=event.outcome,
        start_ms=event.call_start_ms,
        answer_ms=event.call_answer_ms,
        end_ms=event.call_end_ms,
    )


def _event_row(event: CallEvent) -> dict[str, Any]:
    return {
        "tenant_id": event.tenant_id,
        "event_id": event.event_id[:255],
        "session_token": event.session_token[:255],
        "kind": event.kind.value,
        "occurred_at": _ts(event.occurred_at),
        "engine_id": _cut(event.engine_id, 128) or None,
        "status": _cut(event.status, 32),
        "outcome": _cut(event.outcome, 32),
        "agent_id": event.agent_id,
        "group_id": event.group_id,
        "rule_id": event.rule_id,
        "attempt": event.attempt,
        "disposition": _cut(event.disposition, 16),
        "latency_us": event.latency_us,
        "payload": event.payload,
    }


def _audit_row(event: CallEvent) -> dict[str, Any]:
    return {
        "tenant_id": event.tenant_id,
        "event_id": event.event_id[:255],
        "event_type": event.kind.value,
        "domain": _cut(event.domain, 255) or None,
        "session_token": _cut(event.session_token, 255) or None,
        "outcome": _cut(event.outcome, 32),
        "latency_us": event.latency_us,
        "engine_id": _cut(event.engine_id, 128) or None,
        "payload": event.payload,
        "processed_at": _ts(event.occurred_at),
    }


def _cdr_row(event: CallEvent) -> dict[str, Any]:
    disposition = normalize_disposition(event.disposition)
    start, answer, end = event.call_start_ms, event.call_answer_ms, event.call_end_ms
    duration = event.duration if event.duration is not None else _seconds(start, end)
    billsec = event.billsec if event.billsec is not None else _seconds(answer, end)
    return {
        "tenant_id": event.tenant_id,
        "event_id": event.event_id[:255],
        "session_token": event.session_token[:255],
        "call_id": _cut(event.call_id, 255),
        "from_number": _cut(event.from_number, 255),
        "to_number": _cut(event.to_number, 255),
        "direction": _cut(event.direction, 32),
        "disposition": disposition.value if disposition is not None else None,
        "start_time": _ms_ts(start) or _ts(event.occurred_at),
        "answer_time": _ms_ts(answer),
        "end_time": _ms_ts(end),
        "duration_seconds": duration,
        "billsec": billsec if billsec is not None else (0 if end is not None else None),
        "domain": _cut(event.domain, 255) or None,
        "payload": event.payload,
    }


def _ts_ms(moment: datetime.datetime | None) -> int | None:
    return round(moment.timestamp() * 1000) if moment is not None else None


def apply_event(record: CallRecord, event: CallEvent) -> None:
    """Fold one (new) event into its call record, in place."""
    held = CallState(
        status=CallStatus(record.status),
        start_ms=_ts_ms(record.start_time),
        answer_ms=_ts_ms(record.answer_time),
        end_ms=_ts_ms(record.end_time),
    )
    state = advance(held, lifecycle_event(event))
    assert state.status is not None
    record.status = state.status.value
    if state.start_ms != held.start_ms:
        record.start_time = _ms_ts(state.start_ms)
    if state.answer_ms != held.answer_ms:
        record.answer_time = _ms_ts(state.answer_ms)
    if state.end_ms != held.end_ms:
        record.end_time = _ms_ts(state.end_ms)

    # Who the call is: the first value seen sticks.
    record.direction = record.direction or _cut(event.direction, 32)
    record.from_number = record.from_number or _cut(event.from_number, 255)
    record.to_number = record.to_number or _cut(event.to_number, 255)
    record.domain = record.domain or _cut(event.domain, 255) or None
    record.caller_name = record.caller_name or _cut(event.caller_name, 255)
    record.call_id = record.call_id or _cut(event.call_id, 255)
    record.rule_id = record.rule_id if record.rule_id is not None else event.rule_id
    record.group_id = record.group_id if record.group_id is not None else event.group_id

    seen = _ts(event.occurred_at)
    record.last_event_at = seen if record.last_event_at is None else max(record.last_event_at, seen)

    # Which agent: the one of the latest routing attempt.
    if event.kind in (EventKind.ROUTED, EventKind.DIAL_STATUS):
        if event.attempt is not None and event.attempt >= record.attempts:
            record.attempts = event.attempt
            if event.agent_id is not None:
                record.agent_id = event.agent_id
        elif event.agent_id is not None and record.agent_id is None:
            record.agent_id = event.agent_id
        if record.attempts == 0 and event.agent_id is not None:
            record.attempts = 1

    if event.kind is EventKind.CDR:
        disposition = normalize_disposition(event.disposition)
        if disposition is not None:
            record.disposition = disposition.value
        if event.duration is not None:
            record.duration = event.duration
        if event.billsec is not None:
            record.billsec = event.billsec
    elif event.duration is not None and record.duration is None and is_terminal(state.status):
        record.duration = event.duration
    # What the carrier did not say follows from the times.
    start, answer, end = state.start_ms, state.answer_ms, state.end_ms
    if end is not None:
        if record.duration is None:
            record.duration = _seconds(start, end)
        if record.billsec is None:
            record.billsec = _seconds(answer, end) if answer is not None else 0


async def write_events(session: AsyncSession, events: Sequence[CallEvent]) -> WriteResult:
    """Store ``events`` in the session's open transaction (the caller commits)."""
    result = WriteResult()
    unique: dict[str, CallEvent] = {}
    for event in events:
        unique.setdefault(event.event_id[:255], event)
    if not unique:
        return result
    tenant_ids = {e.tenant_id for e in unique.values()}
    known = set((await session.scalars(select(Tenant.id).where(Tenant.id.in_(tenant_ids)))).all())
    batch = [e for e in unique.values() if e.tenant_id in known]
    result.orphans = len(unique) - len(batch)
    if not batch:
        return result

    # The timeline: only events new to it move their call record.
    timeline = [e for e in batch if e.session_token]
    fresh_ids: set[str] = set()
    if timeline:
        fresh_ids = set(
            (
                await session.scalars(
                    insert(EVENTS)
                    .on_conflict_do_nothing(index_elements=["event_id"])
                    .returning(EVENTS.c.event_id),
                    [_event_row(e) for e in timeline],
                )
            ).all()
        )
    audited = set(
        (
            await session.scalars(
                insert(AUDIT).on_conflict_do_nothing(index_elements=["event_id"]).returning(AUDIT.c.event_id),
                [_audit_row(e) for e in batch],
            )
        ).all()
    )
    fresh = [e for e in timeline if e.event_id[:255] in fresh_ids]
    for event in batch:
        key = event.event_id[:255]
        if key in fresh_ids or key in audited:
            result.written += 1
            result.by_kind[event.kind.value] = result.by_kind.get(event.kind.value, 0) + 1
        else:
            result.duplicates += 1

    cdrs = [e for e in fresh if e.kind is EventKind.CDR]
    if cdrs:
        await session.execute(insert(CDRS).on_conflict_do_nothing(), [_cdr_row(e) for e in cdrs])

    calls = [e for e in fresh if e.kind in RECORD_KINDS]
    if calls:
        await _merge_records(session, calls)
    return result


async def _merge_records(session: AsyncSession, events: list[CallEvent]) -> None:
    keys = sorted({(e.tenant_id, e.session_token[:255]) for e in events})
    now = datetime.datetime.now(datetime.UTC)
    # Make sure every call has a row, then lock them all in one order (no deadlock between writers).
    await session.execute(
        insert(RECORDS).on_conflict_do_nothing(index_elements=["tenant_id", "session_token"]),
        [
            {
                "tenant_id": t,
                "session_token": s,
                "status": CallStatus.RECEIVED.value,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for t, s in keys
        ],
    )
    records = (
        await session.scalars(
            select(CallRecord)
            .where(tuple_(CallRecord.tenant_id, CallRecord.session_token).in_(keys))
            .order_by(CallRecord.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).all()
    by_key = {(r.tenant_id, r.session_token): r for r in records}
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        apply_event(by_key[(event.tenant_id, event.session_token[:255])], event)
    for record in records:
        record.updated_at = now
    await session.flush()
