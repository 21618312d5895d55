"""``python -m launcher.testrun [pytest args]``: the project's checks against real services.

Uses PostgreSQL (database ``test``), Redis and NATS at the ``VLB_*`` URLs when they answer, starts
local ones in ``.vlb/test-services`` otherwise, then runs ruff, the formatter check, mypy and pytest
with those URLs. Every check runs; the exit code is the first failing one's.
"""

from __future__ import annotations

import logging
import os
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
