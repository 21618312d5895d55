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
