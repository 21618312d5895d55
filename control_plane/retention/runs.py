"""One purge at a time across every control plane, and one scheduled run per day.

A purge holds a session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own for
as long as it runs: a second purge started meanwhile, on this replica or another, does not get the
lock and does nothing. The lock dies with its connection, so a control plane killed mid-run frees it
at once. Each run leaves a ``purge_runs`` row; a scheduled run claims the row of its day
(``scheduled_for`` is unique) unless that row is ``done``, so a day's purge completes once, and a run
that failed or whose process died (its row left ``running`` or ``failed`` with the lock free) is
taken over by the next replica to check, or by the same one after a restart.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass

import msgspec
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_plane.retention.metrics import RUNS
from control_plane.retention.purge import Purger, PurgeReport

log = structlog.get_logger("control_plane.retention")

# "VLBPURGE": the advisory lock every purge holds while it runs.
PURGE_LOCK_KEY = 0x564C_4250_5552_4745

_CLAIM_DAY = """
    INSERT INTO purge_runs (scheduled_for, trigger, status, attempts, host, started_at)
    VALUES (:day, 'schedule', 'running', 1, :host, :now)
    ON CONFLICT (scheduled_for) DO UPDATE
        SET status = 'running', attempts = purge_runs.attempts + 1, host = EXCLUDED.host,
            started_at = EXCLUDED.started_at, finished_at = NULL, error = NULL
        WHERE purge_runs.status <> 'done'
    RETURNING id
"""
_CLAIM_MANUAL = """
    INSERT INTO purge_runs (scheduled_for, trigger, status, attempts, host, started_at)
    VALUES (NULL, 'manual', 'running', 1, :host, :now) RETURNING id
"""
_FINISH = """
    UPDATE purge_runs SET status = :status, finished_at = :now, removed = CAST(:removed AS jsonb),
        error = :error
    WHERE id = :id
"""


async def _day_done(conn: AsyncConnection, day: datetime.date) -> bool:
    found = await conn.execute(
        text("SELECT 1 FROM purge_runs WHERE scheduled_for = :day AND status = 'done'"), {"day": day}
    )
    return found.first() is not None


def host_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


@dataclass(slots=True)
class RunOutcome:
    """``ran``: this call did the purge (``report`` and ``run_id`` set); otherwise ``reason`` says why
    not: ``busy`` (another purge holds the lock) or ``already`` (the day's run is done)."""

    ran: bool
    reason: str = ""
    run_id: int | None = None
    report: PurgeReport | None = None


async def _autocommit(engine: AsyncEngine) -> AsyncConnection:
    conn = await engine.connect()
    return await conn.execution_options(isolation_level="AUTOCOMMIT")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def run_purge(
    engine: AsyncEngine,
    purger: Purger,
    *,
    day: datetime.date | None = None,
    tenant_id: int | None = None,
) -> RunOutcome:
    """Run a purge if no other runs now (and, for the scheduled run of ``day``, if that day's is not
    done yet), record it in ``purge_runs`` and log its audit line."""
    conn = await _autocommit(engine)
    try:
        if day is not None and await _day_done(conn, day):  # the usual answer: no lock needed
            RUNS.labels(outcome="already").inc()
            return RunOutcome(ran=False, reason="already")
        got = bool(
            (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": PURGE_LOCK_KEY})).scalar()
        )
        if not got:
            RUNS.labels(outcome="busy").inc()
            log.info("retention.purge_skipped", reason="busy", scheduled_for=str(day) if day else None)
            return RunOutcome(ran=False, reason="busy")
        try:
            host = host_id()
            trigger = "schedule" if day is not None else "manual"
            if day is not None:
                run_id = (
                    await conn.execute(text(_CLAIM_DAY), {"day": day, "host": host, "now": _now()})
                ).scalar()
                if run_id is None:
                    RUNS.labels(outcome="already").inc()
                    return RunOutcome(ran=False, reason="already")
            else:
                run_id = (await conn.execute(text(_CLAIM_MANUAL), {"host": host, "now": _now()})).scalar_one()
            try:
                report = await purger.run(tenant_id=tenant_id)
            except BaseException as exc:
                await conn.execute(
                    text(_FINISH),
                    {
                        "status": "failed",
                        "now": _now(),
                        "removed": None,
                        "error": repr(exc)[:2000],
                        "id": run_id,
                    },
                )
                RUNS.labels(outcome="failed").inc()
                log.error("retention.purge_failed", run_id=run_id, trigger=trigger, error=repr(exc))
                raise
            removed = report.removed_by_tenant()
            await conn.execute(
                text(_FINISH),
                {
                    "status": "done",
                    "now": _now(),
                    "removed": msgspec.json.encode(removed).decode(),
                    "error": None,
                    "id": run_id,
                },
            )
            RUNS.labels(outcome="done").inc()
            # The audit line of the run: what went, per tenant and kind (a logger looked up now, not a
            # cached one, so the line follows the logging configuration of the moment).
            structlog.get_logger("control_plane.retention").info(
                "retention.purged",
                run_id=run_id,
                trigger=trigger,
                scheduled_for=str(day) if day else None,
                tenant=tenant_id,
                removed=removed,
                totals=report.totals(),
                seconds=round(report.seconds, 3),
                batches=report.batches,
                longest_transaction_ms=round(report.longest_transaction_s * 1000, 1),
                retried=report.retried,
            )
            return RunOutcome(ran=True, run_id=int(run_id), report=report)
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PURGE_LOCK_KEY})
    finally:
        await conn.close()


__all__ = ["PURGE_LOCK_KEY", "RunOutcome", "host_id", "run_purge"]
