"""What the consumer's aggregate upkeep (``aggregates.apply_deltas``) costs per batch, with and without
one table's upsert (``--table``: ``call_stats_day``, or ``call_stats_duration``): the same batches of deltas (a consumer batch's worth of records: 20
agents in 4 groups, 3 directions, over the current and previous hour) applied in turn, each in its own
transaction, in a throwaway database; wall ms per batch (p50/p99) and PostgreSQL CPU ms per batch.

    flock /tmp/vlb-bench.lock .venv/bin/python -m loadtests.bench_stats_upkeep [--batches 300] [--table T]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import random
import statistics
import time
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from control_plane.analytics import aggregates
from control_plane.db.migrate import upgrade
from loadtests.bench_analytics import DEFAULT_ADMIN_URL, create_database, drop_database
from loadtests.bench_lifecycle import backend_cpu_s, backend_pids


def batch(rng: random.Random, tenant_id: int, records: int) -> aggregates.StatDeltas:
    """A batch's deltas: each record's old contribution out (a live call) and its new one in."""
    deltas = aggregates.StatDeltas()
    now = datetime.datetime.now(datetime.UTC)
    for _ in range(records):
        start = now - datetime.timedelta(seconds=rng.uniform(0, 7200))
        agent = rng.randint(1, 20)
        common = {
            "tenant_id": tenant_id,
            "start_time": start,
            "created_at": start,
            "agent_id": agent,
            "group_id": 1 + agent % 4,
            "direction": rng.choice(["inbound", "outbound", "outbound-api"]),
        }
        old = aggregates.contribution(**common, status="connected", duration=None, billsec=None)
        duration = rng.randint(5, 900)
        new = aggregates.contribution(**common, status="completed", duration=duration, billsec=duration - 2)
        deltas.add(*old, sign=-1)
        deltas.add(*new)
        fresh = aggregates.contribution(**common, status="ringing", duration=None, billsec=None)
        deltas.add(*fresh)
    return deltas


# The StatDeltas method that lists each table's rows (emptied to leave the table out).
ROWS_OF = {"call_stats_day": "per_day", "call_stats_duration": "per_duration"}


async def run(
    db: AsyncEngine, url: str, name: str, tenant_id: int, batches: int, records: int, table: str
) -> None:
    rng = random.Random(1)
    work = [batch(rng, tenant_id, records) for _ in range(batches)]
    method = ROWS_OF[table]
    original = getattr(aggregates.StatDeltas, method)
    for label, with_day in (
        (f"without {table}", False),
        (f"with {table}", True),
        ("without again", False),
        ("with again", True),
    ):
        setattr(aggregates.StatDeltas, method, original if with_day else (lambda self: []))
        async with db.connect() as conn:
            await conn.execute(text("SELECT 1"))
        pids = await backend_pids(url, name)
        cpu = backend_cpu_s(pids)
        samples = []
        for deltas in work:
            started = time.perf_counter()
            async with AsyncSession(db) as session, session.begin():
                await aggregates.hold_tenants(session, [tenant_id])
                await aggregates.apply_deltas(session, deltas)
            samples.append((time.perf_counter() - started) * 1000)
        pg_ms = (backend_cpu_s(pids) - cpu) * 1000 / batches
        samples.sort()
        print(
            f"{label:32} batches {batches} x {records} records: p50 {statistics.median(samples):6.2f} ms"
            f"  p99 {samples[int(0.99 * (len(samples) - 1))]:6.2f} ms  pg cpu {pg_ms:5.2f} ms/batch"
            f"  load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    setattr(aggregates.StatDeltas, method, original)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--records", type=int, default=150, help="records changed per batch")
    parser.add_argument(
        "--table", choices=sorted(ROWS_OF), default="call_stats_day", help="the upsert toggled"
    )
    args = parser.parse_args(argv)
    admin_url = os.environ.get("VLB_DATABASE_URL", DEFAULT_ADMIN_URL)
    name = f"vlb_bench_{uuid.uuid4().hex[:8]}"
    url = asyncio.run(create_database(admin_url, name))
    try:
        upgrade(url)

        async def go() -> None:
            db = create_async_engine(url, pool_size=1, max_overflow=0)
            async with db.begin() as conn:
                tenant_id = (
                    await conn.execute(
                        text(
                            "INSERT INTO tenants (name, settings, created_at, updated_at) "
                            "VALUES ('bench', '{}', now(), now()) RETURNING id"
                        )
                    )
                ).scalar_one()
            await run(db, url, name, int(tenant_id), args.batches, args.records, args.table)
            await db.dispose()

        asyncio.run(go())
    finally:
        asyncio.run(drop_database(admin_url, name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
