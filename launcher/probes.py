"""Does a service answer at a URL? A TCP connect first (fails fast), then a real protocol round trip:
``SELECT 1`` for PostgreSQL, ``PING`` for Redis, a JetStream account-info request for NATS."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from urllib.parse import urlsplit

import nats
import psycopg
import redis
from nats.errors import Error as NatsError
from sqlalchemy.engine import make_url

from shared.settings import nats_servers

TIMEOUT_S = 2.0


def tcp_answers(host: str, port: int, timeout: float = TIMEOUT_S) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on the port. Bound the way servers bind (SO_REUSEADDR), so connections of an
    earlier run still in TIME_WAIT do not count as taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def postgres_conninfo(url: str, database: str | None = None) -> str:
    """A libpq URL for a SQLAlchemy-style one (``postgresql+psycopg://`` → ``postgresql://``)."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def postgres_answers(url: str, timeout: float = TIMEOUT_S) -> bool:
    """The server answers ``SELECT 1`` on its maintenance database (the target may not exist yet)."""
    parsed = make_url(url)
    if not tcp_answers(parsed.host or "127.0.0.1", parsed.port or 5432, timeout):
        return False
    try:
        with psycopg.connect(
            postgres_conninfo(url, "postgres"), connect_timeout=max(1, int(timeout)), autocommit=True
        ) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def redis_answers(url: str, timeout: float = TIMEOUT_S) -> bool:
    parts = urlsplit(url)
    if not tcp_answers(parts.hostname or "127.0.0.1", parts.port or 6379, timeout):
        return False
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


async def _jetstream_answers(url: str, wait_s: float) -> bool:
    async def quiet(_exc: Exception) -> None:
        return None

    try:
        client = await nats.connect(
            nats_servers(url),
            connect_timeout=wait_s,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=quiet,
        )
    except (NatsError, OSError, TimeoutError):
        return False
    try:
        await client.jetstream(timeout=wait_s).account_info()
    except (NatsError, TimeoutError):
        return False
    finally:
        with contextlib.suppress(NatsError, OSError):
            await client.close()
    return True


def nats_answers(url: str, timeout: float = TIMEOUT_S) -> bool:
    """The server answers and has JetStream enabled (the engine and control plane both need it). A
    cluster's comma-separated URLs answer when one of its servers does (clients move between them)."""
    servers = nats_servers(url)
    reachable = []
    for server in servers:
        parts = urlsplit(server)
        if tcp_answers(parts.hostname or "127.0.0.1", parts.port or 4222, timeout):
            reachable.append(server)
    if not reachable:
        return False
    url = ",".join(reachable)
    # A private loop, not asyncio.run(): that would also reset the thread's current loop, which a
    # caller (pytest-asyncio's session loop, for one) may own.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_jetstream_answers(url, timeout))
    finally:
        loop.close()
