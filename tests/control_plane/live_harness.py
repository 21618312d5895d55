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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.routing_engine.harness import free_port, wait_port


@dataclass
class ServedPlane:
    url: str
    pgid: int  # granian's process group: granian and its workers

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by granian and its workers."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == self.pgid:  # field 5 of stat: the process group
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks


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
