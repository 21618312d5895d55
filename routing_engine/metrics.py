"""Engine metrics (prometheus-client). Under granian with several workers each worker is a process: when
``PROMETHEUS_MULTIPROC_DIR`` is set the metrics are shared through its files and ``/metrics`` merges
them; otherwise the default single-process registry is used.

The webhook path counts through ``inc`` and ``observe_decision``: plain ints and floats in this
process, folded into the prometheus metrics by ``flush`` (the engine calls it every
``FLUSH_INTERVAL_S``, before every ``/metrics`` answer and at shutdown). prometheus-client takes a lock
on every increment and, in multiprocess mode, calls ``os.getpid()`` (a system call) too; five of those
per webhook were ~10% of the engine's CPU per request. A scrape of another worker sees this worker's
counts at most ``FLUSH_INTERVAL_S`` late."""

from __future__ import annotations

import bisect
import contextlib
import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from shared.events import CANDIDATE_CODES, RULE_CODES, DecisionTrace

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
REDIS_CLUSTER_EVENTS = Counter(
    "vlb_engine_redis_cluster_events_total",
    "Redis Cluster: slot-map reads, MOVED and ASK redirections, commands retried after a node failed",
    ["kind"],
)
NATS_ERRORS = Counter("vlb_engine_nats_errors_total", "NATS errors seen by the engine", ["op"])
SLOT_RELEASES = Counter(
    "vlb_engine_slot_releases_total", "Agent slots freed by session updates and CDRs", ["source"]
)
HEARTBEATS = Counter("vlb_engine_heartbeats_total", "Engine heartbeats published on core NATS")
EVENTS_PUBLISHED = Counter("vlb_engine_events_published_total", "Call events stored in JetStream")
EVENTS_DROPPED = Counter("vlb_engine_events_dropped_total", "Call events dropped (buffer full); must stay 0")
EVENTS_UNENCODABLE = Counter(
    "vlb_engine_events_unencodable_total", "Call events msgpack could not encode, dropped; must stay 0"
)
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
OUTLIER_EJECTIONS = Counter(
    "vlb_engine_outlier_ejections_total",
    "Agents ejected from a group's selection (settings.outlier), by trigger and by the failure that did it",
    ["trigger", "failure"],
)
OUTLIER_RETURNS = Counter(
    "vlb_engine_outlier_returns_total", "Ejected agents back in their group after a success on probation"
)
OUTLIER_EJECTED = Gauge(
    "vlb_engine_outlier_ejected",
    "Agents currently ejected by this engine's decisions (sum over engines; admin lifts are not seen)",
    multiprocess_mode="livesum",
)
# (tenant, group, agent) -> end of the ejection (epoch s), the ones this process decided.
_EJECTED: dict[tuple[int, int, int], float] = {}
_EJECTED_SHOWN = [0]  # what the gauge says now


def outlier_ejected(tenant_id: int, group_id: int, agent_id: int, until_s: float | None) -> None:
    """Note an ejection this process decided (``until_s``) or its end (None), for the gauge."""
    key = (tenant_id, group_id, agent_id)
    if until_s is None:
        _EJECTED.pop(key, None)
    else:
        _EJECTED[key] = until_s


def _outlier_gauge() -> None:
    now = time.time()
    for key in [k for k, until in _EJECTED.items() if until <= now]:
        del _EJECTED[key]
    _EJECTED_SHOWN[0] = len(_EJECTED)
    OUTLIER_EJECTED.set(len(_EJECTED))


CANDIDATES_SKIPPED = Counter(
    "vlb_engine_candidates_skipped_total",
    "Candidates a decision could not choose, by reason (full, ejected, tried, disabled, credentials, "
    "group_disabled)",
    ["reason"],
)
RULES_SKIPPED = Counter(
    "vlb_engine_rules_skipped_total",
    "Inbound rules and split branches a call matched but did not take, by reason (outside_schedule, "
    "not_in_split_branch)",
    ["reason"],
)

FLUSH_INTERVAL_S = 1.0

_CHILDREN: dict[tuple[Counter, tuple[str, ...]], Counter] = {}
_COUNTS: dict[tuple[Counter, tuple[str, ...]], int] = {}
_BOUNDS = (*DECISION_BUCKETS, float("inf"))
_LATENCY_COUNTS = [0] * len(_BOUNDS)
_LATENCY_SUM = [0.0]
# Bulk increments of the histogram's buckets need its per-bucket values (prometheus-client 0.2x keeps
# them in ``_buckets`` and ``_sum``); without them the flush observes each value in turn instead.
_LATENCY_VALUES: list[float] = []
_BULK_HISTOGRAM = hasattr(DECISION_LATENCY, "_buckets") and hasattr(DECISION_LATENCY, "_sum")


