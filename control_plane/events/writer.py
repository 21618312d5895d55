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
    Contribution,
    StatDeltas,
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


# The columns of the timeline, audit and CDR rows, in the order their builders list them.
EVENT_COLUMNS = (
    "tenant_id",
    "event_id",
    "session_token",
    "kind",
    "occurred_at",
    "engine_id",
    "status",
    "outcome",
    "agent_id",
    "group_id",
    "rule_id",
    "attempt",
    "disposition",
    "latency_us",
    "payload",
    "decision",
)
AUDIT_COLUMNS = (
    "tenant_id",
    "event_id",
    "event_type",
    "domain",
    "session_token",
    "outcome",
    "latency_us",
    "engine_id",
    "payload",
    "processed_at",
)
CDR_COLUMNS = (
    "tenant_id",
    "event_id",
    "session_token",
    "call_id",
    "from_number",
    "to_number",
    "direction",
    "disposition",
    "start_time",
    "answer_time",
    "end_time",
    "duration_seconds",
    "billsec",
    "domain",
    "payload",
)


def _decision(event: CallEvent) -> dict[str, Any] | None:
    """What call_events.decision keeps of an event: its DecisionTrace as sent (short strings) and the
    decision's split branch, overflow step and snapshot version; None when the engine sent neither a
    trace nor an overflow step."""
    trace = event.decision
    if trace is None and event.overflow_step is None:
        return None
    kept: dict[str, Any] = {}
    if trace is not None:
        kept = {k: v for k, v in msgspec.structs.asdict(trace).items() if v}
        kept["codes"] = trace.codes  # "" (not traced) is kept: it says so
    if event.split_target is not None:
        kept["split_target"] = event.split_target[:40]
    if event.overflow_step is not None:
        kept["overflow_step"] = event.overflow_step[:40]
    if event.snapshot_version is not None:
        kept["snapshot_version"] = event.snapshot_version
    return kept


def _event_rows(event: CallEvent) -> tuple[list[Any], list[Any]]:
    """The event's timeline row and audit row (EVENT_COLUMNS, AUDIT_COLUMNS)."""
    event_id = event.event_id[:255]
    occurred = _ts(event.occurred_at)
    kind = event.kind.value
    engine = _cut(event.engine_id, 128) or None
    outcome = _cut(event.outcome, 32)
    timeline = [
        event.tenant_id,
        event_id,
        event.session_token[:255],
        kind,
        occurred,
        engine,
        _cut(event.status, 32),
        outcome,
        event.agent_id,
        event.group_id,
        event.rule_id,
        event.attempt,
        _cut(event.disposition, 16),
        event.latency_us,
        event.payload,
        _decision(event),
    ]
    audit = [
        event.tenant_id,
        event_id,
        kind,
        _cut(event.domain, 255) or None,
        event.session_token[:255] or None,
        outcome,
        event.latency_us,
        engine,
        event.payload,
        occurred,
    ]
    return timeline, audit


def _cdr_row(event: CallEvent) -> list[Any]:
    disposition = normalize_disposition(event.disposition)
    start, answer, end = event.call_start_ms, event.call_answer_ms, event.call_end_ms
    duration = event.duration if event.duration is not None else _seconds(start, end)
    billsec = event.billsec if event.billsec is not None else _seconds(answer, end)
    return [
        event.tenant_id,
        event.event_id[:255],
        event.session_token[:255],
        _cut(event.call_id, 255),
        _cut(event.from_number, 255),
        _cut(event.to_number, 255),
        _cut(event.direction, 32),
        disposition.value if disposition is not None else None,
        _ms_ts(start) or _ts(event.occurred_at),
        _ms_ts(answer),
        _ms_ts(end),
        duration,
        billsec if billsec is not None else (0 if end is not None else None),
        _cut(event.domain, 255) or None,
        event.payload,
    ]


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

    def stat(self) -> Contribution:
        """Its contribution to ``call_stats`` (row key and values) and ``call_stats_duration``."""
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
    # The timeline and the audit: only events new to the timeline move their call record. Rows go in
    # key order, so two writers inserting the same ids wait for one another in one order.
    batch.sort(key=lambda e: e.event_id)
    timeline_rows: list[list[Any]] = []
    audit_rows: list[list[Any]] = []
    for event in batch:
        timeline_row, audit_row = _event_rows(event)
        if event.session_token:
            timeline_rows.append(timeline_row)
        # The audit keeps webhooks; an outlier event (an agent ejected or back) is the engine's own word.
        if event.kind is not EventKind.OUTLIER:
            audit_rows.append(audit_row)
    fresh_ids: set[str] = set()
    if timeline_rows:
        fresh_ids = set(await _insert(session, INSERT_EVENTS_SQL, timeline_rows, now))
    audited = set(await _insert(session, INSERT_AUDIT_SQL, audit_rows, now))
    fresh: list[CallEvent] = []
    for event in batch:
        key = event.event_id[:255]
        if key in fresh_ids:
            fresh.append(event)
        if key in fresh_ids or key in audited:
            result.written += 1
            result.by_kind[event.kind.value] = result.by_kind.get(event.kind.value, 0) + 1
        else:
            result.duplicates += 1

    cdrs = [_cdr_row(e) for e in fresh if e.kind is EventKind.CDR]
    if cdrs:
        await _insert(session, INSERT_CDRS_SQL, cdrs, now)

    calls = [e for e in fresh if e.kind in RECORD_KINDS]
    if calls:
        await _merge_records(session, calls, now)
    return result


