"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

import control_plane.db.models  # noqa: F401
from control_plane.db.base import Base
from control_plane.db.migrate import upgrade


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    name = f"vlb_mig_{uuid.uuid4().hex[:8]}"
    admin = make_url(database_url).set(drivername="postgresql", database="postgres")
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrations_build_the_models_schema(empty_database: str) -> None:
    upgrade(empty_database)
    engine = create_engine(empty_database)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_migrations_are_idempotent(empty_database: str) -> None:
    upgrade(empty_database)
    upgrade(empty_database)  # already at head: nothing to do, no error


def test_the_tenant_rollup_migration_rolls_up_existing_call_stats(empty_database: str) -> None:
    """A database with call_stats rows gets call_stats_tenant rows that sum them (routed or not)."""
    upgrade(empty_database, "ad7346cb1ebb")
    engine = create_engine(empty_database)
    with engine.begin() as conn:
        tenant = conn.exec_driver_sql(
            "INSERT INTO tenants (name, settings, created_at, updated_at) "
            "VALUES ('t', '{}', now(), now()) RETURNING id"
        ).scalar_one()
        hour = "2026-12-01 10:00+00"
        for agent, group, direction, calls, billsec in [
            (1, 7, "inbound", 3, 100),
            (2, 7, "inbound", 2, 50),
            (2, 0, "outbound", 1, 10),
            (0, 0, "inbound", 4, 0),
        ]:
            conn.exec_driver_sql(
                "INSERT INTO call_stats (tenant_id, bucket, agent_id, group_id, direction, calls, billsec_sum)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (tenant, hour, agent, group, direction, calls, billsec),
            )
    upgrade(empty_database)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT routed, direction, calls, billsec_sum FROM call_stats_tenant ORDER BY 1, 2"
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        (False, "inbound", 4, 0),
        (True, "inbound", 5, 150),
        (True, "outbound", 1, 10),
    ]
