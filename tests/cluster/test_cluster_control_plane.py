"""The control plane on a Redis Cluster (VLB_REDIS_CLUSTER_NODES): group stats and reset-strategy
(tests/control_plane/test_groups_stats.py, run unchanged), the login throttle's MULTI and /ready."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from litestar import Litestar
from litestar.testing import AsyncTestClient

from control_plane.app import create_app
from control_plane.settings import ControlPlaneSettings
from shared.settings import load_settings
from tests.cluster.cluster import RedisClusterUnderTest
from tests.control_plane import test_auth, test_groups_stats
from tests.control_plane.conftest import Account, create_schema, register_account

test_stats_and_reset = test_groups_stats.test_stats_and_reset
test_stats_of_an_empty_group = test_groups_stats.test_stats_of_an_empty_group
test_wrong_password_is_401_and_repeated_failures_are_throttled = (
    test_auth.test_wrong_password_is_401_and_repeated_failures_are_throttled
)


@pytest.fixture(scope="module")
def cluster_app(
    database_url: str, service_env: dict[str, str], redis_cluster: RedisClusterUnderTest
) -> Litestar:
    create_schema(database_url)
    env = {**service_env, "VLB_REDIS_CLUSTER_NODES": redis_cluster.seeds}
    return create_app(load_settings(ControlPlaneSettings, env=env))


@pytest.fixture
async def client(cluster_app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=cluster_app) as c:
        yield c


@pytest.fixture
async def account(client: AsyncTestClient[Litestar]) -> Account:
    return await register_account(client)


@pytest.fixture
def store(redis_cluster: RedisClusterUnderTest) -> Iterator[redis.RedisCluster]:
    """What the stats tests write the counters with: the cluster, as the engine's script would."""
    client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.masters()[0])
    yield client
    client.close()


async def test_ready_pings_the_cluster(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json()["redis"] == "ok"
