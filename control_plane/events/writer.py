"""Turn a batch of CallEvents into rows, in the caller's transaction: the call timeline (call_events),
the audit trail (webhook_audit), CDRs, the call records (folded with shared.lifecycle) and the
analytics aggregates (call_stats, kept with control_plane.analytics.aggregates).

Every table has a unique key (event id; tenant + session token), so writing the same events again
changes nothing: an event whose id is already in call_events is not applied to its record a second
time. Records are locked (by ``INSERT … ON CONFLICT … DO UPDATE``, in key order) before they are
merged, so several consumers can write at once.

Built to stay fast at millions of records whatever the planner statistics say: every statement is
one set-based round trip and none has a plan that statistics can spoil. Records are found by the
``ON CONFLICT`` probe of their unique index and written back by primary key; inserts and updates
send one array per column (``INSERT … SELECT * FROM unnest(…)``, ``UPDATE … FROM unnest(…)``)
instead of a row, let alone an ORM object, per event. docs/architecture.md "Call records" says why
each statement is shaped as it is."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.analytics.aggregates import (
    StatDeltas,
    StatKey,
    apply_deltas,
    contribution,
    hold_tenants,
)
from control_plane.db.models import CallRecord, CallTimelineEntry, Cdr, WebhookAudit
from shared.enums import CallStatus, EventKind
from shared.events import CallEvent
from shared.lifecycle import CallState, LifecycleEvent, advance, is_terminal, normalize_disposition

EVENTS = cast(Table, CallTimelineEntry.__table__)
AUDIT = cast(Table, WebhookAudit.__table__)
CDRS = cast(Table, Cdr.__table__)
RECORDS = cast(Table, CallRecord.__table__)
RECORD_KINDS = frozenset({EventKind.ROUTED, EventKind.DIAL_STATUS, EventKind.SESSION_UPDATE, EventKind.CDR})
_JSON = msgspec.json.Encoder()


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


def _json(payload: dict[str, Any] | None) -> str | None:
    return _JSON.encode(payload).decode() if payload is not None else None


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
        "payload": _json(event.payload),
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
        "payload": _json(event.payload),
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
        "payload": _json(event.payload),
    }


def _ts_ms(moment: datetime.datetime | None) -> int | None:
    return round(moment.timestamp() * 1000) if moment is not None else None


# What the writer reads, folds and writes back of a call record (besides its key and created_at).
RECORD_FIELDS = (
    "direction",
    "from_number",
    "to_number",
    "caller_name",
    "domain",
    "agent_id",
    "group_id",
    "rule_id",
    "split_target",
    "status",
    "attempts",
    "start_time",
    "answer_time",
    "end_time",
    "duration",
    "billsec",
    "disposition",
    "call_id",
    "last_event_at",
)


@dataclass(slots=True)
class RecordRow:
    """A call record as the writer folds it: the columns of ``call_records`` it owns."""

    tenant_id: int
    session_token: str
    created_at: datetime.datetime
    id: int | None = None  # None until the row exists
    direction: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    caller_name: str | None = None
    domain: str | None = None
    agent_id: int | None = None
    group_id: int | None = None
    rule_id: int | None = None
    split_target: str | None = None
    status: str = CallStatus.RECEIVED.value
    attempts: int = 0
    start_time: datetime.datetime | None = None
    answer_time: datetime.datetime | None = None
    end_time: datetime.datetime | None = None
    duration: int | None = None
    billsec: int | None = None
    disposition: str | None = None
    call_id: str | None = None
    last_event_at: datetime.datetime | None = None
    state: CallState | None = None  # status and times as advance() sees them, once folding began

    def stat(self) -> tuple[StatKey, tuple[int, ...]]:
        """Its contribution to ``call_stats`` (row key and values)."""
        return contribution(
            tenant_id=self.tenant_id,
            start_time=self.start_time,
            created_at=self.created_at,
            agent_id=self.agent_id,
            group_id=self.group_id,
            direction=self.direction,
            status=self.status,
            duration=self.duration,
            billsec=self.billsec,
        )


def apply_event(record: RecordRow, event: CallEvent) -> None:
    """Fold one (new) event into its call record, in place."""
    held = record.state
    if held is None:
        held = CallState(
            status=CallStatus(record.status),
            start_ms=_ts_ms(record.start_time),
            answer_ms=_ts_ms(record.answer_time),
            end_ms=_ts_ms(record.end_time),
        )
    state = record.state = advance(held, lifecycle_event(event))
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
    record.split_target = record.split_target or _cut(event.split_target, 40)

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
    tenant_ids = sorted({e.tenant_id for e in unique.values()})
    known = set(
        (
            await session.scalars(
                text("SELECT id FROM tenants WHERE id = ANY(CAST(:ids AS bigint[]))"), {"ids": tenant_ids}
            )
        ).all()
    )
    batch = [e for e in unique.values() if e.tenant_id in known]
    result.orphans = len(unique) - len(batch)
    if not batch:
        return result
    # Before any record is read: a rebuild of these tenants' aggregates waits for this transaction.
    await hold_tenants(session, known)

    now = datetime.datetime.now(datetime.UTC)
    # The timeline: only events new to it move their call record. Rows go in key order, so two
    # writers inserting the same ids wait for one another in one order.
    timeline = sorted((e for e in batch if e.session_token), key=lambda e: e.event_id)
    fresh_ids: set[str] = set()
    if timeline:
        rows = [_event_row(e) for e in timeline]
        fresh_ids = set(
            await _insert(
                session, EVENTS, rows, "ON CONFLICT (event_id) DO NOTHING", "event_id", created_at=now
            )
        )
    # The audit keeps webhooks; an outlier event (an agent ejected or back) is the engine's own word.
    audit = [
        _audit_row(e) for e in sorted(batch, key=lambda e: e.event_id) if e.kind is not EventKind.OUTLIER
    ]
    audited = set(
        await _insert(session, AUDIT, audit, "ON CONFLICT (event_id) DO NOTHING", "event_id", created_at=now)
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
        await _insert(session, CDRS, [_cdr_row(e) for e in cdrs], "ON CONFLICT DO NOTHING", created_at=now)

    calls = [e for e in fresh if e.kind in RECORD_KINDS]
    if calls:
        await _merge_records(session, calls, now)
    return result


# --- set-based statements ---

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def _array_type(table: Table, column: str) -> str:
    return f"{table.c[column].type.compile(dialect=_PG)}[]"


def _unnest(table: Table, columns: Sequence[str]) -> str:
    """``unnest(CAST(%(a)b AS T[]), …)`` over ``columns`` of ``table``: one bound array per column."""
    return "unnest(" + ", ".join(f"CAST(%({c})b AS {_array_type(table, c)})" for c in columns) + ")"


async def execute_binary(session: AsyncSession, sql: str, params: dict[str, Any]) -> list[Any]:
    """Run ``sql`` (psycopg placeholders) on the session's connection, in its transaction, with binary
    parameters: an array travels as one binary value (as text, psycopg would escape every element in
    Python, which cost more than everything else the writer does). Returns the rows, if any."""
    driver = (await (await session.connection()).get_raw_connection()).driver_connection
    assert driver is not None  # an open connection, inside the session's transaction
    async with driver.cursor(binary=True) as cursor:
        # Never a prepared statement: its generic plan, made once when the table was small, would
        # outlive the table's growth (psycopg prepares a query after its fifth run).
        await cursor.execute(sql, params, prepare=False)
        return list(await cursor.fetchall()) if cursor.description else []


async def _insert(
    session: AsyncSession,
    table: Table,
    rows: Sequence[dict[str, Any]],
    conflict: str,
    returning: str = "",
    **constants: Any,
) -> list[Any]:
    """One ``INSERT … SELECT … FROM unnest(…)`` of ``rows`` (dicts with the same keys) in their order,
    ``constants`` the same for every row; returns the ``returning`` column of the rows it inserted."""
    columns = list(rows[0])
    values = ["u.*", *(f"CAST(%({c})b AS {table.c[c].type.compile(dialect=_PG)})" for c in constants)]
    sql = (
        f"INSERT INTO {table.name} ({', '.join([*columns, *constants])}) "  # noqa: S608
        f"SELECT {', '.join(values)} FROM {_unnest(table, columns)} AS u {conflict}"
    )
    if returning:
        sql += f" RETURNING {returning}"
    params = {c: [row[c] for row in rows] for c in columns}
    rows = await execute_binary(session, sql, {**params, **constants})
    return [row[0] for row in rows]


INSERT_COLUMNS = ("tenant_id", "session_token", "created_at", "updated_at", *RECORD_FIELDS)
HELD_COLUMNS = ("id", "tenant_id", "session_token", "created_at", *RECORD_FIELDS)
# Create the records that do not exist (with the state their events give them), lock the ones that
# do and return what they hold, in one statement and in key order (no deadlock between writers).
# Every key is one probe of the unique index on (tenant_id, session_token), made by ON CONFLICT
# itself: there is no plan to choose, so table size and statistics cannot make it slow. The DO
# UPDATE touches only updated_at (the caller writes the merged state next); ``xmax = 0`` holds for
# the rows this statement inserted.
UPSERT_RECORDS_SQL = f"""
    INSERT INTO call_records ({", ".join(INSERT_COLUMNS)})
    SELECT * FROM {_unnest(RECORDS, INSERT_COLUMNS)}
    ON CONFLICT (tenant_id, session_token) DO UPDATE SET updated_at = EXCLUDED.updated_at
    RETURNING xmax = 0, {", ".join(f"call_records.{c}" for c in HELD_COLUMNS)}
