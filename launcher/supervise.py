"""``vlb run``'s supervision of the two planes: each is watched on its own, and one that exits is
started again after a back-off (1 s, doubling to 30 s, back to 1 s once it has stayed up a minute),
with a log line for the exit, the restart and the first health answer after it. The other plane is
never touched: the routing engine keeps answering Cloudonix whatever happens to the control plane.

Granian itself respawns a worker that dies (``--respawn-failed-workers``, launcher.planes); this is
for the master: a crash, an OOM kill, a ``kill -9``. Before a restart whatever is left in the dead
plane's process group (its own workers, orphaned) is killed, so the new master finds its port free.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from launcher.process import ChildProcess, log_tail

log = structlog.get_logger("launcher.supervise")

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
# A plane up this long since its last (re)start is healthy again: its next failure waits the first
# back-off, not the doubled one.
STABLE_AFTER_S = 60.0
TICK_S = 0.25


@dataclass
class Plane:
    """One supervised plane: how to start it (without waiting) and how to tell it serves."""

    name: str
    spawn: Callable[[], ChildProcess]
    healthy: Callable[[], bool]
    child: ChildProcess
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None  # set while it is down, waiting for its back-off
    restarts: int = 0
    awaiting_health: bool = False

    def tick(self, now: float) -> None:
        if self.child.running():
            if self.awaiting_health and self.healthy():
                self.awaiting_health = False
                log.info(
                    "plane.ready",
                    name=self.name,
                    pid=self.child.pid,
                    restarts=self.restarts,
                    seconds=round(now - self.child.started_at, 2),
                )
            if self.backoff_s > FIRST_BACKOFF_S and now - self.child.started_at >= STABLE_AFTER_S:
                self.backoff_s = FIRST_BACKOFF_S
            return
        if self.restart_at is None:
            self._exited(now)
        elif now >= self.restart_at:
            self._restart(now)

    def _exited(self, now: float) -> None:
        self.restart_at = now + self.backoff_s
        log.error(
            "plane.exited",
            name=self.name,
            pid=self.child.pid,
            code=self.child.process.returncode,
            restart_in_s=self.backoff_s,
            restarts=self.restarts,
        )
        tail = log_tail(self.child.log_path)
        if tail:
            print(f"--- last lines of {self.child.log_path} ---\n{tail}", file=sys.stderr, flush=True)
        self._clear_group()

    def _clear_group(self) -> None:
        """Kill what is left of the dead plane's session (the group we started it in, and only it)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.child.pid, signal.SIGKILL)

    def _restart(self, now: float) -> None:
        self._clear_group()
        self.restart_at = None
        self.restarts += 1
        self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)
        try:
            self.child = self.spawn()
        except OSError as exc:  # not even started (the executable is gone, no memory): try again later
            log.error("plane.restart_failed", name=self.name, error=str(exc))
            self.restart_at = now + self.backoff_s
            return
        self.awaiting_health = True
        log.warning("plane.restarted", name=self.name, pid=self.child.pid, restarts=self.restarts)


class Supervisor:
    """Watches the planes until interrupted (Ctrl-C, SIGTERM: the caller stops ``children()``)."""

    def __init__(self, planes: list[Plane]) -> None:
        self.planes = planes

    def children(self) -> list[ChildProcess]:
        """The current process of every plane, in start order (stop them newest first)."""
        return [plane.child for plane in self.planes]

    def tick(self) -> None:
        now = time.monotonic()
        for plane in self.planes:
            plane.tick(now)

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        while not until():
            self.tick()
            time.sleep(TICK_S)
