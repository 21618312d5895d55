"""Process helpers for the supervision tests and the fault drills: ``vlb run`` started as a user starts
it (its own session, a private data folder, free ports, the shared services under this run's names),
and the planes' granian masters and workers found under it through /proc."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from launcher.probes import free_port

CONTROL_PLANE_TARGET = "control_plane.app:create_app"
ENGINE_TARGET = "routing_engine.app:create_app"


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis.
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return sorted(out)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_until(check: object, within_s: float, what: str, every_s: float = 0.1) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(every_s)
    raise TimeoutError(f"not within {within_s:.0f}s: {what}")


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class VlbRun:
    """A running ``vlb run``: its process, where it serves, and the demo tenant it seeded."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    control_plane_url: str
    engine_url: str

    def master(self, target: str) -> int | None:
        for pid in children_of(self.process.pid):
            if target in cmdline(pid) and alive(pid):
                return pid
        return None

    def workers(self, target: str) -> list[int]:
        master = self.master(target)
        return [p for p in children_of(master) if alive(p)] if master else []

    def demo(self) -> dict[str, str]:
        data: dict[str, str] = json.loads((self.data_dir / "demo.json").read_text())
        return data

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self, event: str) -> list[dict[str, object]]:
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out


@contextlib.contextmanager
def vlb_run(data_dir: Path, env: Mapping[str, str], *, ready_within_s: float = 120.0) -> Iterator[VlbRun]:
    """``vlb run`` on free ports with ``env`` (its services, names and keys); stopped with Ctrl-C
    (SIGINT to its own pid) at the end, then whatever is left of its session is killed."""
    port, engine_port = free_port(), free_port()
    full_env = {
        **env,
        "VLB_DATA_DIR": str(data_dir),
        "VLB_PORT": str(port),
        "VLB_ENGINE_PORT": str(engine_port),
        "VLB_LOG_FORMAT": "json",
        "VLB_LOG_LEVEL": "info",
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "vlb-run.log"
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "launcher.cli", "run"],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    run = VlbRun(
        process=process,
        data_dir=data_dir,
        log_path=log_path,
        control_plane_url=f"http://127.0.0.1:{port}",
        engine_url=f"http://127.0.0.1:{engine_port}",
    )
    try:
        wait_until(
            lambda: "voice-lb is running" in run.log_text() or process.poll() is not None,
            ready_within_s,
            "vlb run ready",
            every_s=0.25,
        )
        assert process.poll() is None, run.log_text()[-3000:]
        yield run
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