# --- set-based statements ---
#
# Rows travel as ONE parameter: a JSON array of arrays (msgspec encodes it in C, ~0.2 µs a value),
# unpacked by ``jsonb_array_elements`` and a cast per column. Binary arrays, one per column (what this
# replaced), cost psycopg ~3 µs of Python per value, most of the consumer's CPU; PostgreSQL's own
# work is the same either way. The array's order is the rows' order.

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]
_ENCODE = msgspec.json.Encoder()


def _rows(table: Table, columns: Sequence[str], param: str = "rows") -> str:
    """``SELECT <col 0>, … FROM jsonb_array_elements(%(param)s) AS r``: the JSON rows typed as the
    ``columns`` of ``table`` (a JSON ``null`` is NULL)."""
    values = []
    for i, column in enumerate(columns):
        kind = table.c[column].type.compile(dialect=_PG)
        if kind == "JSONB":
            values.append(f"NULLIF(r -> {i}, 'null') AS {column}")
        else:
            values.append(f"CAST(r ->> {i} AS {kind}) AS {column}")
    source = f"jsonb_array_elements(CAST(%({param})s AS jsonb)) AS r"
    return f"SELECT {', '.join(values)} FROM {source}"  # noqa: S608 (constant names)


def json_rows(rows: Sequence[Sequence[Any]]) -> str:
    return _ENCODE.encode(rows).decode()


async def execute_binary(session: AsyncSession, sql: str, params: dict[str, Any]) -> list[Any]:
    """Run ``sql`` (psycopg placeholders) on the session's connection, in its transaction, with binary
    parameters and results. Returns the rows, if any."""
    driver = (await (await session.connection()).get_raw_connection()).driver_connection
    assert driver is not None  # an open connection, inside the session's transaction
    async with driver.cursor(binary=True) as cursor:
        # Never a prepared statement: its generic plan, made once when the table was small, would
        # outlive the table's growth (psycopg prepares a query after its fifth run).
        await cursor.execute(sql, params, prepare=False)
        return list(await cursor.fetchall()) if cursor.description else []


def _insert_sql(table: Table, columns: Sequence[str], conflict: str, returning: str = "") -> str:
    """``INSERT … SELECT`` of JSON rows (``columns``) plus ``created_at`` = %(now)s, in the rows' order."""
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}, created_at) "  # noqa: S608 (constant names)
        f"SELECT u.*, CAST(%(now)s AS timestamptz) FROM ({_rows(table, columns)}) AS u {conflict}"
    )
    return sql + (f" RETURNING {returning}" if returning else "")


INSERT_EVENTS_SQL = _insert_sql(EVENTS, EVENT_COLUMNS, "ON CONFLICT (event_id) DO NOTHING", "event_id")
INSERT_AUDIT_SQL = _insert_sql(AUDIT, AUDIT_COLUMNS, "ON CONFLICT (event_id) DO NOTHING", "event_id")
INSERT_CDRS_SQL = _insert_sql(CDRS, CDR_COLUMNS, "ON CONFLICT DO NOTHING")


