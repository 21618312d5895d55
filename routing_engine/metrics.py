"""Engine metrics (prometheus-client). Under granian with several workers each worker is a process: when
``PROMETHEUS_MULTIPROC_DIR`` is set the metrics are shared through its files and ``/metrics`` merges
them; otherwise the default single-process registry is used."""

from __future__ import annotations

import contextlib
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# Seconds, from 50 µs: the engine's own work is tens of µs, a Redis round trip a few hundred.
DECISION_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

REQUESTS = Counter(
    "vlb_engine_requests_total", "Webhook requests by path kind and outcome", ["path", "outcome"]
)
DECISION_LATENCY = Histogram(
    "vlb_engine_decision_seconds",
    "Time from request parsed to CXML ready, per voice-application request",
    buckets=DECISION_BUCKETS,
)
DECISIONS = Counter(
    "vlb_engine_decisions_total", "Routing decisions by strategy and outcome", ["strategy", "outcome"]
)
REPLAYS = Counter(
    "vlb_engine_idempotent_replays_total", "Repeated webhooks answered from the stored decision"
)
AUTH_FAILURES = Counter("vlb_engine_auth_failures_total", "Rejected webhooks by reason", ["reason"])
DEGRADED = Counter("vlb_engine_degraded_decisions_total", "Decisions taken without Redis (local view)")
FALLBACKS = Counter("vlb_engine_fallback_answers_total", "Unexpected errors answered with the fallback CXML")
REDIS_ERRORS = Counter("vlb_engine_redis_errors_total", "Redis errors seen by the engine")
NATS_ERRORS = Counter("vlb_engine_nats_errors_total", "NATS errors seen by the engine", ["op"])
SLOT_RELEASES = Counter(
    "vlb_engine_slot_releases_total", "Agent slots freed by session updates and CDRs", ["source"]
)
HEARTBEATS = Counter("vlb_engine_heartbeats_total", "Engine heartbeats published on core NATS")
EVENTS_PUBLISHED = Counter("vlb_engine_events_published_total", "Call events stored in JetStream")
EVENTS_DROPPED = Counter("vlb_engine_events_dropped_total", "Call events dropped (buffer full); must stay 0")
SNAPSHOTS_REJECTED = Counter(
    "vlb_engine_snapshots_rejected_total", "Snapshot values ignored, by reason", ["reason"]
)
SNAPSHOT_VERSION = Gauge(
    "vlb_engine_snapshot_version",
    "Applied snapshot version per tenant",
    ["tenant"],
    multiprocess_mode="livemax",
)
SNAPSHOT_COMPILED_AT = Gauge(
    "vlb_engine_snapshot_compiled_timestamp_seconds",
    "compiled_at of the applied snapshot per tenant (age = time() - this)",
    ["tenant"],
    multiprocess_mode="livemax",
)
EVENTS_BUFFERED = Gauge(
    "vlb_engine_events_buffered", "Call events waiting for NATS", multiprocess_mode="livesum"
)


_CHILDREN: dict[tuple[Counter, tuple[str, ...]], Counter] = {}


def inc(metric: Counter, *labels: str) -> None:
    """``metric.labels(*labels).inc()`` with the labelled child cached (``labels()`` takes a lock and
    builds the child's key every call; the label values used here are few and fixed)."""
    key = (metric, labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    child.inc()


def forget_tenant(tenant_id: int) -> None:
    label = str(tenant_id)
    for gauge in (SNAPSHOT_VERSION, SNAPSHOT_COMPILED_AT):
        with contextlib.suppress(KeyError):
            gauge.remove(label)


def render_latest() -> tuple[bytes, str]:
    """The exposition text for ``/metrics`` and its content type."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
