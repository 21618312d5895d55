"""call_stats_tenant: records per duration bucket (the record list's duration totals)

Revision ID: d2b6f4a8c1e3
Revises: d1a7c3e5f9b2
Create Date: 2026-12-01 20:00:00.000000
"""

import itertools
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d2b6f4a8c1e3"
down_revision: str | None = "d1a7c3e5f9b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# control_plane.analytics.aggregates.DURATION_EDGES when this migration was written.
EDGES = (10, 20, 30, 45, 60, 90, 120, 180, 240, 300, 360, 420, 480, 540, 600, 900, 1200, 1800, 3600)
BUCKETS = (
    (f"dur_lt_{EDGES[0]}", f"r.duration < {EDGES[0]}"),
    *((f"dur_{a}_{b}", f"r.duration >= {a} AND r.duration < {b}") for a, b in itertools.pairwise(EDGES)),
    (f"dur_ge_{EDGES[-1]}", f"r.duration >= {EDGES[-1]}"),
)
COLUMNS = tuple(name for name, _ in BUCKETS)


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("call_stats_tenant", sa.Column(column, sa.BigInteger(), server_default="0", nullable=False))
    # Filled from the records, keyed as aggregates.CONTRIBUTION_SQL and TENANT_KEY_SQL key a record.
    counts = ", ".join(f"count(*) FILTER (WHERE {test}) AS {name}" for name, test in BUCKETS)
    assign = ", ".join(f"{c} = n.{c}" for c in COLUMNS)
    op.execute(
        f"""UPDATE call_stats_tenant t SET {assign}
        FROM (SELECT r.tenant_id, date_trunc('hour', COALESCE(r.start_time, r.created_at), 'UTC') AS bucket,
                     COALESCE(r.agent_id, 0) <> 0 AS routed, COALESCE(r.direction, '') AS direction, {counts}
              FROM call_records r WHERE r.duration IS NOT NULL GROUP BY 1, 2, 3, 4) n
        WHERE (t.tenant_id, t.bucket, t.routed, t.direction) = (n.tenant_id, n.bucket, n.routed, n.direction)"""  # noqa: S608
    )


def downgrade() -> None:
    for column in COLUMNS:
        op.drop_column("call_stats_tenant", column)
