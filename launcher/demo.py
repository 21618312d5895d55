"""Migrations and the demo tenant for a local run. The demo's login and webhook key are kept in
``<data_dir>/demo.json`` (mode 600) so later runs can print them again."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import psycopg
import structlog

from launcher.probes import postgres_conninfo

log = structlog.get_logger("launcher.demo")

DEMO_FILE = "demo.json"


def migrate(database_url: str) -> None:
    from control_plane.db.migrate import upgrade

    log.info("migrate.start")
    upgrade(database_url)
    log.info("migrate.done")


def tenant_count(database_url: str) -> int:
    with psycopg.connect(postgres_conninfo(database_url)) as conn:
        row = conn.execute("SELECT count(*) FROM tenants").fetchone()
    return int(row[0]) if row else 0


def seed_available() -> bool:
    return importlib.util.find_spec("control_plane.seed") is not None


def seed_if_empty(database_url: str, data_dir: Path) -> dict[str, str] | None:
    """Seed the demo tenant when there are no tenants; return the demo's credentials (new or remembered),
    or None when neither is known."""
    saved = data_dir / DEMO_FILE
    if tenant_count(database_url) > 0:
        log.info("seed.skipped", reason="database already has tenants")
        return _read(saved)
    if not seed_available():
        log.warning("seed.unavailable", reason="control_plane.seed is not there yet; no demo tenant")
        return None
    from control_plane.seed import seed_demo

    demo = {str(key): str(value) for key, value in seed_demo(database_url).items()}
    _write(saved, demo)
    log.info("seed.done", saved_to=str(saved))
    return demo


def read_saved(data_dir: Path) -> dict[str, str] | None:
    """The demo login saved by an earlier ``vlb run``, if any."""
    return _read(data_dir / DEMO_FILE)


def _read(path: Path) -> dict[str, str] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {str(key): str(value) for key, value in data.items()} if isinstance(data, dict) else None


def _write(path: Path, demo: dict[str, str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(demo, handle, indent=2)
