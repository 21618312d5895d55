"""Child processes the launcher owns: start in their own session (so a terminal Ctrl-C reaches only the
launcher, which then stops them in order), wait until ready, stop with a bounded grace period."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("launcher.process")

STOP_GRACE_S = 15.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
TERMINATION_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StartError(RuntimeError):
    """A child did not become ready; the message carries the tail of its log."""


def log_tail(path: Path, lines: int = 20) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ChildProcess:
    """One process we started; ``stop_signal`` is the one that makes it shut down cleanly and fast."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, check: Callable[[], bool], timeout_s: float) -> float:
        """Poll ``check`` until it passes; returns the seconds it took since start."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise StartError(
                    f"{self.name} exited with code {self.process.returncode}; "
                    f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if check():
                return time.monotonic() - self.started_at
            time.sleep(0.2)
        self.stop()
        raise StartError(
            f"{self.name} was not ready after {timeout_s:.0f}s; last lines of {self.log_path}:\n"
            f"{log_tail(self.log_path)}"
        )

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        if not self.running():
            return
        started = time.monotonic()
        # The leader shuts its own children down (granian workers, postgres backends) ...
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            log.warning("process.kill", name=self.name, pid=self.pid, grace_s=grace_s)
        # ... and whatever is still in its session after the grace period is killed.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        log.info(
            "process.stopped",
            name=self.name,
            pid=self.pid,
            code=self.process.returncode,
            seconds=round(time.monotonic() - started, 2),
        )


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    stop_signal: int = signal.SIGTERM,
    inherit_output: bool = False,
) -> ChildProcess:
    """Start ``argv`` in a new session; output goes to ``log_path`` unless ``inherit_output``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        output = None if inherit_output else log_file
        process = subprocess.Popen(  # noqa: S603 - argv is built by the launcher, not from input
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            group=_primary_group(user),
            extra_groups=[] if user is not None else None,
            start_new_session=True,
            preexec_fn=_stop_with_parent(stop_signal),
        )
    log.debug("process.spawned", name=name, pid=process.pid, argv=" ".join(argv))
    return ChildProcess(name=name, process=process, log_path=log_path, stop_signal=stop_signal)


def _stop_with_parent(signum: int) -> Callable[[], None] | None:
    """Linux: the child gets its stop signal if the launcher dies without cleaning up (SIGKILL, OOM),
    so a crashed launcher leaves no servers behind. Runs in the child after its user switch."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child should only make the call

    def set_parent_death_signal() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signum)

    return set_parent_death_signal


def _primary_group(user: str | None) -> int | None:
    if user is None:
        return None
    import pwd

    return pwd.getpwnam(user).pw_gid


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def exit_on_termination_signals() -> None:
    """SIGTERM and SIGHUP unwind the stack like Ctrl-C does, so every ``with`` block stops its children.

    SIGINT is set back to Python's KeyboardInterrupt too: a shell starts background jobs with SIGINT
    ignored, and Python keeps an inherited "ignore", so ``make run &`` then ``kill -INT`` would do nothing.
    """
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold termination signals while stopping children, so a second Ctrl-C cannot cut a clean stop short."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATION_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def stop_all(children: list[ChildProcess]) -> None:
    """Stop and forget ``children``, newest first, with termination signals held until done."""
    with signals_deferred():
        while children:
            children.pop().stop()