async def _insert(
    session: AsyncSession, sql: str, rows: Sequence[Sequence[Any]], now: datetime.datetime
) -> list[Any]:
    """Run one of the INSERT_*_SQL for ``rows``; returns its RETURNING column of the rows inserted."""
    found = await execute_binary(session, sql, {"rows": json_rows(rows), "now": now})
    return [row[0] for row in found]


INSERT_COLUMNS = ("tenant_id", "session_token", "created_at", "updated_at", *RECORD_FIELDS)
HELD_COLUMNS = ("id", "tenant_id", "session_token", "created_at", *RECORD_FIELDS)
# Create the records that do not exist (with the state the batch gives them, or a placeholder), lock
# the ones that do and return what they hold, in one statement and in key order (no deadlock between
# writers). Every key is one probe of the unique index on (tenant_id, session_token), made by ON
# CONFLICT itself: there is no plan to choose, so table size and statistics cannot make it slow. (A
# lookup by key, even of one key, does not have that property: on a never-analysed table the planner
# may walk the tenant's range of another index with tenant_id first.) The DO UPDATE touches only
# updated_at (the caller writes the merged state next); ``xmax = 0`` holds for the rows this statement
# inserted.
UPSERT_RECORDS_SQL = f"""
    INSERT INTO call_records ({", ".join(INSERT_COLUMNS)})
    {_rows(RECORDS, INSERT_COLUMNS)}
    ON CONFLICT (tenant_id, session_token) DO UPDATE SET updated_at = EXCLUDED.updated_at
    RETURNING xmax = 0, {", ".join(f"call_records.{c}" for c in HELD_COLUMNS)}
"""
UPDATE_COLUMNS = ("id", *RECORD_FIELDS)
# The merged state of the records, by primary key (the only index on id).
UPDATE_RECORDS_SQL = f"""
    UPDATE call_records AS r
    SET {", ".join(f"{c} = v.{c}" for c in RECORD_FIELDS)}, updated_at = CAST(%(now)s AS timestamptz)
    FROM ({_rows(RECORDS, UPDATE_COLUMNS)}) AS v
    WHERE r.id = v.id AND r.id = ANY(CAST(%(ids)s AS bigint[]))
"""  # noqa: S608

Key = tuple[int, str]


def _fold(record: RecordRow, events: list[CallEvent]) -> None:
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        apply_event(record, event)


def _values(record: RecordRow, columns: Sequence[str]) -> list[Any]:
    return [getattr(record, c) for c in columns]


async def _merge_records(session: AsyncSession, events: list[CallEvent], now: datetime.datetime) -> None:
    """Fold the events into their call records and keep ``call_stats`` with them: each record's old
    contribution out, its new one in. A call's events are folded once in the usual case: onto nothing
    for a call whose routing decision is in the batch (most likely new: the insert carries its state),
    onto what its record holds otherwise (most likely known: the insert, should it happen after all,
    carries a placeholder that is then written over like a known record)."""
    by_key: dict[Key, list[CallEvent]] = {}
    for event in events:
        by_key.setdefault((event.tenant_id, event.session_token[:255]), []).append(event)
    fresh: dict[Key, RecordRow] = {}
    rows: list[list[Any]] = []
    for key in sorted(by_key):
        record = RecordRow(tenant_id=key[0], session_token=key[1], created_at=now)
        if any(e.kind is EventKind.ROUTED for e in by_key[key]):
            _fold(record, by_key[key])
            fresh[key] = record
        rows.append([key[0], key[1], now, now, *_values(record, RECORD_FIELDS)])
    returned = await execute_binary(session, UPSERT_RECORDS_SQL, {"rows": json_rows(rows)})

    deltas = StatDeltas()
    changed: list[RecordRow] = []
    for created, *held in returned:
        record = RecordRow(**dict(zip(HELD_COLUMNS, held, strict=True)))
        key = (record.tenant_id, record.session_token)
        if created:
            made = fresh.get(key)
            if made is not None:  # inserted with its state
                deltas.add(*made.stat())
                continue
        else:  # it existed: its old contribution goes
            deltas.add(*record.stat(), sign=-1)
        _fold(record, by_key[key])
        deltas.add(*record.stat())
        changed.append(record)
    if changed:
        await execute_binary(
            session,
            UPDATE_RECORDS_SQL,
            {
                "rows": json_rows([_values(r, UPDATE_COLUMNS) for r in changed]),
                "ids": "{" + ",".join(str(r.id) for r in changed) + "}",
                "now": now,
            },
        )
    await apply_deltas(session, deltas)
