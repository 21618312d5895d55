"""Cluster fixtures: the per-run database with its schema, and a 3-node NATS cluster with JetStream
(loadtests/natscluster.py) started for the module from the nats-server binary the project uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.natscluster import NatsCluster
from tests.control_plane.conftest import create_schema


@pytest.fixture(scope="session")
def schema(database_url: str) -> str:
    """The per-run database URL, its tables created (idempotent: other suites may have made them)."""
    create_schema(database_url)
    return database_url


@pytest.fixture
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(Path(tmp_path_factory.mktemp("nats-cluster"))) as cluster:
        yield cluster
