"""Events-consumer benchmark: how fast the control plane turns engine events into call records, CDRs,
timeline, audit rows and the analytics aggregates (call_stats), at 0, 250k, 500k and 1M existing call
records, with stale planner statistics and after an ANALYZE.

What runs: the real consumer (control_plane.events.consumer.EventConsumer, in a subprocess of its own,
as ``python -m loadtests.bench_lifecycle --consume``) against its own nats-server (JetStream, a temp
store) and a fresh database on the shared PostgreSQL (created here from ``VLB_DATABASE_URL``'s server,
schema by Base.metadata.create_all, dropped at the end).

What it is fed, per measurement: ``--calls`` new calls (default 10,000) of one tenant, as an engine
reports them: the routing decision, ~3 session updates (new, ringing, connected + the ending one for
an answered call), the <Dial action> status and the CDR; 35 % are not answered (busy, no answer,
failed, canceled), 15 % first ring an agent who does not answer and move to another (a second
dial-status). Calls start at ``--rate`` per second and last 10 to 120 s, and every event is published at
its own time (in messages of up to 64 events of one subject, flushed every 50 ms, as the engine
publishes), so one transaction holds the starts of some calls and the ends of others: most records
are created by one transaction and changed by later ones, as in production. 50 agents, 5 groups,
two directions. The stream is loaded first, then the consumer is started and timed from the moment its
durable consumer exists until nothing is pending or unacknowledged.

Sizes: the tenant's table is grown to each size with one ``INSERT … SELECT … generate_series`` per
250k records (30 days of calls, random session tokens, realistic columns), followed by a rebuild of
the aggregates (the same code as ``vlb rebuild-aggregates``). Two databases, two lines:
  stale     ANALYZE once, when the database holds only the first measurement's 10k calls (a new
            install after a little traffic), never again: the planner's statistics describe a table
            100 times smaller than the one it plans for (this machine's PostgreSQL runs with
            autovacuum off; production databases lag behind bulk growth too);
  analyzed  ANALYZE after every preload and before every measurement.
Prints events/s, CPU µs per event (the consumer process; its PostgreSQL backends), and the plan of the
call_records statements at the last size. Heavy: run it under ``flock /tmp/vlb-bench.lock``.

    .venv/bin/python -m loadtests.bench_consumer [--sizes 0 250000 500000 1000000] [--calls 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from control_plane.settings import ControlPlaneSettings
from loadtests.bench_engine import VENV_BIN, free_port, group_cpu_s, nats_server_argv, process, wait_port
from loadtests.bench_lifecycle import (
    DEFAULT_ADMIN_URL,
    DURABLE,
    STREAM,
    SUBJECTS,
    backend_cpu_s,
    backend_pids,
    create_database,
    drop_database,
    wait_drained,
)
from shared.enums import EventKind
from shared.events import MAX_EVENTS_PER_MESSAGE, CallEvent, encode_events, event_subject

K = EventKind
DOMAIN = "bench.example"
PRELOAD_CHUNK = 250_000
FLUSH_S = 0.05  # how long the engine's publisher lets a message fill


def calls_events(tenant_id: int, calls: int, rate: float, seed: int) -> list[CallEvent]:
    """The events of ``calls`` new calls in the order an engine publishes them (see the module doc)."""
    rng = random.Random(seed)
    prefix = uuid.uuid4().hex[:12]
    t_begin = time.time() - calls / rate - 130
    events: list[CallEvent] = []
    for n in range(calls):
        token = f"{prefix}{n:020x}"
        t0 = t_begin + n / rate
        agent, group = 1 + rng.randrange(50), 1 + rng.randrange(5)
        direction = "outbound" if rng.random() < 0.2 else "inbound"
        numbers = {"from_number": f"+1415555{rng.randrange(10000):04d}", "to_number": "+15551234567"}
        end = t0 + rng.uniform(10, 120)
        answered = rng.random() < 0.65
        seq = 0

        def ev(kind: EventKind, at: float, **kw: object) -> CallEvent:
            nonlocal seq
            seq += 1
            return CallEvent(
                event_id=f"{tenant_id}:{token}:{seq}",  # noqa: B023 (used within the iteration)
                kind=kind,
                tenant_id=tenant_id,
                domain=DOMAIN,
                session_token=token,  # noqa: B023
                occurred_at=at,
                engine_id="bench",
                snapshot_version=1,
                payload={"Session": token, "Domain": DOMAIN, "status": kind.value},  # noqa: B023
                **kw,  # type: ignore[arg-type]
            )

        start_ms = round(t0 * 1000)
        events.append(
            ev(
                K.ROUTED,
                t0 + 0.002,
                direction=direction,
                caller_name="Bench Caller",
                rule_id=1,
                group_id=group,
                agent_id=agent,
                attempt=1,
                outcome="routed",
                latency_us=180,
                **numbers,
            )
        )
        events.append(
            ev(
                K.SESSION_UPDATE,
                t0 + 0.05,
                status="new",
                direction=direction,
                call_start_ms=start_ms,
                outcome="recorded",
                **numbers,
            )
        )
        events.append(
            ev(
                K.SESSION_UPDATE,
                t0 + 2,
                status="ringing",
                direction=direction,
                call_start_ms=start_ms,
                outcome="recorded",
                **numbers,
            )
        )
        attempt = 1
        if rng.random() < 0.15:  # the first agent does not answer: the engine dials another
            agent, attempt = 1 + rng.randrange(50), 2
            events.append(
                ev(
                    K.DIAL_STATUS,
                    t0 + 8,
                    status="no-answer",
                    outcome="routed",
                    agent_id=agent,
                    attempt=attempt,
                )
            )
        end_ms = round(end * 1000)
        if answered:
            answer_ms = start_ms + 9000
            events.append(
                ev(
                    K.SESSION_UPDATE,
                    t0 + 9,
                    status="connected",
                    call_start_ms=start_ms,
                    call_answer_ms=answer_ms,
                    outcome="recorded",
                    **numbers,
                )
            )
            events.append(
                ev(
                    K.SESSION_UPDATE,
                    end,
                    status="answer",
                    call_start_ms=start_ms,
                    call_answer_ms=answer_ms,
                    call_end_ms=end_ms,
                    outcome="released",
                    call_id=f"{token}@carrier",
                )
            )
            dial, disposition = "completed", "ANSWER"
        else:
            answer_ms = None
            dial, disposition = rng.choice(
                [("busy", "BUSY"), ("no-answer", "NOANSWER"), ("failed", "FAILED"), ("canceled", "CANCEL")]
            )
            events.append(
                ev(
                    K.SESSION_UPDATE,
                    end,
                    status=dial.replace("-", ""),
                    call_start_ms=start_ms,
                    call_end_ms=end_ms,
                    outcome="released",
                )
            )
        events.append(
            ev(K.DIAL_STATUS, end + 0.02, status=dial, outcome="ended", agent_id=agent, attempt=attempt)
        )
        events.append(
            ev(
                K.CDR,
                end + 1,
                disposition=disposition,
                direction=direction,
                call_start_ms=start_ms,
                call_answer_ms=answer_ms,
                call_end_ms=end_ms,
                duration=round((end_ms - start_ms) / 1000),
                billsec=round((end_ms - answer_ms) / 1000) if answer_ms else 0,
                call_id=f"{token}@carrier",
                outcome="released",
                **numbers,
            )
        )
    events.sort(key=lambda e: e.occurred_at)
    return events


def messages(events: list[CallEvent]) -> list[tuple[str, list[CallEvent]]]:
    """Events in time order → messages as the engine's publisher makes them: one subject per message,
    up to 64 events, sent when full or FLUSH_S after its first event."""
    out: list[tuple[str, list[CallEvent]]] = []
    open_: dict[str, tuple[float, list[CallEvent]]] = {}
    for e in events:
        subject = event_subject(SUBJECTS, e.tenant_id, e.kind)
        for s, (since, batch) in list(open_.items()):
            if e.occurred_at - since > FLUSH_S:
                out.append((s, batch))
                del open_[s]
        since, batch = open_.setdefault(subject, (e.occurred_at, []))
        batch.append(e)
        if len(batch) >= MAX_EVENTS_PER_MESSAGE:
            out.append((subject, batch))
            del open_[subject]
    out.extend((s, b) for s, (_since, b) in open_.items())
    return out


async def load_stream(nats_url: str, events: list[CallEvent]) -> int:
    """Purge the stream, drop the durable consumer, publish ``events``; returns the messages stored."""
    from control_plane.events.consumer import ensure_stream

    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=10)
    await ensure_stream(js, STREAM, f"{SUBJECTS}.>")
    with contextlib.suppress(Exception):
        await js.delete_consumer(STREAM, DURABLE)
    await js.purge_stream(STREAM)
    batch = messages(events)
    tag = uuid.uuid4().hex[:8]
    for start in range(0, len(batch), 200):
        await asyncio.gather(
            *(
                js.publish(subject, encode_events(evs), headers={"Nats-Msg-Id": f"{tag}:{start + i}"})
                for i, (subject, evs) in enumerate(batch[start : start + 200])
            )
        )
    stored = int((await js.stream_info(STREAM)).state.messages)
    await nc.close()
    return stored


PRELOAD_SQL = """
    INSERT INTO call_records (tenant_id, session_token, direction, from_number, to_number, domain,
        agent_id, group_id, rule_id, status, attempts, start_time, answer_time, end_time, duration,
        billsec, disposition, call_id, last_event_at, created_at, updated_at)
    SELECT :tenant_id, md5(:salt || g::text), CASE WHEN g % 5 = 0 THEN 'outbound' ELSE 'inbound' END,
        '+1415555' || lpad((g % 10000)::text, 4, '0'), '+15551234567', :domain,
        1 + g % 50, 1 + (g / 7) % 5, 1, s.status, 1, s.t0,
        CASE WHEN s.status = 'completed' THEN s.t0 + interval '9 seconds' END, s.t0 + s.dur,
        extract(epoch FROM s.dur)::int,
        CASE WHEN s.status = 'completed' THEN extract(epoch FROM s.dur)::int - 9 ELSE 0 END,
        CASE s.status WHEN 'completed' THEN 'ANSWER' WHEN 'busy' THEN 'BUSY' WHEN 'no_answer' THEN 'NOANSWER'
            ELSE 'FAILED' END,
        md5(:salt || g::text) || '@carrier', s.t0 + s.dur, s.t0, s.t0 + s.dur
    FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g,
    LATERAL (SELECT now() - interval '30 days' * random() AS t0,
                    interval '1 second' * (10 + (g * 7919) % 600) AS dur,
                    CASE (g * 31) % 20 WHEN 0 THEN 'busy' WHEN 1 THEN 'no_answer' WHEN 2 THEN 'failed'
                        WHEN 3 THEN 'busy' WHEN 4 THEN 'no_answer' WHEN 5 THEN 'canceled'
                        ELSE 'completed' END AS status) AS s
