"""Delete what each tenant's ``retention_days`` (SPEC §2.7a) no longer keeps, in small transactions.

Kinds and their age:

- ``call_records``: a record is as old as its start (``COALESCE(start_time, created_at)``, the same
  moment that files it in its ``call_stats`` bucket); its timeline rows (``call_events``, reported as
  their own kind) go with it, in the same transaction.
- ``cdrs``: ``start_time``.
- ``webhook_audit``: ``processed_at``.

Each batch is one transaction of at most ``batch`` rows of one tenant and one kind. The rows are
picked oldest first through the kind's ``(tenant_id, <time>)`` index and locked ``FOR UPDATE SKIP
LOCKED`` (a row the events consumer is writing right now is left for the next run instead of waited
for), then deleted by primary key: ``DELETE … WHERE id = ANY(ARRAY(SELECT …))`` has one plan whatever
the statistics say. A call-record batch first takes the tenant's shared aggregates lock (exactly as
the consumer does, ``hold_tenants``), then subtracts what the deleted records contributed to
``call_stats`` (``StatDeltas`` with sign -1, ``apply_deltas``) before it commits: the aggregates
always equal a rebuild from the records that remain.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from control_plane.analytics.aggregates import StatDeltas, apply_deltas, contribution, hold_tenants
from control_plane.retention.metrics import PURGED
from shared.snapshot import RetentionDays, TenantSettings

log = structlog.get_logger("control_plane.retention")
_T = TypeVar("_T")

# The kinds a report counts, in the order they are purged and printed.
KINDS = ("call_records", "call_events", "cdrs", "webhook_audit")
RECORD_SHARE = 4  # a call-record batch holds batch // RECORD_SHARE records (plus their timelines)
RETRIES = 3  # a batch that meets a lock timeout or a deadlock is tried again this many times

# (table, time column) of the kinds purged on their own.
_SIMPLE = {"cdrs": ("cdrs", "start_time"), "webhook_audit": ("webhook_audit", "processed_at")}

# Oldest first, through the (tenant_id, <time>) index; ``floor`` skips what earlier batches of this
# run already went past (their dead index entries are not walked again).
_PICK = """
    SELECT id FROM {table}
    WHERE tenant_id = :tenant_id AND {column} < :cutoff AND {column} >= :floor
    ORDER BY {column} LIMIT :batch FOR UPDATE SKIP LOCKED
"""
_DELETE_SIMPLE = "DELETE FROM {table} WHERE id = ANY(ARRAY({pick})) RETURNING {column}"
# What a deleted record contributed to call_stats (see analytics.aggregates.contribution).
_RECORD_RETURNING = (
    "session_token, start_time, created_at, agent_id, group_id, direction, status, duration, billsec"
)
_DELETE_RECORDS = "DELETE FROM call_records WHERE id = ANY(ARRAY({pick})) RETURNING " + _RECORD_RETURNING  # noqa: S608
# Records that never got a start time are as old as their creation (rare: imported rows).
_PICK_UNSTARTED = """
    SELECT id FROM call_records
    WHERE tenant_id = :tenant_id AND start_time IS NULL AND created_at < :cutoff
    ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED
"""
_DELETE_TIMELINES = """
    DELETE FROM call_events WHERE tenant_id = :tenant_id AND session_token = ANY(CAST(:tokens AS varchar[]))
"""

_COUNT_RECORDS = """
    SELECT (SELECT count(*) FROM call_records
            WHERE tenant_id = :tenant_id AND start_time < :cutoff)
         + (SELECT count(*) FROM call_records
            WHERE tenant_id = :tenant_id AND start_time IS NULL AND created_at < :cutoff)
"""
_COUNT_TIMELINES = """
    SELECT count(*) FROM call_events e
    WHERE e.tenant_id = :tenant_id AND e.session_token IN (
        SELECT session_token FROM call_records
        WHERE tenant_id = :tenant_id AND COALESCE(start_time, created_at) < :cutoff)
"""
_COUNT_SIMPLE = "SELECT count(*) FROM {table} WHERE tenant_id = :tenant_id AND {column} < :cutoff"

_FAR_PAST = datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)


@dataclass(slots=True)
class TenantPurge:
    """What one tenant's purge removed (or, dry, would remove), per kind, and its cut-offs."""

    tenant_id: int
    retention: RetentionDays
    cutoffs: dict[str, datetime.datetime]
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))


