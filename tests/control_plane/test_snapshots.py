"""Snapshot pipeline (DESIGN §2): an API change reaches the KV bucket as a decodable TenantSnapshot,
credentials travel sealed with the snapshot key, a crash between commit and publish heals on start, a
newer version is never overwritten, and NATS being down never fails the API."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import msgspec
import nats
import psycopg
import pytest
from cryptography.fernet import Fernet, InvalidToken
from litestar.testing import AsyncTestClient
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from control_plane.app import create_app
from control_plane.settings import ControlPlaneSettings
from control_plane.snapshots.compile import compile_snapshot
from control_plane.snapshots.publisher import SnapshotPublisher
from shared.snapshot import SNAPSHOT_DECODER, SNAPSHOT_ENCODER, TenantSnapshot, snapshot_key
from tests.conftest import BASE_DATABASE_URL, TEST_FERNET_KEY, _admin_conninfo
from tests.control_plane.conftest import Account, create_schema, register_account
from tests.routing_engine.harness import PrivateServer, free_port

PASSWORD = "synthflow-Secret-pw-123"
USERNAME = "synthflow-user-xyz"
WAIT_S = 5.0


class Creds(msgspec.Struct):
    username: str | None = None
    password: str | None = None


@pytest.fixture
async def kv(cp_settings: ControlPlaneSettings) -> AsyncIterator[KeyValue]:
    nc = await nats.connect(cp_settings.nats_url)
    js = nc.jetstream()
    try:
        bucket = await js.key_value(cp_settings.config_bucket)
    except BucketNotFoundError:
        bucket = await js.create_key_value(bucket=cp_settings.config_bucket, history=1)
    yield bucket
    await nc.close()


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


async def stored(kv: KeyValue, tenant_id: int) -> TenantSnapshot | None:
    try:
        entry = await kv.get(snapshot_key(tenant_id))
    except KeyNotFoundError:
        return None
    return SNAPSHOT_DECODER.decode(entry.value or b"")


async def wait_version(
    kv: KeyValue, tenant_id: int, version: int, within_s: float = WAIT_S
) -> TenantSnapshot:
    deadline = time.monotonic() + within_s
    while True:
        snap = await stored(kv, tenant_id)
        if snap is not None and snap.version >= version:
            return snap
        if time.monotonic() > deadline:
            raise AssertionError(f"tenant {tenant_id} not at version {version} after {within_s}s: {snap}")
        await asyncio.sleep(0.01)


async def until(check: Callable[[], Awaitable[bool] | bool], within_s: float = WAIT_S) -> bool:
    """Poll ``check`` every 20 ms until it holds or ``within_s`` passes; its last answer."""
    for _ in range(int(within_s / 0.02) + 1):
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return True
        await asyncio.sleep(0.02)
    return False


def config_version(db: Engine, tenant_id: int) -> int:
    with db.connect() as conn:
        return int(
            conn.execute(
                text("SELECT config_version FROM tenants WHERE id = :t"), {"t": tenant_id}
            ).scalar_one()
        )


def unpublished(db: Engine, tenant_id: int) -> list[int]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT version FROM snapshot_outbox WHERE tenant_id = :t AND published_at IS NULL ORDER BY version"
            ),
            {"t": tenant_id},
        )
        return [int(v) for v in rows.scalars()]


async def build_config(account: Account) -> dict[str, Any]:
    agent = await account.post(
        "/api/voice-agents",
        json={
            "name": "Flow",
            "provider": "synthflow",
            "service_value": "+14155550100",
            "username": USERNAME,
            "password": PASSWORD,
        },
    )
    assert agent.status_code == 201, agent.text
    plain = await account.post(
        "/api/voice-agents", json={"name": "Plain", "provider": "vapi", "service_value": "+14155550101"}
    )
    group = await account.post("/api/agent-groups", json={"name": "G", "strategy": "round_robin"})
    assert group.status_code == 201, group.text
    member = await account.post(
        f"/api/agent-groups/{group.json()['id']}/members",
        json={"agent_id": plain.json()["id"], "priority": 2, "capacity": 3},
    )
    assert member.status_code == 201, member.text
    domain = await account.post("/api/domains", json={"domain": f"snap{account.tenant_id}.cloudonix.net"})
    assert domain.status_code == 201, domain.text
    trunk = await account.post(
        "/api/trunks", json={"name": "t", "cloudonix_trunk": "carrier", "is_default": True}
    )
    rule = await account.post(
        "/api/inbound-routing-rules",
        json={"pattern": "+1555*", "target_type": "group", "target_id": group.json()["id"], "priority": 7},
    )
    assert rule.status_code == 201, rule.text
    out = await account.post(
        "/api/outbound-routing-rules",
        json={"name": "o", "destination_pattern": "+44*", "trunk_ids": [trunk.json()["id"]]},
    )
    assert out.status_code == 201, out.text
    return {
        "agent": agent.json(),
        "plain": plain.json(),
        "group": group.json(),
        "domain": domain.json(),
        "trunk": trunk.json(),
        "rule": rule.json(),
        "outbound": out.json(),
    }


async def test_api_change_reaches_the_bucket(account: Account, kv: KeyValue, db: Engine) -> None:
    made = await build_config(account)
    version = config_version(db, account.tenant_id)
    snap = await wait_version(kv, account.tenant_id, version)
    assert snap.tenant_id == account.tenant_id
    assert [r.id for r in snap.inbound_rules] == [made["rule"]["id"]]
    assert snap.inbound_rules[0].priority == 7
    assert [g.id for g in snap.groups] == [made["group"]["id"]]
    assert snap.groups[0].members[0].agent_id == made["plain"]["id"]
    assert snap.groups[0].members[0].capacity == 3
    assert [d.name for d in snap.domains] == [made["domain"]["domain"]]
    assert len(snap.domains[0].key_hash) == 64
    assert snap.trunks[0].is_default is True
    assert snap.outbound_rules[0].trunk_ids == [made["trunk"]["id"]]

    # One more change: measure commit → visible in the bucket.
    started = time.perf_counter()
    r = await account.put(f"/api/inbound-routing-rules/{made['rule']['id']}", json={"priority": 8})
    assert r.status_code == 200
    snap = await wait_version(kv, account.tenant_id, version + 1)
    elapsed = time.perf_counter() - started
    print(f"\nAPI write -> snapshot visible in KV: {elapsed * 1000:.1f} ms (request included)")
    assert snap.inbound_rules[0].priority == 8
    assert elapsed < WAIT_S
    await asyncio.sleep(0.05)
    assert unpublished(db, account.tenant_id) == []


async def test_strategy_settings_reach_the_bucket(account: Account, kv: KeyValue, db: Engine) -> None:
    """weighted / least_active, member weights, sticky_hours and rotate_same_priority travel to the
    engines in the snapshot."""
    made = await build_config(account)
    url = f"/api/agent-groups/{made['group']['id']}"
    r = await account.patch(
        url, json={"strategy": "weighted", "settings": {"sticky_hours": 48, "rotate_same_priority": False}}
    )
    assert r.status_code == 200, r.text
    r = await account.patch(f"{url}/members/{made['plain']['id']}", json={"weight": 250})
    assert r.status_code == 200, r.text
    snap = await wait_version(kv, account.tenant_id, config_version(db, account.tenant_id))
    group = snap.groups[0]
    assert group.strategy == "weighted"
    assert group.settings.sticky_hours == 48
    assert group.settings.rotate_same_priority is False
    assert group.members[0].weight == 250
    r = await account.patch(url, json={"strategy": "least_active"})
    snap = await wait_version(kv, account.tenant_id, config_version(db, account.tenant_id))
    assert snap.groups[0].strategy == "least_active"


async def test_credentials_are_sealed_with_the_snapshot_key(
    account: Account, kv: KeyValue, db: Engine
) -> None:
    made = await build_config(account)
    await wait_version(kv, account.tenant_id, config_version(db, account.tenant_id))
    raw = (await kv.get(snapshot_key(account.tenant_id))).value or b""
    assert PASSWORD.encode() not in raw
    assert USERNAME.encode() not in raw
    snap = SNAPSHOT_DECODER.decode(raw)
    by_id = {a.id: a for a in snap.agents}
    sealed = by_id[made["agent"]["id"]].credentials
    assert sealed is not None
    assert by_id[made["plain"]["id"]].credentials is None
    creds = msgspec.msgpack.decode(Fernet(TEST_FERNET_KEY.encode()).decrypt(sealed.encode()), type=Creds)
    assert creds == Creds(username=USERNAME, password=PASSWORD)
    with pytest.raises(InvalidToken):
        Fernet(Fernet.generate_key()).decrypt(sealed.encode())


async def test_crash_between_commit_and_publish_heals_on_start(
    account: Account, kv: KeyValue, db: Engine, cp_settings: ControlPlaneSettings
) -> None:
    await build_config(account)
    before = await wait_version(kv, account.tenant_id, config_version(db, account.tenant_id))
    # The app's publisher marks its outbox rows published just after the KV put: let it finish.
    await until(lambda: not unpublished(db, account.tenant_id))
    # A commit whose process died before publishing: version bumped, outbox row written, nobody told.
    with db.begin() as conn:
        conn.execute(
            text("UPDATE trunks SET cloudonix_trunk = 'renamed' WHERE tenant_id = :t"),
            {"t": account.tenant_id},
        )
        new = conn.execute(
            text(
                "UPDATE tenants SET config_version = config_version + 1 WHERE id = :t RETURNING config_version"
            ),
            {"t": account.tenant_id},
        ).scalar_one()
        conn.execute(
            text("INSERT INTO snapshot_outbox (tenant_id, version, created_at) VALUES (:t, :v, now())"),
            {"t": account.tenant_id, "v": new},
        )
    assert unpublished(db, account.tenant_id) == [new]
    assert (await stored(kv, account.tenant_id)).version == before.version  # type: ignore[union-attr]

    publisher = SnapshotPublisher(cp_settings)
    await publisher.start()  # its first round sweeps the outbox
    try:
        started = time.perf_counter()
        snap = await wait_version(kv, account.tenant_id, new)
        print(f"\nrestart republished the lost version in {(time.perf_counter() - started) * 1000:.1f} ms")
        assert snap.trunks[0].cloudonix_trunk == "renamed"
        await until(lambda: not unpublished(db, account.tenant_id))
        assert unpublished(db, account.tenant_id) == []
    finally:
        await publisher.stop()


async def test_a_newer_version_is_never_overwritten(
    account: Account, kv: KeyValue, db: Engine, cp_settings: ControlPlaneSettings
) -> None:
    await build_config(account)
    await wait_version(kv, account.tenant_id, config_version(db, account.tenant_id))
    future = TenantSnapshot(tenant_id=account.tenant_id, version=10**9, compiled_at=time.time())
    await kv.put(snapshot_key(account.tenant_id), SNAPSHOT_ENCODER.encode(future))
    r = await account.post("/api/trunks", json={"name": "late", "cloudonix_trunk": "late"})
    assert r.status_code == 201
    version = config_version(db, account.tenant_id)
    await until(lambda: not unpublished(db, account.tenant_id))
    assert unpublished(db, account.tenant_id) == []  # handled (as not newer) ...
    held = await stored(kv, account.tenant_id)
    assert held is not None
    assert held.version == 10**9  # ... and the newer value stayed
    assert version < 10**9


async def test_deleted_tenant_loses_its_key(
    account: Account, kv: KeyValue, db: Engine, cp_settings: ControlPlaneSettings
) -> None:
    await build_config(account)
    await wait_version(kv, account.tenant_id, config_version(db, account.tenant_id))
    with db.begin() as conn:
        conn.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": account.tenant_id})
    publisher = SnapshotPublisher(cp_settings)
    await publisher.start()
    try:
        publisher.notify([account.tenant_id])

        async def gone() -> bool:
            return await stored(kv, account.tenant_id) is None

        await until(gone)
        assert await stored(kv, account.tenant_id) is None
    finally:
        await publisher.stop()


@pytest.fixture
def offline_db(run_id: str) -> Iterator[str]:
    """A database of this test's own: the session's control plane (live NATS, the shared database)
    republishes every unpublished outbox row on its timer, and would publish this test's row for it."""
    name = f"vlb_test_{run_id}_offline"
    admin = _admin_conninfo(BASE_DATABASE_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(BASE_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    create_schema(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_nats_down_keeps_the_api_working_and_heals(
    cp_settings: ControlPlaneSettings, offline_db: str
) -> None:
    port = free_port()
    settings = msgspec.structs.replace(
        cp_settings, database_url=offline_db, nats_url=f"nats://127.0.0.1:{port}", snapshot_republish_s=1
    )
    db = create_engine(offline_db)
    app = create_app(settings)
    server = PrivateServer("nats")
    server.port = port
    try:
        async with AsyncTestClient(app=app) as client:
            account = await register_account(client, name="Offline")
            started = time.perf_counter()
            r = await account.post("/api/trunks", json={"name": "t", "cloudonix_trunk": "c"})
            assert r.status_code == 201, r.text
            assert time.perf_counter() - started < 2.0  # the request never waits for NATS
            version = config_version(db, account.tenant_id)
            assert unpublished(db, account.tenant_id) == [version]
            await asyncio.sleep(1.0)  # the publisher tries and fails meanwhile
            assert unpublished(db, account.tenant_id) == [version]

            # NATS comes (back): the retry publishes without any new write.
            server.start()
            nc = await nats.connect(server.url)
            try:
                js = nc.jetstream()
                deadline = time.monotonic() + 15
                snap = None
                while time.monotonic() < deadline:
                    try:
                        bucket = await js.key_value(settings.config_bucket)
                        entry = await bucket.get(snapshot_key(account.tenant_id))
                        snap = SNAPSHOT_DECODER.decode(entry.value or b"")
                        break
                    except (BucketNotFoundError, KeyNotFoundError):
                        await asyncio.sleep(0.1)
                assert snap is not None
                assert snap.version == version
                print(f"\nhealed {time.perf_counter() - started:.1f} s after the write (NATS was away ~1 s)")
            finally:
                await nc.close()
            await until(lambda: not unpublished(db, account.tenant_id))
            assert unpublished(db, account.tenant_id) == []
    finally:
        server.cleanup()
        db.dispose()


async def test_unreadable_credentials_disable_only_that_agent(account: Account, database_url: str) -> None:
    made = await build_config(account)
    engine = create_async_engine(database_url)
    try:
        async with AsyncSession(engine) as session:
            snap = await compile_snapshot(
                session,
                account.tenant_id,
                secret_key=Fernet.generate_key().decode(),  # not the key the secrets were stored with
                snapshot_key=TEST_FERNET_KEY,
            )
    finally:
        await engine.dispose()
    assert snap is not None
    by_id = {a.id: a for a in snap.agents}
    assert by_id[made["agent"]["id"]].enabled is False
    assert by_id[made["agent"]["id"]].credentials is None
    assert by_id[made["plain"]["id"]].enabled is True
    assert len(snap.inbound_rules) == 1
