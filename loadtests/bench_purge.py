"""Retention purge benchmark: the purge's report on a seeded database while the events writer keeps
writing.

A fresh database on the shared PostgreSQL (schema by Base.metadata.create_all, dropped at the end),
two tenants: one keeping everything 30 days, one the defaults (365 / 365 / 90). ``--calls`` calls per
tenant (default 8,000) written through the real events writer (``write_events``, the consumer's
transaction, batches of 200 events), their starts spread evenly over the last 500 days; each call is a
routing decision, two or three session updates, a dial status and (80 %) a CDR: a record, ~5 timeline
rows, ~5 audit rows and a CDR, with their call_stats. Then, measured:

1. baseline: a writer of fresh calls (the consumer's shape: 200-event transactions, back to back) for
   ``--baseline-s`` seconds alone: its transaction latency;
2. the purge (``Purger``, batch ``--batch``, the daily job's code) with the same writer running
   meanwhile: rows removed per kind, rows/s, transactions, the longest one, and the writer's latency
   during the purge;
3. afterwards: the aggregates of both tenants equal a rebuild (``drift`` 0).

Autovacuum is off on this machine (as on the shared test server): no vacuum runs during or after.
Heavy: run it under ``flock /tmp/vlb-bench.lock``.

    .venv/bin/python -m loadtests.bench_purge [--calls 8000] [--batch 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

import control_plane.db.models  # noqa: F401
from control_plane.analytics.aggregates import drift
from control_plane.db.base import Base
from control_plane.events.writer import write_events
from control_plane.retention.purge import KINDS, Purger
from shared.enums import EventKind
from shared.events import CallEvent

K = EventKind
BASE_URL = os.environ.get("VLB_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WRITE_BATCH = 200


def call_events(rng: random.Random, tenant_id: int, token: str, start: float) -> list[CallEvent]:
    answered = rng.random() < 0.65
    end = start + rng.uniform(10, 600)
    start_ms, end_ms = round(start * 1000), round(end * 1000)
    n = 0

    def ev(kind: EventKind, at: float, **kw: object) -> CallEvent:
        nonlocal n
        n += 1
        return CallEvent(
            event_id=f"{token}:{n}",
            kind=kind,
            tenant_id=tenant_id,
            domain="bench.example",
            session_token=token,
            occurred_at=at,
            engine_id="engine-a",
            payload={"Session": token, "From": "+14155550100"},
            **kw,  # type: ignore[arg-type]
        )

    agent = rng.randrange(1, 51)
    events = [
        ev(
            K.ROUTED,
            start,
            direction="inbound",
            from_number="+14155550100",
            to_number="+15551234567",
            agent_id=agent,
            group_id=rng.randrange(1, 6),
            rule_id=1,
            attempt=1,
            outcome="routed",
        ),
        ev(K.SESSION_UPDATE, start + 1, status="ringing", call_start_ms=start_ms),
    ]
    if answered:
        events.append(
            ev(
                K.SESSION_UPDATE,
                start + 8,
                status="connected",
                call_start_ms=start_ms,
                call_answer_ms=start_ms + 8000,
            )
        )
    final = "completed" if answered else rng.choice(["busy", "no-answer", "failed"])
    events.append(ev(K.DIAL_STATUS, end, status=final, outcome="ended", agent_id=agent, attempt=1))
    if rng.random() < 0.8:
        events.append(
            ev(
                K.CDR,
                end + 1,
                disposition="ANSWERED" if answered else "BUSY",
                call_start_ms=start_ms,
                call_answer_ms=start_ms + 8000 if answered else None,
                call_end_ms=end_ms,
                call_id=f"cid-{token}",
            )
        )
    return events


async def write(db: AsyncEngine, events: list[CallEvent]) -> list[float]:
    """Write in the consumer's transactions; returns each transaction's seconds."""
    took = []
    for i in range(0, len(events), WRITE_BATCH):
        started = time.perf_counter()
        async with AsyncSession(db) as session, session.begin():
            await write_events(session, events[i : i + WRITE_BATCH])
        took.append(time.perf_counter() - started)
    return took


async def live_writer(db: AsyncEngine, tenants: list[int], stop: asyncio.Event, tag: str) -> list[float]:
    rng = random.Random(tag)
    took: list[float] = []
    n = 0
    while not stop.is_set():
        now = time.time()
        events: list[CallEvent] = []
        while len(events) < WRITE_BATCH:
            n += 1
            events += call_events(rng, rng.choice(tenants), f"{tag}-{n}", now - rng.uniform(0, 600))
        took += await write(db, events)
    return took


def describe(took: list[float]) -> str:
    if not took:
        return "no transactions"
    q = statistics.quantiles(took, n=100, method="inclusive") if len(took) > 1 else [took[0]] * 99
    return (
        f"{len(took)} transactions of {WRITE_BATCH} events, p50 {q[49] * 1000:.1f} ms, "
        f"p95 {q[94] * 1000:.1f} ms, max {max(took) * 1000:.1f} ms"
    )


async def counts(db: AsyncEngine) -> dict[str, int]:
    async with db.connect() as conn:
        return {
            t: int((await conn.scalar(text(f"SELECT count(*) FROM {t}"))) or 0)
            for t in ("call_records", "call_events", "cdrs", "webhook_audit", "call_stats")
        }


async def main(args: argparse.Namespace) -> None:
    name = f"vlb_bench_purge_{os.getpid()}"
    admin = make_url(BASE_URL).set(drivername="postgresql", database="postgres").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(BASE_URL).set(database=name).render_as_string(hide_password=False)
    try:
        sync = create_engine(url)
        with sync.begin() as conn:
            Base.metadata.create_all(conn)
        sync.dispose()
        db = create_async_engine(url, pool_size=4)
        tenants = []
        async with db.begin() as conn:
            for tenant_name, settings in (
                (
                    "keeps 30 days",
                    '{"retention_days": {"call_records": 30, "cdrs": 30, "webhook_audit": 30}}',
                ),
                ("defaults", "{}"),
            ):
                found = await conn.execute(
                    text(
                        "INSERT INTO tenants (name, settings, config_version, created_at, updated_at) "
                        "VALUES (:n, CAST(:s AS jsonb), 0, now(), now()) RETURNING id"
                    ),
                    {"n": tenant_name, "s": settings},
                )
                tenants.append(int(found.scalar_one()))

        rng = random.Random(1)
        now = time.time()
        started = time.perf_counter()
        events: list[CallEvent] = []
        for tenant_id in tenants:
            for n in range(args.calls):
                age_s = (n + rng.random()) / args.calls * 500 * 86_400
                events += call_events(rng, tenant_id, f"seed-{tenant_id}-{n}", now - age_s)
        rng.shuffle(events)  # calls interleaved, as engines report them
        await write(db, events)
        seeded = await counts(db)
        print(
            f"seeded {sum(v for k, v in seeded.items() if k != 'call_stats'):,} rows "
            f"({', '.join(f'{k} {v:,}' for k, v in seeded.items())}) in {time.perf_counter() - started:.0f} s"
        )
        async with db.connect() as conn:
            await conn.execute(text("ANALYZE"))
            await conn.commit()

        stop = asyncio.Event()
        writer = asyncio.create_task(live_writer(db, tenants, stop, "base"))
        await asyncio.sleep(args.baseline_s)
        stop.set()
        baseline = await writer
        print(f"writer alone:        {describe(baseline)}")

        stop = asyncio.Event()
        writer = asyncio.create_task(live_writer(db, tenants, stop, "during"))
        batches: list[float] = []
        longest: dict[str, float] = {}

        def on_batch(kind: str, _rows: int, seconds: float) -> None:
            if seconds:
                batches.append(seconds)
                longest[kind] = max(longest.get(kind, 0.0), seconds)

        purger = Purger(db, batch=args.batch, on_batch=on_batch)
        report = await purger.run()
        stop.set()
        during = await writer
        totals = report.totals()
        print(
            f"purge: removed {', '.join(f'{k} {totals[k]:,}' for k in KINDS)} "
            f"({sum(totals.values()):,} rows) in {report.seconds:.2f} s = {report.rows_per_second():,.0f} rows/s; "
            f"{report.batches} transactions of up to {args.batch} rows, longest "
            f"{report.longest_transaction_s * 1000:.0f} ms, median "
            f"{statistics.median(batches) * 1000 if batches else 0:.0f} ms, retried {report.retried}"
        )
        print(
            "  longest transaction by kind: "
            + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in longest.items())
        )
        for tenant in report.tenants:
            print(f"  tenant {tenant.tenant_id} keeps {tenant.retention}: {tenant.removed}")
        print(f"writer during purge: {describe(during)}")
        async with AsyncSession(db) as session, session.begin():
            drifted = [await drift(session, t) for t in tenants]
        print(f"aggregates vs a rebuild after the purge: drift {drifted} (0 = equal)")
        await db.dispose()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=8000, help="seeded calls per tenant")
    parser.add_argument("--batch", type=int, default=2000, help="rows per purge transaction")
    parser.add_argument("--baseline-s", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))

__all__ = ["call_events", "main"]
