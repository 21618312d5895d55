"""call_stats_day: call_stats summed per UTC day, agent and group (for analytics/agents and /groups)

Revision ID: e5f1b3d7a9c2
Revises: d2b6f4a8c1e3
Create Date: 2026-12-01 21:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e5f1b3d7a9c2"
down_revision: str | None = "d2b6f4a8c1e3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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


def upgrade() -> None:
    op.create_table(
        "call_stats_day",
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("agent_id", sa.BigInteger(), nullable=False),
        sa.Column("group_id", sa.BigInteger(), nullable=False),
        *(sa.Column(c, sa.BigInteger(), server_default="0", nullable=False) for c in COLUMNS),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_call_stats_day_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "day", "agent_id", "group_id", name=op.f("pk_call_stats_day")),
    )
    # The rollup of what call_stats already holds (the same sums rebuild() writes).
    sums = ", ".join(f"sum({c})" for c in COLUMNS)
    op.execute(
        f"INSERT INTO call_stats_day (tenant_id, day, agent_id, group_id, {', '.join(COLUMNS)}) "  # noqa: S608
        f"SELECT tenant_id, (bucket AT TIME ZONE 'UTC')::date, agent_id, group_id, {sums} "
        "FROM call_stats GROUP BY 1, 2, 3, 4"
    )


def downgrade() -> None:
    op.drop_table("call_stats_day")