@dataclass(slots=True)
class PurgeReport:
    dry_run: bool
    now: datetime.datetime
    tenants: list[TenantPurge] = field(default_factory=list)
    batches: int = 0
    seconds: float = 0.0
    longest_transaction_s: float = 0.0
    retried: int = 0

    def totals(self) -> dict[str, int]:
        return {k: sum(t.removed[k] for t in self.tenants) for k in KINDS}

    def removed_by_tenant(self) -> dict[str, dict[str, int]]:
        """Per tenant (id as a string, JSON's keys), the kinds with rows removed."""
        return {str(t.tenant_id): {k: n for k, n in t.removed.items() if n} for t in self.tenants}

    def rows_per_second(self) -> float:
        return sum(self.totals().values()) / self.seconds if self.seconds else 0.0


def retention_of(settings: Any) -> RetentionDays:
    """A tenant's retention from its stored settings; settings an older version wrote (or that no
    longer validate) fall back to the defaults, never to purging more."""
    try:
        return msgspec.convert(settings or {}, TenantSettings, strict=False).retention_days
    except msgspec.ValidationError:
        log.warning("retention.settings_invalid", settings_keys=sorted(settings or {}))
        return RetentionDays()


def cutoffs_of(retention: RetentionDays, now: datetime.datetime) -> dict[str, datetime.datetime]:
    records = now - datetime.timedelta(days=retention.call_records)
    return {
        "call_records": records,
        "call_events": records,
        "cdrs": now - datetime.timedelta(days=retention.cdrs),
        "webhook_audit": now - datetime.timedelta(days=retention.webhook_audit),
    }


async def tenants_to_purge(engine: AsyncEngine, tenant_id: int | None = None) -> list[tuple[int, Any]]:
    async with engine.connect() as conn:
        if tenant_id is None:
            rows = await conn.execute(text("SELECT id, settings FROM tenants ORDER BY id"))
        else:
            rows = await conn.execute(
                text("SELECT id, settings FROM tenants WHERE id = :id"), {"id": tenant_id}
            )
        return [(int(r[0]), r[1]) for r in rows]


