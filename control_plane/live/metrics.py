"""Prometheus metrics of the live feed (per worker)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CLIENTS = Gauge(
    "vlb_cp_live_clients", "Live-feed websockets open on this worker", multiprocess_mode="livesum"
)
TENANTS = Gauge(
    "vlb_cp_live_tenants", "Tenants with a live-feed subscription on this worker", multiprocess_mode="livesum"
)
FRAMES = Counter("vlb_cp_live_frames_total", "Frames queued to live-feed clients", ["type"])
DROPPED = Counter("vlb_cp_live_dropped_total", "Live-feed clients closed with 1013 (did not keep up)")
REFUSED = Counter("vlb_cp_live_refused_total", "Live-feed connections closed with 4401 (no valid token)")
ERRORS = Counter("vlb_cp_live_errors_total", "Live-feed failures by stage", ["stage"])
