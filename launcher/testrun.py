"""``python -m launcher.testrun [pytest args]``: the project's checks against real services.

Uses PostgreSQL (database ``test``), Redis and NATS at the ``VLB_*`` URLs when they answer, starts
local ones in ``.vlb/test-services`` otherwise, then runs ruff, the formatter check, mypy and pytest
with those URLs. Every check runs; the exit code is the first failing one's.

The dashboard's browser tests need a Chromium: when none is on PATH, Debian's ``chromium`` package is
installed with apt-get, but only as root or in CI (``CI`` set); elsewhere the tests say what is missing.
In CI they fail without it, never skip.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from launcher.process import StartError
from launcher.services import LocalServices, ServiceUrls
from shared.logging import configure_logging

log = structlog.get_logger("launcher.testrun")

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = ServiceUrls(
    database_url="postgresql+psycopg://postgres@127.0.0.1:5432/test",
    redis_url="redis://127.0.0.1:6379/0",
    nats_url="nats://127.0.0.1:4222",
)


def wanted_urls(env: dict[str, str]) -> ServiceUrls:
    return ServiceUrls(
        database_url=env.get("VLB_DATABASE_URL", DEFAULTS.database_url),
        redis_url=env.get("VLB_REDIS_URL", DEFAULTS.redis_url),
        nats_url=env.get("VLB_NATS_URL", DEFAULTS.nats_url),
    )


def checks(pytest_args: Sequence[str]) -> list[tuple[str, list[str]]]:
    python = sys.executable
    return [
        ("ruff check", [python, "-m", "ruff", "check", "."]),
        ("ruff format", [python, "-m", "ruff", "format", "--check", "."]),
        ("mypy", [python, "-m", "mypy"]),
        # pytest's 5 ("no tests collected") is non-zero, so it fails the run like any other failure.
        ("pytest", [python, "-m", "pytest", *pytest_args]),
    ]


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
APT_TIMEOUT_S = 900


def browser_present(env: dict[str, str]) -> bool:
    chosen = env.get("VLB_CHROMIUM")
    if chosen:
        return Path(chosen).is_file()
    return any(shutil.which(name) for name in BROWSERS)


def may_install_packages(env: dict[str, str]) -> bool:
    in_ci = env.get("CI", "").lower() not in ("", "0", "false", "no")
    return (os.geteuid() == 0 or in_ci) and shutil.which("apt-get") is not None


def ensure_browser(env: dict[str, str]) -> None:
    """Install Debian's chromium for the dashboard tests when it is missing and we may (root or CI).
    A failure is logged, not raised: the tests then report the missing browser themselves."""
    if browser_present(env) or not may_install_packages(env):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    apt_env = {**env, "DEBIAN_FRONTEND": "noninteractive"}
    print("\n=== installing chromium for the dashboard tests (apt-get)", flush=True)
    for argv in (
        [*sudo, "apt-get", "update"],
        [*sudo, "apt-get", "install", "-y", "chromium"],
    ):
        try:
            code = subprocess.run(argv, env=apt_env, check=False, timeout=APT_TIMEOUT_S).returncode  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("browser.install_failed", argv=argv, error=str(exc))
            return
        if code != 0:
            log.warning("browser.install_failed", argv=argv, exit=code)
            return


def run_checks(env: dict[str, str], pytest_args: Sequence[str]) -> int:
    results: list[tuple[str, int, float]] = []
    for name, argv in checks(pytest_args):
        print(f"\n=== {name}: {' '.join(argv[1:])}", flush=True)
        began = time.monotonic()
        code = subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode  # noqa: S603
        results.append((name, code, time.monotonic() - began))
    print("\n=== summary", flush=True)
    for name, code, seconds in results:
        print(f"  {'ok  ' if code == 0 else 'FAIL'}  {name:<12} exit {code:<3} {seconds:6.1f}s", flush=True)
    return next((code for _name, code, _s in results if code != 0), 0)


def main(argv: Sequence[str] | None = None) -> int:
    pytest_args = list(sys.argv[1:] if argv is None else argv)
    configure_logging(os.environ.get("VLB_LOG_FORMAT", "auto"), "info")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    env = dict(os.environ)
    ensure_browser(env)
    data_dir = Path(env.get("VLB_DATA_DIR", ROOT / ".vlb")) / "test-services"
    try:
        with LocalServices(data_dir, wanted_urls(env)) as services:
            env.update(services.urls.as_env())
            return run_checks(env, pytest_args)
    except StartError as exc:
        log.error("services.failed", error=str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
