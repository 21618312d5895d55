"""One Redis Cluster (3 masters, 3 replicas) for the whole test session, torn down at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.cluster.cluster import RedisClusterUnderTest


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
