"""End-to-end fault fixtures: the per-run database with the schema built from the models."""

from __future__ import annotations

import pytest

from tests.control_plane.conftest import create_schema


@pytest.fixture(scope="session")
def schema(database_url: str) -> str:
    """The per-run database URL, its tables created (idempotent: other suites may have made them)."""
    create_schema(database_url)
    return database_url
