"""A worker that died (kill -9, or one granian respawned) leaves its live gauges in the multiprocess
folder; the next worker to start forgets them, so a gauge such as the engine's events buffered sums
only the workers that run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess

from shared.metrics_files import forget_dead_workers

WORKER = """
from prometheus_client import Counter, Gauge
Gauge("vlb_test_buffered", "x", multiprocess_mode="livesum").set(7)
Counter("vlb_test_total", "x").inc(3)
"""


def gauge_and_counter(where: Path) -> tuple[float | None, float | None]:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(where))  # type: ignore[no-untyped-call]
    gauge = registry.get_sample_value("vlb_test_buffered")
    total = registry.get_sample_value("vlb_test_total")
    return gauge, total


def test_a_dead_workers_live_gauges_are_forgotten_its_counters_kept(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):  # two workers that ran and are gone
        subprocess.run([sys.executable, "-c", WORKER], env=env, check=True)
    assert gauge_and_counter(tmp_path) == (14.0, 6.0)
    dead = forget_dead_workers(str(tmp_path))
    assert len(dead) == 2
    gauge, total = gauge_and_counter(tmp_path)
    assert gauge in (None, 0.0)
    assert total == 6.0  # what the dead workers counted still counts
    assert forget_dead_workers(str(tmp_path)) == []
    assert forget_dead_workers(str(tmp_path / "nowhere")) == []