def inc(metric: Counter, *labels: str) -> None:
    """Count one for ``metric`` (with ``labels``, if it has any) at the next ``flush``."""
    key = (metric, labels)
    _COUNTS[key] = _COUNTS.get(key, 0) + 1


# The decision traces seen since the last flush: (codes, excluded, rules_skipped, branches) -> times.
# One dict update per decision; the characters are counted by reason at the flush.
_TRACES: dict[tuple[str, str, str, str], int] = {}


def note_trace(trace: DecisionTrace) -> None:
    """Count a decision's skipped candidates and rules by reason (vlb_engine_candidates_skipped_total,
    vlb_engine_rules_skipped_total) at the next ``flush``."""
    key = (trace.codes, trace.excluded, trace.rules_skipped, trace.branches)
    _TRACES[key] = _TRACES.get(key, 0) + 1


def _fold_traces() -> None:
    traces = list(_TRACES.items())
    _TRACES.clear()
    candidates: dict[str, int] = {}
    rules: dict[str, int] = {}
    for (codes, excluded, rules_skipped, branches), n in traces:
        if not codes.startswith("!"):
            for code in codes:
                reason = CANDIDATE_CODES.get(code, ("", None))[1]
                if reason is not None:
                    candidates[reason] = candidates.get(reason, 0) + n
        for item in excluded.split(",") if excluded else ():
            reason = CANDIDATE_CODES.get(item.rpartition(":")[2], ("", None))[1]
            if reason is not None:
                candidates[reason] = candidates.get(reason, 0) + n
        for item in rules_skipped.split(",") if rules_skipped else ():
            rule_reason = RULE_CODES.get(item.rpartition(":")[2])
            if rule_reason is not None:
                rules[rule_reason] = rules.get(rule_reason, 0) + n
        if branches:
            rules["not_in_split_branch"] = rules.get("not_in_split_branch", 0) + n * branches.count(",")
    for reason, n in candidates.items():
        CANDIDATES_SKIPPED.labels(reason).inc(n)
    for reason, n in rules.items():
        if n:
            RULES_SKIPPED.labels(reason).inc(n)


def observe_decision(seconds: float) -> None:
    """One decision time for ``vlb_engine_decision_seconds``, at the next ``flush``."""
    if _BULK_HISTOGRAM:
        _LATENCY_COUNTS[bisect.bisect_left(_BOUNDS, seconds)] += 1  # the first bound >= seconds
        _LATENCY_SUM[0] += seconds
    else:
        _LATENCY_VALUES.append(seconds)


def flush() -> None:
    """Fold the counts kept since the last flush into the prometheus metrics."""
    if _EJECTED or _EJECTED_SHOWN[0]:
        _outlier_gauge()
    if _TRACES:
        _fold_traces()
    if _COUNTS:
        counts = list(_COUNTS.items())
        _COUNTS.clear()
        for (metric, labels), n in counts:
            child = _CHILDREN.get((metric, labels))
            if child is None:
                child = _CHILDREN[(metric, labels)] = metric.labels(*labels) if labels else metric
            child.inc(n)
    if _LATENCY_SUM[0] or any(_LATENCY_COUNTS):
        buckets = DECISION_LATENCY._buckets
        for i, n in enumerate(_LATENCY_COUNTS):
            if n:
                buckets[i].inc(n)
                _LATENCY_COUNTS[i] = 0
        DECISION_LATENCY._sum.inc(_LATENCY_SUM[0])
        _LATENCY_SUM[0] = 0.0
    if _LATENCY_VALUES:
        values = list(_LATENCY_VALUES)
        _LATENCY_VALUES.clear()
        for value in values:
            DECISION_LATENCY.observe(value)


def forget_tenant(tenant_id: int) -> None:
    label = str(tenant_id)
    for gauge in (SNAPSHOT_VERSION, SNAPSHOT_COMPILED_AT):
        with contextlib.suppress(KeyError):
            gauge.remove(label)


def render_latest() -> tuple[bytes, str]:
    """The exposition text for ``/metrics`` and its content type (this process's counts flushed)."""
    flush()
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
