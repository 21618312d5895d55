"""seed_demo (DESIGN: ``vlb seed-demo``): on an empty database it creates the demo tenant, its admin,
domain, agents, group and catch-all rule with a config-version bump; the second call changes nothing."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import control_plane.db.models  # noqa: F401
from control_plane.auth.passwords import verify_password
from control_plane.db.base import Base
from control_plane.seed import DEMO_DOMAIN, DEMO_EMAIL, async_database_url, seed_demo
from tests.conftest import BASE_DATABASE_URL, _admin_conninfo


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database of its own with the schema and no rows (the per-run one holds other tests' tenants)."""
    name = f"vlb_seed_{uuid.uuid4().hex[:10]}"
    admin = _admin_conninfo(BASE_DATABASE_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(BASE_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
    engine.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    tables = ["tenants", "users", "domains", "voice_agents", "agent_groups", "agent_group_members",
              "inbound_routing_rules", "snapshot_outbox"]  # fmt: skip
    with engine.connect() as conn:
        found = {t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in tables}
    engine.dispose()
    return found


def test_seed_creates_the_demo_once(empty_database: str) -> None:
    # The launcher may hand over a plain postgresql:// URL.
    plain = make_url(empty_database).set(drivername="postgresql").render_as_string(hide_password=False)
    demo = seed_demo(plain)
    assert set(demo) == {"email", "password", "domain", "webhook_key"}
    assert demo["email"] == DEMO_EMAIL
    assert demo["domain"] == DEMO_DOMAIN
    assert len(demo["password"]) >= 12
    assert len(demo["webhook_key"]) >= 40

    engine = create_engine(empty_database)
    with engine.connect() as conn:
        tenant = conn.execute(text("SELECT * FROM tenants")).mappings().one()
        assert tenant["name"] == "Demo"
        assert tenant["settings"]["timezone"] == "UTC"
        user = conn.execute(text("SELECT * FROM users")).mappings().one()
        assert (user["email"], user["role"], user["tenant_id"]) == (DEMO_EMAIL, "admin", tenant["id"])
        assert verify_password(user["password_hash"], demo["password"])
        domain = conn.execute(text("SELECT * FROM domains")).mappings().one()
        assert domain["name"] == DEMO_DOMAIN
        assert domain["key_hash"] == hashlib.sha256(demo["webhook_key"].encode()).hexdigest()
        assert domain["key_hint"] == demo["webhook_key"][-4:]
        agents = conn.execute(text("SELECT * FROM voice_agents ORDER BY id")).mappings().all()
        assert [a["provider"] for a in agents] == ["vapi", "vapi"]
        assert all(a["service_value"].startswith("+1") and a["enabled"] for a in agents)
        group = conn.execute(text("SELECT * FROM agent_groups")).mappings().one()
        assert group["strategy"] == "load_balanced"
        assert group["enabled"]
        members = conn.execute(text("SELECT * FROM agent_group_members ORDER BY agent_id")).mappings().all()
        assert [m["agent_id"] for m in members] == [a["id"] for a in agents]
        assert all(m["capacity"] == 5 and m["group_id"] == group["id"] for m in members)
        rule = conn.execute(text("SELECT * FROM inbound_routing_rules")).mappings().one()
        assert (rule["pattern"], rule["target_type"], rule["target_id"]) == ("*", "group", group["id"])
        assert rule["domain_id"] is None
        assert rule["enabled"]
        # Every row belongs to the demo tenant; the config version counts the outbox rows queued.
        for table in ("voice_agents", "agent_groups", "agent_group_members", "inbound_routing_rules"):
            owners = conn.execute(text(f"SELECT DISTINCT tenant_id FROM {table}")).scalars().all()
            assert owners == [tenant["id"]]
        versions = (
            conn.execute(
                text("SELECT version FROM snapshot_outbox WHERE published_at IS NULL ORDER BY version")
            )
            .scalars()
            .all()
        )
        assert versions
        assert versions[-1] == tenant["config_version"]
    engine.dispose()

    before = counts(empty_database)
    assert seed_demo(empty_database) == {}
    assert counts(empty_database) == before


def test_async_url_keeps_an_explicit_async_driver() -> None:
    url = "postgresql+psycopg://u:p@h:5/db"
    assert async_database_url(url) == url
    assert async_database_url("postgresql://u:p@h:5/db") == url