class Purger:
    """Runs the batches of one purge and keeps its report."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch: int = 2000,
        lock_timeout_ms: int = 2000,
        pause_s: float = 0.0,
        now: datetime.datetime | None = None,
        on_batch: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self.engine = engine
        self.batch = batch
        self.lock_timeout_ms = lock_timeout_ms
        self.pause_s = pause_s
        self.now = now
        self.on_batch = on_batch  # (kind, rows, seconds) after each committed batch, for measurements

    async def run(self, *, tenant_id: int | None = None, dry_run: bool = False) -> PurgeReport:
        now = self.now or datetime.datetime.now(datetime.UTC)
        report = PurgeReport(dry_run=dry_run, now=now)
        started = time.perf_counter()
        for tid, settings in await tenants_to_purge(self.engine, tenant_id):
            retention = retention_of(settings)
            tenant = TenantPurge(tid, retention, cutoffs_of(retention, now))
            report.tenants.append(tenant)
            if dry_run:
                await self._count(tenant)
            else:
                await self._purge_records(tenant, report)
                for kind in _SIMPLE:
                    await self._purge_simple(tenant, kind, report)
        report.seconds = time.perf_counter() - started
        return report

    # --- dry run ---

    async def _count(self, tenant: TenantPurge) -> None:
        async with self.engine.connect() as conn:
            params: dict[str, Any] = {"tenant_id": tenant.tenant_id}
            cut = tenant.cutoffs
            tenant.removed["call_records"] = int(
                (
                    await conn.execute(text(_COUNT_RECORDS), {**params, "cutoff": cut["call_records"]})
                ).scalar_one()
            )
            tenant.removed["call_events"] = int(
                (
                    await conn.execute(text(_COUNT_TIMELINES), {**params, "cutoff": cut["call_events"]})
                ).scalar_one()
            )
            for kind, (table, column) in _SIMPLE.items():
                sql = _COUNT_SIMPLE.format(table=table, column=column)
                tenant.removed[kind] = int(
                    (await conn.execute(text(sql), {**params, "cutoff": cut[kind]})).scalar_one()
                )

    # --- the batches ---

    async def _transaction(
        self,
        report: PurgeReport,
        work: Callable[[AsyncSession, str, dict[str, Any]], Awaitable[_T]],
        sql: str,
        params: dict[str, Any],
    ) -> tuple[_T, float]:
        """``work(session, sql, params)`` in a transaction of its own, retried after a lock timeout or
        a deadlock; returns its result and the transaction's duration."""
        for attempt in range(RETRIES + 1):
            started = time.perf_counter()
            try:
                async with AsyncSession(self.engine) as session, session.begin():
                    await session.execute(text(f"SET LOCAL lock_timeout = {int(self.lock_timeout_ms)}"))
                    result = await work(session, sql, params)
            except DBAPIError as exc:
                code = getattr(exc.orig, "sqlstate", None)
                if code not in ("55P03", "40P01") or attempt == RETRIES:  # lock_not_available, deadlock
                    raise
                report.retried += 1
                log.warning("retention.batch_retried", sqlstate=code, attempt=attempt + 1)
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            elapsed = time.perf_counter() - started
            report.batches += 1
            report.longest_transaction_s = max(report.longest_transaction_s, elapsed)
            if self.pause_s:
                await asyncio.sleep(self.pause_s)
            return result, elapsed
        raise AssertionError("unreachable")  # pragma: no cover

    async def _purge_records(self, tenant: TenantPurge, report: PurgeReport) -> None:
        cutoff = tenant.cutoffs["call_records"]
        # A record brings its timeline (about five rows a call): a quarter of the batch in records
        # keeps a transaction near ``batch`` rows in all.
        size = max(1, self.batch // RECORD_SHARE)
        params: dict[str, Any] = {"tenant_id": tenant.tenant_id, "cutoff": cutoff, "batch": size}
        pick = _PICK.format(table="call_records", column="start_time")
        floor = _FAR_PAST
        while True:
            sql = _DELETE_RECORDS.format(pick=pick)
            (rows, events), elapsed = await self._transaction(
                report, self._records_batch, sql, {**params, "floor": floor}
            )
            self._count_batch(tenant, "call_records", len(rows), elapsed)
            self._count_batch(tenant, "call_events", events, 0.0)
            if len(rows) < size:
                break
            floor = max(r.start_time for r in rows)
        unstarted = _DELETE_RECORDS.format(pick=_PICK_UNSTARTED)
        while True:
            (rows, events), elapsed = await self._transaction(report, self._records_batch, unstarted, params)
            self._count_batch(tenant, "call_records", len(rows), elapsed)
            self._count_batch(tenant, "call_events", events, 0.0)
            if len(rows) < size:
                break

    async def _records_batch(
        self, session: AsyncSession, sql: str, params: dict[str, Any]
    ) -> tuple[list[Any], int]:
        """Delete one batch of records with their timelines and take their part out of call_stats."""
        tenant_id = params["tenant_id"]
        await hold_tenants(session, [tenant_id])  # as the consumer does: a rebuild waits for us
        rows = list((await session.execute(text(sql), params)).all())
        if not rows:
            return rows, 0
        deltas = StatDeltas()
        for r in rows:
            key, values, duration = contribution(
                tenant_id=tenant_id,
                start_time=r.start_time,
                created_at=r.created_at,
                agent_id=r.agent_id,
                group_id=r.group_id,
                direction=r.direction,
                status=r.status,
                duration=r.duration,
                billsec=r.billsec,
            )
            deltas.add(key, values, duration, sign=-1)
        await apply_deltas(session, deltas)
        tokens = sorted({r.session_token for r in rows})
        events = await session.execute(text(_DELETE_TIMELINES), {"tenant_id": tenant_id, "tokens": tokens})
        return rows, int(events.rowcount or 0)  # type: ignore[attr-defined]

    async def _purge_simple(self, tenant: TenantPurge, kind: str, report: PurgeReport) -> None:
        table, column = _SIMPLE[kind]
        sql = _DELETE_SIMPLE.format(table=table, column=column, pick=_PICK.format(table=table, column=column))
        params: dict[str, Any] = {
            "tenant_id": tenant.tenant_id,
            "cutoff": tenant.cutoffs[kind],
            "batch": self.batch,
        }
        floor = _FAR_PAST

        async def batch(session: AsyncSession, statement: str, p: dict[str, Any]) -> list[Any]:
            return [r[0] for r in (await session.execute(text(statement), p)).all()]

        while True:
            times, elapsed = await self._transaction(report, batch, sql, {**params, "floor": floor})
            self._count_batch(tenant, kind, len(times), elapsed)
            if len(times) < self.batch:
                break
            floor = max(times)

    def _count_batch(self, tenant: TenantPurge, kind: str, rows: int, elapsed: float) -> None:
        tenant.removed[kind] += rows
        if rows:
            PURGED.labels(kind=kind).inc(rows)
        if self.on_batch is not None:
            self.on_batch(kind, rows, elapsed)


__all__ = ["KINDS", "PurgeReport", "Purger", "TenantPurge", "cutoffs_of", "retention_of"]
