"""The one place each plane builds its redis-py client from settings: a single Redis at
``VLB_REDIS_URL``, or a Redis Cluster when ``VLB_REDIS_CLUSTER_NODES`` lists seed nodes
(``host:port,host:port``; any reachable one is enough, the rest of the cluster is discovered). In
cluster mode the URL still gives the scheme (``rediss://`` for TLS) and the credentials; its host, port
and database are not used (a cluster has database 0 only).

Every key of a tenant carries the ``{t<tenant>}`` hash tag (shared/redis_keys.py), so each tenant's
keys live in one slot: multi-key pipelines and scripts of one tenant work on a cluster unchanged.
The engine's hot-path script client follows the cluster by itself (routing_engine/script_client.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from shared.settings import CommonSettings

# What both planes hand around: either client answers the same commands for one tenant's keys.
RedisClient = Redis | RedisCluster


def parse_nodes(spec: str) -> list[tuple[str, int]]:
    """``"h1:7000, h2:7001,[::1]:7002"`` -> ``[("h1", 7000), ("h2", 7001), ("::1", 7002)]``."""
    nodes: list[tuple[str, int]] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"a Redis Cluster node is host:port, not {item!r}")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def cluster_nodes(settings: CommonSettings) -> list[tuple[str, int]]:
    """The configured seed nodes; empty for a single Redis."""
    return parse_nodes(settings.redis_cluster_nodes)


def url_credentials(url: str) -> tuple[str | None, str | None, bool]:
    """(username, password, tls) of a ``redis://`` / ``rediss://`` URL."""
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return username, password, parts.scheme == "rediss"


def redis_from_settings(settings: CommonSettings, **options: Any) -> RedisClient:
    """The plane's redis-py client; ``options`` (timeouts, retry) apply to either kind."""
    nodes = cluster_nodes(settings)
    if not nodes:
        return Redis.from_url(settings.redis_url, **options)
    username, password, tls = url_credentials(settings.redis_url)
    options.setdefault("require_full_coverage", False)  # a master down stops only its own slots
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        username=username,
        password=password,
        ssl=tls,
        **options,
    )