"""


# ``--history``: timeline and audit rows per preloaded record (event ids as random as real ones).
HISTORY_SQL = """
    INSERT INTO {table} (tenant_id, event_id, {columns}, occurred_at_or_processed, engine_id, payload, created_at)
    SELECT :tenant_id, md5(:salt || g::text) || ':' || h, {values}, now() - interval '30 days' * random(),
        'bench', jsonb_build_object('Session', md5(:salt || g::text), 'step', h), now()
    FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g, generate_series(1, :history) AS h
"""
HISTORY = {
    "call_events": ("session_token, kind", "md5(:salt || g::text), 'session_update'", "occurred_at"),
    "webhook_audit": ("session_token, event_type", "md5(:salt || g::text), 'session_update'", "processed_at"),
}


async def grow(url: str, tenant_id: int, existing: int, target: int, salt: str, history: int = 0) -> float:
    """Add generated records (and ``history`` timeline and audit rows each) until the tenant has
    ``target`` of them, then rebuild its aggregates."""
    from control_plane.analytics.aggregates import rebuild_tenants

    started = time.monotonic()
    engine = create_async_engine(url)
    try:
        for first in range(existing, target, PRELOAD_CHUNK):
            last = min(target, first + PRELOAD_CHUNK) - 1
            async with engine.begin() as conn:
                await conn.execute(
                    text(PRELOAD_SQL),
                    {"tenant_id": tenant_id, "salt": salt, "domain": DOMAIN, "first": first, "last": last},
                )
                for table, (columns, values, moment) in HISTORY.items() if history else ():
                    statement = HISTORY_SQL.format(table=table, columns=columns, values=values)
                    await conn.execute(
                        text(statement.replace("occurred_at_or_processed", moment)),
                        {
                            "tenant_id": tenant_id,
                            "salt": salt,
                            "first": first,
                            "last": last,
                            "history": history,
                        },
                    )
        async for _report in rebuild_tenants(engine, tenant_id):
            pass
    finally:
        await engine.dispose()
    return time.monotonic() - started


async def sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(statement))
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        await engine.dispose()


async def count_records(url: str, tenant_id: int) -> int:
    rows = await sql(url, f"SELECT count(*) FROM call_records WHERE tenant_id = {int(tenant_id)}")
    return int(rows[0][0])


async def record_plans(url: str, tenant_id: int) -> str:
    """EXPLAIN ANALYZE of the writer's two call_records statements for 200 existing calls of the
    tenant (their current state written back unchanged), as the database plans them now; rolled back."""
    from sqlalchemy.ext.asyncio import AsyncSession

    from control_plane.events.writer import (
        HELD_COLUMNS,
        RECORD_FIELDS,
        UPDATE_COLUMNS,
        UPDATE_RECORDS_SQL,
        UPSERT_RECORDS_SQL,
        execute_binary,
        json_rows,
    )

    engine = create_async_engine(url)
    lines: list[str] = []
    try:
        async with AsyncSession(engine) as session, session.begin():
            found = await session.scalars(
                text(
                    "SELECT session_token FROM call_records WHERE tenant_id = :t ORDER BY id DESC LIMIT 200"
                ),
                {"t": tenant_id},
            )
            tokens = sorted(found.all())
            rows = await execute_binary(
                session,
                f"SELECT {', '.join(HELD_COLUMNS)} FROM call_records WHERE tenant_id = %(t)s "
                "AND session_token = ANY(%(s)s) ORDER BY session_token",
                {"t": tenant_id, "s": tokens},
            )
            held = [dict(zip(HELD_COLUMNS, row, strict=True)) for row in rows]
            now = datetime.datetime.now(datetime.UTC)
            statements = (
                (
                    UPSERT_RECORDS_SQL,
                    {
                        "rows": json_rows(
                            [
                                [h["tenant_id"], h["session_token"], now, now, *(h[c] for c in RECORD_FIELDS)]
                                for h in held
                            ]
                        )
                    },
                ),
                (
                    UPDATE_RECORDS_SQL,
                    {
                        "rows": json_rows([[h[c] for c in UPDATE_COLUMNS] for h in held]),
                        "ids": "{" + ",".join(str(h["id"]) for h in held) + "}",
                        "now": now,
                    },
                ),
            )
            for sql, params in statements:
                plan = await execute_binary(
                    session, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) " + sql, params
                )
                lines += [str(r[0]) if len(str(r[0])) < 150 else str(r[0])[:146] + " ..." for r in plan]
            await session.rollback()
    finally:
        await engine.dispose()
    return "\n".join(lines)


async def drifted(url: str, tenant_id: int) -> int:
    """Rows of call_stats that differ from what the records add up to (0: the consumer kept them right)."""
    from sqlalchemy.ext.asyncio import AsyncSession

    from control_plane.analytics.aggregates import drift

    engine = create_async_engine(url)
    try:
        async with AsyncSession(engine) as session, session.begin():
            return await drift(session, tenant_id)
    finally:
        await engine.dispose()


@dataclass
class Row:
    line: str
    records: int
    events: int
    seconds: float
    consumer_cpu_us: float
    postgres_cpu_us: float
    stats_rows: int = 0


def measure(
    env: dict[str, str],
    url: str,
    name: str,
    tenant_id: int,
    args: argparse.Namespace,
    tmp: Path,
    line: str,
    seed: int,
) -> Row:
    records = asyncio.run(count_records(url, tenant_id))
    events = calls_events(tenant_id, args.calls, args.rate, seed)
    stored = asyncio.run(load_stream(env["VLB_NATS_URL"], events))
    consumer_env = {
        **env,
        "VLB_DATABASE_URL": url,
        "VLB_EVENTS_DURABLE": DURABLE,
        **({"VLB_EVENTS_BATCH": str(args.batch)} if args.batch else {}),
        "VLB_LOG_LEVEL": "warning",
    }
    argv = [str(VENV_BIN / "python"), "-m", "loadtests.bench_lifecycle", "--consume"]
    with process(argv, consumer_env, tmp / f"consumer-{line}-{records}.log") as consumer:
        baseline: list[float] = []
        pids_before = asyncio.run(backend_pids(url, name))
        pg_before = backend_cpu_s(pids_before)
        appeared, drained = asyncio.run(
            wait_drained(
                env["VLB_NATS_URL"], stored, 600.0, lambda: baseline.append(group_cpu_s(consumer.pid))
            )
        )
        consumer_cpu = group_cpu_s(consumer.pid) - baseline[0]
        pids = asyncio.run(backend_pids(url, name))
        # The consumer's backends are new (its pool opened after the baseline): all their CPU counts.
        pg_cpu = backend_cpu_s([p for p in pids if p not in pids_before]) + (
            backend_cpu_s([p for p in pids if p in pids_before]) - pg_before
        )
    stats_rows = asyncio.run(sql(url, "SELECT count(*) FROM call_stats"))[0][0]
    return Row(
        line,
        records,
        len(events),
        drained - appeared,
        consumer_cpu / len(events) * 1e6,
        pg_cpu / len(events) * 1e6,
        int(stats_rows),
    )


def run_line(env: dict[str, str], args: argparse.Namespace, tmp: Path, line: str, rows: list[Row]) -> str:
    admin_url = os.environ.get("VLB_DATABASE_URL") or DEFAULT_ADMIN_URL
    name = f"vlb_bench_consumer_{uuid.uuid4().hex[:8]}"
    salt = uuid.uuid4().hex[:8]
    plan = ""
    try:
        url, tenant_id = asyncio.run(create_database(admin_url, name))
        preloaded = 0
        for i, size in enumerate(args.sizes):
            if size > preloaded:
                took = asyncio.run(grow(url, tenant_id, preloaded, size, salt, args.history))
                print(
                    f"  [{line}] preloaded to {size:,} records ({args.history} timeline and audit rows each) "
                    f"and rebuilt the aggregates in {took:.0f} s",
                    flush=True,
                )
                preloaded = size
            if line == "analyzed":
                asyncio.run(sql(url, "ANALYZE"))
            row = measure(env, url, name, tenant_id, args, tmp, line, seed=i)
            rows.append(row)
            print(
                f"  [{line}] {row.records:>9,} records: {row.events / row.seconds:,.0f} events/s", flush=True
            )
            if line == "stale" and i == 0:
                asyncio.run(sql(url, "ANALYZE"))  # once, on the small table: stale from here on
        plan = asyncio.run(record_plans(url, tenant_id))
        off = asyncio.run(drifted(url, tenant_id))
        print(f"  [{line}] aggregates vs a recount from the records: {off} rows differ", flush=True)
    finally:
        asyncio.run(drop_database(admin_url, name))
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 250_000, 500_000, 1_000_000])
    parser.add_argument("--calls", type=int, default=10_000, help="new calls fed per measurement")
    parser.add_argument("--rate", type=float, default=200.0, help="calls starting per second")
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        help="the consumer's VLB_EVENTS_BATCH (default: the setting's default)",
    )
    parser.add_argument(
        "--history", type=int, default=0, help="timeline and audit rows preloaded per record (default none)"
    )
    parser.add_argument("--lines", nargs="+", default=["stale", "analyzed"], choices=["stale", "analyzed"])
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="vlb-bench-consumer-"))
    nats_port = free_port()
    nats_argv = nats_server_argv(nats_port, tmp)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VLB_")},
        "VLB_NATS_URL": f"nats://127.0.0.1:{nats_port}",
        "VLB_LOG_FORMAT": "json",
        "VLB_EVENTS_STREAM": STREAM,
        "VLB_EVENTS_SUBJECT_PREFIX": SUBJECTS,
    }
    rows: list[Row] = []
    plans: dict[str, str] = {}
    started = time.monotonic()
    try:
        with process(nats_argv):
            wait_port(nats_port)
            for line in args.lines:
                plans[line] = run_line(env, args, tmp, line, rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(rows, plans, args, time.monotonic() - started)
    return 0


def report(rows: list[Row], plans: dict[str, str], args: argparse.Namespace, elapsed_s: float) -> None:
    print(
        f"\n{args.calls:,} new calls per row ({args.rate:.0f} calls/s, 10-120 s long), VLB_EVENTS_BATCH "
        f"{args.batch or ControlPlaneSettings().events_batch}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; "
        f"run took {elapsed_s:.0f} s"
    )
    print(
        f"{'statistics':<10}{'records':>11}{'events':>8}{'seconds':>9}{'events/s':>10}"
        f"{'consumer µs/ev':>16}{'postgres µs/ev':>16}{'call_stats rows':>17}"
    )
    for r in rows:
        print(
            f"{r.line:<10}{r.records:>11,}{r.events:>8,}{r.seconds:>9.1f}{r.events / r.seconds:>10,.0f}"
            f"{r.consumer_cpu_us:>16.0f}{r.postgres_cpu_us:>16.0f}{r.stats_rows:>17,}"
        )
    for line, plan in plans.items():
        print(
            f"\ncall_records statements for 200 existing calls at the last size, {line} statistics:\n{plan}"
        )


if __name__ == "__main__":
    sys.exit(main())