"""  # noqa: S608 (constant column names, here and below)
UPDATE_COLUMNS = ("id", *RECORD_FIELDS)
# The merged state of the records that existed, by primary key (the only index on id).
UPDATE_RECORDS_SQL = f"""
    UPDATE call_records AS r
    SET {", ".join(f"{c} = v.{c}" for c in RECORD_FIELDS)}
    FROM {_unnest(RECORDS, UPDATE_COLUMNS)} AS v({", ".join(UPDATE_COLUMNS)})
    WHERE r.id = v.id AND r.id = ANY(CAST(%(id)b AS bigint[]))
"""  # noqa: S608

Key = tuple[int, str]


def _fold(record: RecordRow, events: list[CallEvent]) -> None:
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        apply_event(record, event)


def _params(records: Sequence[RecordRow], columns: Sequence[str]) -> dict[str, Any]:
    return {c: [getattr(r, c) for r in records] for c in columns}


async def _merge_records(session: AsyncSession, events: list[CallEvent], now: datetime.datetime) -> None:
    """Fold the events into their call records and keep ``call_stats`` with them: each record's old
    contribution out, its new one in."""
    by_key: dict[Key, list[CallEvent]] = {}
    for event in events:
        by_key.setdefault((event.tenant_id, event.session_token[:255]), []).append(event)
    # Each call as its events alone make it: what a call seen for the first time is inserted as.
    fresh: dict[Key, RecordRow] = {}
    for key in sorted(by_key):
        record = fresh[key] = RecordRow(tenant_id=key[0], session_token=key[1], created_at=now)
        _fold(record, by_key[key])
    params = _params(list(fresh.values()), ("tenant_id", "session_token", "created_at", *RECORD_FIELDS))
    params["updated_at"] = [now] * len(fresh)
    rows = await execute_binary(session, UPSERT_RECORDS_SQL, params)

    deltas = StatDeltas()
    changed: list[RecordRow] = []
    for created, *held in rows:
        if created:
            deltas.add(*fresh[(held[1], held[2])].stat())
            continue
        record = RecordRow(**dict(zip(HELD_COLUMNS, held, strict=True)))
        deltas.add(*record.stat(), sign=-1)
        _fold(record, by_key[(record.tenant_id, record.session_token)])
        deltas.add(*record.stat())
        changed.append(record)
    if changed:
        await execute_binary(session, UPDATE_RECORDS_SQL, _params(changed, UPDATE_COLUMNS))
    await apply_deltas(session, deltas)
