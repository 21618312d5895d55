"""Cluster fixtures: one Redis Cluster (3 masters, 3 replicas) for the whole test session, a 3-node
NATS cluster with JetStream (loadtests/natscluster.py) per test that asks for it, and the per-run
database with its schema."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.natscluster import NatsCluster
from tests.cluster.cluster import RedisClusterUnderTest
from tests.control_plane.conftest import create_schema


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterUnderTest]:
    cluster = RedisClusterUnderTest()
    began = time.monotonic()
    try:
        cluster.start()
        print(f"\nRedis Cluster up in {time.monotonic() - began:.1f} s: masters {cluster.masters()}")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def schema(database_url: str) -> str:
    """The per-run database URL, its tables created (idempotent: other suites may have made them)."""
    create_schema(database_url)
    return database_url


@pytest.fixture
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(Path(tmp_path_factory.mktemp("nats-cluster"))) as cluster:
        yield cluster
