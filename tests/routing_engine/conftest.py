"""Engine fixtures (see harness.py)."""

from tests.routing_engine.harness import (  # noqa: F401
    client,
    engine,
    kv,
    nats_client,
    private_nats,
    private_redis,
    redis_client,
    tenant,
)
