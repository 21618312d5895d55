"""The control plane as production serves it (a granian process, ASGI) for the live-feed tests, and a
websocket client that timestamps every frame it reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from control_plane.settings import ControlPlaneSettings
from tests.routing_engine.harness import free_port, granian_engine, load_fixture, wait_port

PASSWORD = "correct horse battery"
INBOUND = load_fixture("application-inbound.json")
SESSION_UPDATES = {u["status"]: u for u in load_fixture("session-updates-answered.json")}
CDR = load_fixture("cdr-answered.json")


@dataclass
class ServedPlane:
    url: str
    pgid: int  # granian's process group: granian and its workers

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by granian and its workers."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self._pids():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def connections_per_worker(self) -> dict[int, int]:
        """Established connections to the served port held by each granian process (from /proc)."""
        port = int(self.url.rsplit(":", 1)[1])
        inodes: dict[str, int] = {}  # socket inode -> pid
        for pid in self._pids():
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        target = os.readlink(f"/proc/{pid}/fd/{fd}")
                        if target.startswith("socket:["):
                            inodes[target[8:-1]] = pid
        counts: dict[int, int] = {}
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                pid = inodes[fields[9]]
                counts[pid] = counts.get(pid, 0) + 1
        return counts

    def _pids(self) -> list[int]:
        """granian and its workers: the processes of its process group (field 5 of stat)."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    if int(stat[stat.rindex(")") + 2 :].split()[2]) == self.pgid:
                        pids.append(int(entry))
        return pids


@contextlib.contextmanager
def granian_control_plane(*, workers: int = 1, env: dict[str, str] | None = None) -> Iterator[ServedPlane]:
    """``control_plane.app:create_app`` under granian on a free port, with this process's ``VLB_*``
    settings plus ``env``; yields it once /health answers, stops granian and its workers after."""
    port = free_port()
    metrics_dir = tempfile.mkdtemp(prefix="vlb-cp-prom-")
    full_env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir, **(env or {})}
    argv = [str(Path(sys.executable).parent / "granian"), "--interface", "asgi", "--factory"]
    argv += ["--workers", str(workers), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "control_plane.app:create_app"],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("VLB_TEST_SERVER_LOGS") else subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_port(port, within_s=30)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the control plane did not come up")
            time.sleep(0.1)
        yield ServedPlane(url, proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # granian and its own workers only
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def ws_url(base_url: str, token: str | None = None) -> str:
    url = base_url.replace("http://", "ws://", 1) + "/api/live"
    return url if token is None else f"{url}?{httpx.QueryParams({'token': token})}"


@dataclass
class Frame:
    at: float  # time.perf_counter() when read
    body: dict[str, Any]
    wall: float = 0.0  # time.time() when read


@dataclass
class LiveReader:
    """Reads a live-feed connection in the background; ``frames`` in order of arrival."""

    ws: ClientConnection
    frames: list[Frame] = field(default_factory=list)
    close_code: int | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def start(self) -> LiveReader:
        self.task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(Frame(time.perf_counter(), json.loads(raw), time.time()))
                self.arrived.set()
        except ConnectionClosed:
            pass
        self.close_code = self.ws.close_code
        self.closed.set()
        self.arrived.set()

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [f.body for f in self.frames if f.body["type"] in types]

    async def wait_for(self, predicate: Any, within_s: float = 5.0) -> Frame:
        """The first frame (already read or to come) for which ``predicate(body)`` holds."""
        deadline = time.monotonic() + within_s
        seen = 0
        while True:
            for frame in self.frames[seen:]:
                if predicate(frame.body):
                    return frame
            seen = len(self.frames)
            left = deadline - time.monotonic()
            if left <= 0 or self.closed.is_set():
                raise AssertionError(f"no such frame within {within_s} s (close code {self.close_code})")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)

    async def stop(self) -> None:
        await self.ws.close()
        if self.task is not None:
            await asyncio.wait({self.task}, timeout=5)


async def open_live(base_url: str, token: str, **kw: Any) -> LiveReader:
    """A reading client, once its hello and first stats have arrived (the subscription is live)."""
    ws = await connect(ws_url(base_url, token), open_timeout=10, **kw)
    reader = LiveReader(ws).start()
    await reader.wait_for(lambda b: b["type"] == "hello")
    await reader.wait_for(lambda b: b["type"] == "stats")
    return reader


