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


def test_the_duration_buckets_migration_fills_them_from_the_records(empty_database: str) -> None:
    """A database with records and their aggregates gets the duration buckets (and, by a later
    migration, the duration histogram) filled: afterwards every table equals what a rebuild computes
    (the drift check counts 0 rows)."""
    from sqlalchemy import text

    from control_plane.analytics.aggregates import (
        CONTRIBUTION_SQL,
        DRIFT_SQL,
        KEY,
        TENANT_KEY,
        TENANT_KEY_SQL,
    )
    from control_plane.analytics.sums import SUMMED

    upgrade(empty_database, "c5e8a1f2d9b7")
    engine = create_engine(empty_database)
    sums = ", ".join(f"sum({c})" for c in SUMMED)
    with engine.begin() as conn:
        tenant = conn.exec_driver_sql(
            "INSERT INTO tenants (name, settings, created_at, updated_at) "
            "VALUES ('t', '{}', now(), now()) RETURNING id"
        ).scalar_one()
        conn.exec_driver_sql(
            "INSERT INTO call_records (tenant_id, session_token, direction, agent_id, group_id, status,"
            " attempts, start_time, duration, created_at, updated_at)"
            " SELECT %s, 'm' || g, CASE WHEN g %% 3 = 0 THEN 'outbound' ELSE 'inbound' END, g %% 4, g %% 2,"
            " CASE WHEN g %% 7 = 0 THEN 'connected' ELSE 'completed' END, 1,"
            " timestamptz '2026-12-01 08:00+00' + g * interval '37 s',"
            " CASE WHEN g %% 7 = 0 THEN NULL ELSE (g * 13) %% 4000 END, now(), now()"
            " FROM generate_series(1, 3000) g",
            (tenant,),
        )
        # The aggregates as the code before the migration kept them (every column but the buckets).
        conn.exec_driver_sql(
            f"INSERT INTO call_stats ({', '.join(KEY)}, {', '.join(SUMMED)}) SELECT {', '.join(KEY)}, {sums}"
            f" FROM (SELECT {CONTRIBUTION_SQL} FROM call_records r) c GROUP BY {', '.join(KEY)}"
        )
        conn.exec_driver_sql(
            f"INSERT INTO call_stats_tenant ({', '.join(TENANT_KEY)}, {', '.join(SUMMED)})"
            f" SELECT {TENANT_KEY_SQL}, {sums} FROM call_stats s GROUP BY 1, 2, 3, 4"
        )
    upgrade(empty_database)
    with engine.connect() as conn:
        drifted = conn.execute(text(DRIFT_SQL), {"tenant_id": tenant}).scalar_one()
        filled = conn.exec_driver_sql(
            "SELECT sum(dur_lt_10 + dur_300_360 + dur_ge_3600) FROM call_stats_tenant"
        ).scalar_one()
        # call_stats_day (a later migration) rolled up from call_stats: two UTC days, in the drift too.
        days = conn.exec_driver_sql("SELECT count(DISTINCT day) FROM call_stats_day").scalar_one()
        # call_stats_duration (a later migration) filled from the records: in the drift too.
        histogram = conn.exec_driver_sql(
            "SELECT count(*), sum(calls), count(DISTINCT day), count(DISTINCT direction) FROM call_stats_duration"
        ).one()
    engine.dispose()
    assert drifted == 0
    assert filled > 0
    assert days == 2
    rows, records, histogram_days, directions = histogram
    assert records == 3000 - 3000 // 7  # every record with a duration, once
    assert rows > 2000
    assert (histogram_days, directions) == (2, 2)
