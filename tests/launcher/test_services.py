"""The launcher's local services: each one starts from its package on a free port, answers its own
protocol, and is gone when stopped; services that already answer are used and never touched."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nats
import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from launcher.postgres import ensure_database, start_postgres
from launcher.probes import free_port, postgres_conninfo, redis_answers, tcp_answers
from launcher.process import ChildProcess
from launcher.services import LocalServices, ServiceUrls, start_nats, start_redis
from tests.conftest import BASE_DATABASE_URL, NATS_URL, REDIS_URL

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder another account can reach: as root the server runs as its own user, and pytest keeps
    its own temporary folders private to root (re-tightened by every pytest session that starts)."""
    path = Path(tempfile.mkdtemp(prefix="vlb-launcher-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_embedded_postgres_serves_the_named_database_and_stops(shared_tmp: Path) -> None:
    port = free_port()
    child, url = start_postgres(
        shared_tmp, f"postgresql+psycopg://vlb_app:pw@127.0.0.1:{port}/vlb_launcher", port
    )
    try:
        assert ensure_database(url, create_role=True) is True
        assert ensure_database(url, create_role=True) is False  # second time: nothing to do
        with psycopg.connect(postgres_conninfo(url), connect_timeout=5) as conn:
            row = conn.execute("SELECT current_database(), current_user, version()").fetchone()
        assert row is not None
        assert row[0] == "vlb_launcher"
        assert row[1] == "vlb_app"
        assert row[2].startswith("PostgreSQL 18")
    finally:
        child.stop()
    assert child.process.returncode == 0
    assert not tcp_answers("127.0.0.1", port, timeout=0.5)


def test_embedded_redis_answers_ping_and_stops(tmp_path: Path) -> None:
    port = free_port()
    child, url = start_redis(tmp_path, "redis://127.0.0.1:1/0", port)
    try:
        assert url == f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url, socket_timeout=2)
        assert client.ping() is True
        assert client.info("server")["redis_version"].startswith("6.2")
        client.close()
    finally:
        child.stop()
    assert not tcp_answers("127.0.0.1", port, timeout=0.5)


@pytest.fixture
def local_nats(tmp_path: Path) -> Iterator[tuple[ChildProcess, str, int]]:
    port = free_port()
    child, url = start_nats(tmp_path, "nats://127.0.0.1:1", port)
    yield child, url, port
    child.stop()


async def test_embedded_nats_has_jetstream_and_stops(local_nats: tuple[ChildProcess, str, int]) -> None:
    child, url, port = local_nats
    client = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        info = await client.jetstream().account_info()
        assert info.limits is not None
        assert client.connected_server_version.major == 2
    finally:
        await client.close()
    child.stop()
    assert not tcp_answers("127.0.0.1", port, timeout=0.5)


def test_answering_services_are_used_and_left_running(tmp_path: Path) -> None:
    wanted = ServiceUrls(BASE_DATABASE_URL, REDIS_URL, NATS_URL)
    with LocalServices(tmp_path, wanted) as services:
        assert services.urls == wanted
        assert services.started == []
    assert redis_answers(REDIS_URL)
    assert not (tmp_path / "logs").exists()


def test_a_redis_cluster_is_used_as_given(tmp_path: Path) -> None:
    wanted = ServiceUrls(BASE_DATABASE_URL, "redis://127.0.0.1:1/0", NATS_URL)
    with LocalServices(tmp_path, wanted, redis_cluster_nodes="127.0.0.1:7000") as services:
        assert services.urls == wanted  # nothing listens on :1, yet no local Redis replaces the cluster
        assert services.started == []


def test_a_silent_listener_on_the_port_gets_a_local_server_on_another_port(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        wanted = ServiceUrls(BASE_DATABASE_URL, f"redis://127.0.0.1:{taken}/0", NATS_URL)
        with LocalServices(tmp_path, wanted) as services:
            used = services.urls.redis_url
            assert [child.name for child in services.started] == ["redis"]
            assert make_url(used).port != taken
            assert redis_answers(used)
        assert not redis_answers(used, timeout=0.5)


def test_vlb_services_prints_exports_and_stops_what_it_started_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "VLB_DATA_DIR": str(tmp_path),
        "VLB_DATABASE_URL": BASE_DATABASE_URL,
        "VLB_NATS_URL": NATS_URL,
        "VLB_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "VLB_LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", "services"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        exports = dict(proc.stdout.readline().strip().removeprefix("export ").split("=", 1) for _ in range(3))
        assert exports["VLB_REDIS_URL"] == f"redis://127.0.0.1:{port}/0"
        assert exports["VLB_DATABASE_URL"] == BASE_DATABASE_URL
        assert redis_answers(exports["VLB_REDIS_URL"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not tcp_answers("127.0.0.1", port, timeout=0.5)
    assert redis_answers(REDIS_URL)
