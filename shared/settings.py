"""Settings base: one msgspec Struct per service, filled from ``VLB_*`` environment variables and an
optional ``.env`` file (environment wins)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import msgspec

ENV_PREFIX = "VLB_"

S = TypeVar("S", bound=msgspec.Struct)


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a minimal ``KEY=VALUE`` .env file (comments and blank lines ignored, quotes stripped)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def load_settings(cls: type[S], env: dict[str, str] | None = None, dotenv: Path | None = None) -> S:
    """Build ``cls`` from ``VLB_<FIELD>`` variables; field names are matched case-insensitively."""
    source: dict[str, str] = {}
    source.update(read_dotenv(dotenv if dotenv is not None else Path(".env")))
    source.update(os.environ if env is None else env)
    fields = {f.name for f in msgspec.structs.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in source.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in fields:
            values[name] = value
    try:
        return msgspec.convert(values, type=cls, strict=False)
    except msgspec.ValidationError as exc:
        raise SystemExit(f"invalid settings: {exc}") from exc


class CommonSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Fields both services read. Each service subclasses this with its own."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Seed nodes of a Redis Cluster, ``host:port,host:port``; set = both planes talk to that cluster
    # (the URL then gives only the scheme and credentials). See shared/redis_client.py.
    redis_cluster_nodes: str = ""
    # One NATS URL, or several separated by commas (the servers of a cluster): the client connects to
    # one of them and moves to another when it fails.
    nats_url: str = "nats://127.0.0.1:4222"
    # Replicas of the JetStream streams this system creates (snapshot KV bucket, events stream, exports
    # object store): 3 on a 3-node NATS cluster, 1 on a single server. Only applies when creating them.
    nats_replicas: int = 1
    # Fernet key (urlsafe base64 of 32 bytes) that encrypts agent credentials inside snapshots.
    snapshot_key: str = ""
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    redis_prefix: str = "vlb"
    config_bucket: str = "vlb-config"
    events_stream: str = "VLB_EVENTS"
    events_subject_prefix: str = "vlb.events"
    # Core NATS subject of the engines' heartbeats (engine id, pid, applied snapshot versions).
    heartbeat_subject: str = "vlb.engines.heartbeat"
    engine_public_url: str = ""
    # Bearer token for /metrics (both planes) and the engine's /status; empty = only clients on this
    # host that no proxy forwarded may read them (shared/ops_access.py).
    ops_token: str = ""
    # Reverse-proxy networks whose X-Forwarded-For is believed (CIDRs, comma-separated; empty = none):
    # the client address the engine's allowlist and the login throttle see (shared/client_address.py).
    trusted_proxies: str = ""
    data_dir: str = ".vlb"

    @property
    def nats_servers(self) -> list[str]:
        """``nats_url`` as the list of servers nats-py connects to (comma-separated in the setting)."""
        return nats_servers(self.nats_url)


def nats_servers(url: str) -> list[str]:
    """``"nats://a:4222, nats://b:4222"`` -> ``["nats://a:4222", "nats://b:4222"]``."""
    return [part.strip() for part in url.split(",") if part.strip()]
