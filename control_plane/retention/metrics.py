"""Prometheus metrics of the retention purge."""

from __future__ import annotations

from prometheus_client import Counter

PURGED = Counter(
    "vlb_cp_purged_rows_total",
    "Rows deleted by the retention purge, by kind (call_records, call_events, cdrs, webhook_audit)",
    ["kind"],
)
RUNS = Counter(
    "vlb_cp_purge_runs_total",
    "Retention purge attempts by outcome (done, failed, busy: another replica held the lock, "
    "already: the day's run was done)",
    ["outcome"],
)
