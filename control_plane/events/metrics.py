"""Prometheus metrics of the call-event consumer."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONSUMER_LAG = Gauge(
    "vlb_cp_events_consumer_lag",
    "Event messages (up to 64 call events each) in the stream not yet delivered (num_pending)",
)
ACK_PENDING = Gauge("vlb_cp_events_ack_pending", "Event messages delivered but not yet acknowledged")
PERSISTED = Counter("vlb_cp_events_persisted_total", "Call events written to the database", ["kind"])
DUPLICATES = Counter("vlb_cp_events_duplicate_total", "Call events already stored (redeliveries)")
ORPHANS = Counter("vlb_cp_events_orphan_total", "Call events of tenants that no longer exist (dropped)")
POISON = Counter(
    "vlb_cp_events_poison_total",
    "Call events (or whole messages) that could not be decoded or stored (dropped)",
)
ERRORS = Counter("vlb_cp_events_errors_total", "Consumer failures by stage", ["stage"])
BATCH_SECONDS = Histogram(
    "vlb_cp_events_batch_seconds",
    "Time to write one batch (one transaction)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
