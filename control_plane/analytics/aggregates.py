"""The definition of ``call_stats`` (control_plane/db/models/analytics.py) and its rebuild.

A call record contributes to exactly one row, keyed by (tenant, UTC hour of its start, agent, group,
direction). ``CONTRIBUTION_SQL`` says what a record adds to each column; ``contribution`` says the
same in Python for the consumer's incremental upkeep, and ``rebuild`` recomputes a tenant's rows from
its records. A test holds the three to one another: after any sequence of events, the rows the
consumer kept equal a rebuild's."""

from __future__ import annotations

import datetime
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.enums import TERMINAL_STATUSES, CallStatus

COLUMNS = (
    "calls",
    "finished",
    "completed",
    "busy",
    "failed",
    "no_answer",
    "canceled",
    "duration_sum",
    "completed_duration_sum",
    "completed_duration_n",
    "billsec_sum",
)
KEY = ("tenant_id", "bucket", "agent_id", "group_id", "direction")

_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATUSES))

# What one call record (alias r) contributes, column by column, in COLUMNS order, and its key.
CONTRIBUTION_SQL = f"""
    r.tenant_id,
    date_trunc('hour', COALESCE(r.start_time, r.created_at), 'UTC') AS bucket,
    COALESCE(r.agent_id, 0) AS agent_id,
    COALESCE(r.group_id, 0) AS group_id,
    COALESCE(r.direction, '') AS direction,
    1 AS calls,
    (r.status IN ({_TERMINAL_SQL}))::int AS finished,
    (r.status = 'completed')::int AS completed,
    (r.status = 'busy')::int AS busy,
    (r.status = 'failed')::int AS failed,
    (r.status = 'no_answer')::int AS no_answer,
    (r.status = 'canceled')::int AS canceled,
    COALESCE(r.duration, 0) AS duration_sum,
    CASE WHEN r.status = 'completed' THEN COALESCE(r.duration, 0) ELSE 0 END AS completed_duration_sum,
    (r.status = 'completed' AND r.duration IS NOT NULL)::int AS completed_duration_n,
    COALESCE(r.billsec, 0) AS billsec_sum
"""


class StatKey(NamedTuple):
    tenant_id: int
    bucket: datetime.datetime
    agent_id: int
    group_id: int
    direction: str


def bucket_of(start_time: datetime.datetime | None, created_at: datetime.datetime) -> datetime.datetime:
    moment = (start_time or created_at).astimezone(datetime.UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def contribution(
    *,
    tenant_id: int,
    start_time: datetime.datetime | None,
    created_at: datetime.datetime,
    agent_id: int | None,
    group_id: int | None,
    direction: str | None,
    status: str,
    duration: int | None,
    billsec: int | None,
) -> tuple[StatKey, tuple[int, ...]]:
    """What one record adds to ``call_stats``: its row's key and a value per COLUMNS entry."""
    completed = status == CallStatus.COMPLETED.value
    key = StatKey(tenant_id, bucket_of(start_time, created_at), agent_id or 0, group_id or 0, direction or "")
    values = (
        1,
        int(status in TERMINAL_STATUSES),
        int(completed),
        int(status == CallStatus.BUSY.value),
        int(status == CallStatus.FAILED.value),
        int(status == CallStatus.NO_ANSWER.value),
        int(status == CallStatus.CANCELED.value),
        duration or 0,
        (duration or 0) if completed else 0,
        int(completed and duration is not None),
        billsec or 0,
    )
    return key, values


_SUMS = ", ".join(f"sum({c})" for c in COLUMNS)
# Built from the constant column names above, never from input.
REBUILD_SQL = f"""
    INSERT INTO call_stats ({", ".join(KEY)}, {", ".join(COLUMNS)})
    SELECT {", ".join(KEY)}, {_SUMS}
    FROM (SELECT {CONTRIBUTION_SQL} FROM call_records r WHERE r.tenant_id = :tenant_id) c
    GROUP BY {", ".join(KEY)}
"""  # noqa: S608


async def rebuild(session: AsyncSession, tenant_id: int) -> int:
    """Recompute one tenant's aggregates from its call records, in the caller's transaction.

    Locks the tenant's aggregate rows first so a consumer writing at the same time waits for the
    rebuild instead of adding its delta to rows about to be replaced. Returns the rows written."""
    await session.execute(
        text("SELECT 1 FROM call_stats WHERE tenant_id = :tenant_id FOR UPDATE"), {"tenant_id": tenant_id}
    )
    await session.execute(
        text("DELETE FROM call_stats WHERE tenant_id = :tenant_id"), {"tenant_id": tenant_id}
    )
    result = await session.execute(text(REBUILD_SQL), {"tenant_id": tenant_id})
    return int(getattr(result, "rowcount", 0) or 0)
