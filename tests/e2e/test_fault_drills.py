"""The fault drills of loadtests/faults/drills.py in their short form (few calls, short outages), on
one private system of their own (PostgreSQL, Redis and NATS started here on free ports, never the
shared ones; one control plane, two engine replicas): kill -9 an engine replica, restart Redis, stop
NATS, kill -9 the control plane mid-batch, fill PostgreSQL's disk. Every call must be answered and
recorded once, none lost (but for a call a killed engine answered in its last moments, whose
events died in its publish buffer), no agent over its capacity outside the Redis outage, no slot left behind.

The disk drill mounts a 256 MB tmpfs for PostgreSQL's data folder, which takes root: without it that
drill is left out here, said so on the output, and stays runnable by hand
(``python -m loadtests.faults.drills pg-disk-full``). A full disk is PostgreSQL's "try again later"
(psycopg's OperationalError, SQLSTATE 53100): the consumer keeps the batch unacknowledged and retries;
it once took each event of the batch for a poison one and dropped it, which this drill caught."""

from __future__ import annotations

import pytest

from loadtests.faults.drills import DRILLS, run_drills, tmpfs_allowed

pytestmark = pytest.mark.slow


def test_fault_drills_short_form() -> None:
    names = [n for n in DRILLS if n != "pg-disk-full" or tmpfs_allowed()]
    if "pg-disk-full" not in names:
        print("\npg-disk-full left out: mounting its tmpfs needs root")
    summaries = run_drills(names, short=True)
    assert [s.name for s in summaries] == names
    failed = [s.render() for s in summaries if not s.ok]
    assert not failed, "\n".join(failed)
    for s in summaries:
        assert s.driver.sent > 0
        # Only what a kill -9 can take: calls a killed replica answered in its last moments, whose
        # events were still in its publish buffer (docs/operations.md); any other loss fails.
        assert s.lost == len(s.in_killed_buffer), s.render()
        assert s.lost <= 2, s.render()
        assert s.recorded.duplicated == 0
