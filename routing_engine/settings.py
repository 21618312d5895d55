"""Routing-engine settings, from ``VLB_*`` environment variables (see shared.settings)."""

from __future__ import annotations

from functools import lru_cache

from shared.settings import CommonSettings, load_settings


class EngineSettings(CommonSettings, kw_only=True, frozen=True):
    engine_host: str = "127.0.0.1"
    engine_port: int = 8080
    engine_workers: int = 2
    # Deprecated: VLB_TRUSTED_PROXIES replaces it. True (with no trusted proxies listed) still believes
    # the right-most X-Forwarded-For entry from any peer, as before, with a warning at start.
    trust_proxy: bool = False
    idempotency_ttl_s: int = 86400
    active_slot_ttl_s: int = 14400
    max_body_bytes: int = 262144
    # Call events held in memory while NATS is unreachable; beyond it the oldest are dropped (counted).
    events_buffer_size: int = 10000
    # How long the publisher waits for more events before sending a message (batches of up to 64).
    events_linger_ms: float = 10.0
    heartbeat_interval_s: float = 5.0
    # Log lines from the event loop are written together at most this long after (0 = one write per
    # line); see shared.logging.BufferedLines.
    log_buffer_ms: float = 20.0
    # Decide the same tenant's concurrent calls in one Redis script call per event-loop tick (see
    # docs/performance.md); off = one EVALSHA per decision.
    balancer_coalesce: bool = True
    # Script calls a tenant may have out at once while coalescing (pipelined on one connection): a
    # decision goes at once while fewer are out, else waits for the next call with the others.
    balancer_in_flight: int = 2
    # A worker (a first start or one granian respawned) waits this long for its first snapshot load
    # before it serves, and a webhook that still arrives before that load waits for it this long, then
    # gets 503 with Retry-After (never a 404 "unknown domain" for a domain the bucket holds).
    startup_load_wait_s: float = 10.0
    unloaded_request_wait_s: float = 2.0


@lru_cache(maxsize=1)
def get_engine_settings() -> EngineSettings:
    return load_settings(EngineSettings)
