"""The balancer's choice rules, slots, windows, idempotency and reset (tests/routing_engine/
test_balancer.py, run unchanged) against a real Redis Cluster, for a tenant on each master: the script
calls through the engine's cluster client, the rest through redis-py's RedisCluster. No decision may
be degraded."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from routing_engine.balancer import Balancer
from routing_engine.script_client import ClusterScriptClient, key_slot
from shared.redis_client import RedisClient, parse_nodes, redis_from_settings
from shared.settings import CommonSettings
from tests.cluster.cluster import RedisClusterUnderTest
from tests.routing_engine import test_balancer as single

# Every test of the single-Redis module, collected here with this module's fixtures.
globals().update({name: test for name, test in vars(single).items() if name.startswith("test_")})

_offsets = itertools.count()


@pytest.fixture(scope="module")
async def redis_client(redis_cluster: RedisClusterUnderTest) -> AsyncIterator[RedisClient]:
    client = redis_from_settings(CommonSettings(redis_cluster_nodes=redis_cluster.seeds))
    assert isinstance(client, RedisCluster)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def scripts(redis_cluster: RedisClusterUnderTest) -> AsyncIterator[ClusterScriptClient]:
    client = ClusterScriptClient(parse_nodes(redis_cluster.seeds))
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def master_tenants(redis_cluster: RedisClusterUnderTest) -> list[list[int]]:
    """Fresh tenant ids for each master (the {t<id>} slot it owns)."""
    return list(redis_cluster.tenants_per_master(start=50_000).values())


@pytest.fixture(params=[0, 1, 2], ids=["master1", "master2", "master3"])
def tenant(
    request: pytest.FixtureRequest, master_tenants: list[list[int]], redis_cluster: RedisClusterUnderTest
) -> int:
    owned = master_tenants[request.param]
    tenant_id = owned[next(_offsets) % len(owned)] + 0
    owned.remove(tenant_id)  # one test per tenant: the single-Redis tests expect fresh counters
    assert redis_cluster.master_of(key_slot(f"{{t{tenant_id}}}")) == redis_cluster.masters()[request.param]
    return tenant_id


@pytest.fixture
async def balancer(redis_client: RedisClient, scripts: ClusterScriptClient) -> AsyncIterator[Balancer]:
    balancer = Balancer(redis_client, scripts=scripts, prefix=os.environ["VLB_REDIS_PREFIX"])
    yield balancer
    assert balancer.degraded_total == 0
    assert balancer.redis_errors_total == 0