def small_buffer_socket(base_url: str, rcvbuf: int = 4096) -> socket.socket:
    """A connected TCP socket with a small receive buffer: a client that stops reading backs the
    server up after a few KB instead of megabytes of kernel buffers."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    return sock


# --- tenants with config through the API, and calls through the engine ---------------------------


@dataclass
class LiveTenant:
    """A tenant registered over HTTP, with config that routes +1212* to a group of two agents."""

    api: httpx.AsyncClient
    token: str
    tenant_id: int
    domain: str = ""
    key: str = ""
    agent_ids: list[int] = field(default_factory=list)
    group_id: int = 0
    rule_id: int = 0
    sessions: set[str] = field(default_factory=set)

    async def post(self, path: str, json: Any) -> dict[str, Any]:
        response = await self.api.post(path, json=json, headers={"Authorization": f"Bearer {self.token}"})
        assert response.status_code in (200, 201), response.text
        return dict(response.json())


async def register(api: httpx.AsyncClient, name: str) -> LiveTenant:
    response = await api.post(
        "/api/register",
        json={
            "name": name,
            "email": f"{uuid.uuid4().hex[:12]}@example.com",
            "password": PASSWORD,
            "password_confirmation": PASSWORD,
            "tenant_name": f"{name} tenant",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return LiveTenant(api=api, token=body["token"], tenant_id=int(body["user"]["tenant_id"]))


async def routable_tenant(api: httpx.AsyncClient, engine: httpx.AsyncClient, name: str) -> LiveTenant:
    """Config through the API (the domain last, so the snapshot that has it has everything), then
    wait until the engine runs it (a number no rule matches answers 200 once the domain is known)."""
    t = await register(api, name)
    marker = uuid.uuid4().hex[:8]
    for n in (1, 2):
        agent = await t.post(
            "/api/voice-agents",
            json={"name": f"{name}-{n}", "provider": "vapi", "service_value": f"+1212555012{n}"},
        )
        t.agent_ids.append(agent["id"])
    group = await t.post("/api/agent-groups", json={"name": f"{name}-line", "strategy": "round_robin"})
    t.group_id = group["id"]
    for agent_id in t.agent_ids:
        await t.post(f"/api/agent-groups/{t.group_id}/members", json={"agent_id": agent_id})
    rule = await t.post(
        "/api/inbound-routing-rules",
        json={"pattern": "+1212*", "target_type": "group", "target_id": t.group_id},
    )
    t.rule_id = rule["id"]
    domain = await t.post("/api/domains", json={"domain": f"live-{marker}.cloudonix.net"})
    t.domain, t.key = domain["domain"], domain["webhook_key"]
    for _ in range(400):
        session = uuid.uuid4().hex
        response = await webhook(engine, t, "application", dict(INBOUND, Session=session, To="+19995550100"))
        if response.status_code == 200:
            t.sessions.add(session)
            return t
        await asyncio.sleep(0.05)
    raise AssertionError("the engine never ran the tenant's snapshot")


async def webhook(engine: httpx.AsyncClient, t: LiveTenant, path: str, body: Any) -> httpx.Response:
    urls = {
        "application": f"/api/voice/application/{t.domain}",
        "update": f"/api/voice/session/update/{t.domain}",
        "cdr": f"/api/voice/session/cdr/{t.domain}",
    }
    return await engine.post(urls[path], json=body, headers={"Authorization": f"Bearer {t.key}"})


def session_update(t: LiveTenant, session: str, status: str) -> dict[str, Any]:
    return dict(SESSION_UPDATES[status], token=session, domain=t.domain, eventId=f"{session}-{status}")


def cdr(t: LiveTenant, session: str) -> dict[str, Any]:
    return dict(CDR, domain=t.domain, session=dict(CDR["session"], token=session))


async def route_call(engine: httpx.AsyncClient, t: LiveTenant, session: str) -> float:
    """The first request of a call; answers when it was sent (perf_counter)."""
    t.sessions.add(session)
    sent = time.perf_counter()
    response = await webhook(engine, t, "application", dict(INBOUND, Session=session, CallSid=session))
    assert response.status_code == 200, response.text
    assert ET.fromstring(response.content).find("./Dial") is not None, response.text
    return sent


# Each webhook of a call and the frame it must produce.
STEPS = [
    ("application", "call.routed"),
    ("connected", "call.status"),
    ("answer", "call.ended"),
    ("cdr", "cdr.received"),
]


async def whole_call(engine: httpx.AsyncClient, t: LiveTenant) -> tuple[str, dict[str, float]]:
    """Drive one answered call through the engine; answers its session and when each webhook left."""
    session = uuid.uuid4().hex
    sent = {"call.routed": await route_call(engine, t, session)}
    for status, frame_type in STEPS[1:3]:
        sent[frame_type] = time.perf_counter()
        response = await webhook(engine, t, "update", session_update(t, session, status))
        assert response.status_code == 204, response.text
    sent["cdr.received"] = time.perf_counter()
    response = await webhook(engine, t, "cdr", cdr(t, session))
    assert response.status_code == 204, response.text
    return session, sent


def served_fixtures(env: dict[str, str] | None = None) -> tuple[Any, Any, Any, Any]:
    """A test module's fixtures for a control plane and an engine served as production serves them:
    ``plane, engine_url, api, engine = served_fixtures(env)`` (both processes once per module, on the
    test database, Redis and NATS; an HTTP client of each per test)."""

    @pytest.fixture(scope="module")
    def plane(cp_settings: ControlPlaneSettings) -> Iterator[ServedPlane]:
        with granian_control_plane(env=env) as served:
            yield served

    @pytest.fixture(scope="module")
    def engine_url(cp_settings: ControlPlaneSettings) -> Iterator[str]:
        with granian_engine(workers=1) as url:
            yield url

    @pytest.fixture
    async def api(plane: ServedPlane) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(base_url=plane.url, timeout=10) as client:
            yield client

    @pytest.fixture
    async def engine(engine_url: str) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(base_url=engine_url, timeout=10) as client:
            yield client

    return plane, engine_url, api, engine
