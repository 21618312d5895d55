"""Prometheus multiprocess files of processes that are gone.

With ``PROMETHEUS_MULTIPROC_DIR`` every worker writes its metrics to files named after its pid. A
worker granian respawned (or one killed) leaves its files behind; for counters and histograms that is
what the multiprocess mode wants (totals keep what the dead worker counted), but its ``live*`` gauges
(events buffered, live-feed clients) would keep adding the dead worker's last value.
``prometheus_client.multiprocess.mark_process_dead`` removes those; a starting worker calls
``forget_dead_workers`` for every pid that no longer runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import multiprocess

_LIVE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def forget_dead_workers(directory: str | None = None) -> list[int]:
    """Mark every pid with live-gauge files in ``directory`` (default: ``PROMETHEUS_MULTIPROC_DIR``)
    that no longer runs as dead; returns those pids."""
    where = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not where or not os.path.isdir(where):
        return []
    pids = set()
    for entry in Path(where).iterdir():
        found = _LIVE_FILE.match(entry.name)
        if found:
            pids.add(int(found.group(1)))
    dead = sorted(pid for pid in pids if pid != os.getpid() and not _alive(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, where)  # type: ignore[no-untyped-call]
    return dead
