"""Real-service fixtures. Every run gets its own PostgreSQL database, Redis key prefix and NATS
bucket/stream names, so parallel runs never collide. Services are at the ``VLB_*`` URLs (``make test``
starts local ones when nothing answers there)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

BASE_DATABASE_URL = os.environ.get("VLB_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("VLB_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("VLB_NATS_URL", "nats://127.0.0.1:4222")
# A Fernet key used only by tests.
TEST_FERNET_KEY = "q2mZ0l6c0b8f3yqkXo1Qm4c0F0JfY0m3vTtJb9F2M7c="


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


def _admin_conninfo(url: str) -> str:
    parsed = make_url(url).set(drivername="postgresql", database="postgres")
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def database_url(run_id: str) -> Iterator[str]:
    """A fresh, empty database for this run, dropped at the end."""
    name = f"vlb_test_{run_id}"
    admin = _admin_conninfo(BASE_DATABASE_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(BASE_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def service_env(run_id: str, database_url: str) -> dict[str, str]:
    """The VLB_* variables a service started by a test should see."""
    return {
        "VLB_DATABASE_URL": database_url,
        "VLB_REDIS_URL": REDIS_URL,
        "VLB_NATS_URL": NATS_URL,
        "VLB_REDIS_PREFIX": f"vlbt{run_id}",
        "VLB_CONFIG_BUCKET": f"vlb-config-{run_id}",
        "VLB_EVENTS_STREAM": f"VLB_EVENTS_{run_id}",
        "VLB_EVENTS_SUBJECT_PREFIX": f"vlbt{run_id}.events",
        "VLB_HEARTBEAT_SUBJECT": f"vlbt{run_id}.engines.heartbeat",
        "VLB_EXPORTS_BUCKET": f"vlb-exports-{run_id}",
        "VLB_SNAPSHOT_KEY": TEST_FERNET_KEY,
        "VLB_SECRET_KEY": TEST_FERNET_KEY,
        "VLB_LOG_FORMAT": "json",
        "VLB_LOG_LEVEL": "warning",
        # No daily retention purge inside test apps (tests/control_plane/test_retention.py runs it).
        "VLB_PURGE_ENABLED": "false",
    }


@pytest.fixture(scope="session", autouse=True)
def _drop_run_redis_keys(service_env: dict[str, str]) -> Iterator[None]:
    """The run's Redis keys all start with its prefix: remove them at the end (the server is shared)."""
    yield
    client = redis.Redis.from_url(REDIS_URL)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{service_env['VLB_REDIS_PREFIX']}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


@pytest.fixture(scope="session", autouse=True)
def _drop_run_nats_streams(run_id: str) -> Iterator[None]:
    """The run's JetStream streams (its KV bucket's, its events streams) all carry the run id in their
    names: remove them at the end (the server is shared, and each run would leave its own behind)."""
    yield

    async def drop() -> None:
        nc = await nats.connect(NATS_URL, connect_timeout=2, allow_reconnect=False)
        try:
            js = nc.jetstream()
            for info in await js.streams_info():
                if run_id in info.config.name:
                    await js.delete_stream(info.config.name)
        finally:
            await nc.close()

    # Session teardown may run while pytest-asyncio's loop is still set on this thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, drop()).result(timeout=30)


@pytest.fixture(scope="session", autouse=True)
def _apply_service_env(service_env: dict[str, str]) -> Iterator[None]:
    """Make in-process code (create_app, engine app) read the per-run settings."""
    saved = {k: os.environ.get(k) for k in service_env}
    os.environ.update(service_env)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


__all__ = ["AsyncIterator"]
