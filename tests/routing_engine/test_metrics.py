"""The webhook path's counts are kept in plain numbers and folded into prometheus-client by flush():
nothing may be lost or land in the wrong bucket on the way."""

from __future__ import annotations

from prometheus_client import REGISTRY

from routing_engine import metrics


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_counts_and_decision_times_reach_the_exposition() -> None:
    metrics.flush()
    routed = {"path": "application", "outcome": "routed"}
    before = {
        "requests": _sample("vlb_engine_requests_total", routed),
        "replays": _sample("vlb_engine_idempotent_replays_total"),
        "count": _sample("vlb_engine_decision_seconds_count"),
        "sum": _sample("vlb_engine_decision_seconds_sum"),
        "le50us": _sample("vlb_engine_decision_seconds_bucket", {"le": "5e-05"}),
        "le500us": _sample("vlb_engine_decision_seconds_bucket", {"le": "0.0005"}),
        "le1s": _sample("vlb_engine_decision_seconds_bucket", {"le": "1.0"}),
        "inf": _sample("vlb_engine_decision_seconds_bucket", {"le": "+Inf"}),
    }
    for _ in range(3):
        metrics.inc(metrics.REQUESTS, "application", "routed")
    metrics.inc(metrics.REPLAYS)
    for seconds in (0.00004, 0.00005, 0.0003, 2.0):  # 50 µs exactly belongs to the 50 µs bucket
        metrics.observe_decision(seconds)

    text, _ = metrics.render_latest()  # flushes first

    assert b"vlb_engine_requests_total" in text
    assert _sample("vlb_engine_requests_total", routed) - before["requests"] == 3
    assert _sample("vlb_engine_idempotent_replays_total") - before["replays"] == 1
    assert _sample("vlb_engine_decision_seconds_count") - before["count"] == 4
    assert abs(_sample("vlb_engine_decision_seconds_sum") - before["sum"] - 2.00039) < 1e-9
    assert _sample("vlb_engine_decision_seconds_bucket", {"le": "5e-05"}) - before["le50us"] == 2
    assert _sample("vlb_engine_decision_seconds_bucket", {"le": "0.0005"}) - before["le500us"] == 3
    assert _sample("vlb_engine_decision_seconds_bucket", {"le": "1.0"}) - before["le1s"] == 3
    assert _sample("vlb_engine_decision_seconds_bucket", {"le": "+Inf"}) - before["inf"] == 4

    # A second flush with nothing new moves nothing.
    metrics.flush()
    assert _sample("vlb_engine_decision_seconds_count") - before["count"] == 4
    assert _sample("vlb_engine_requests_total", routed) - before["requests"] == 3
