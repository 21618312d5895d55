"""call_stats_duration: records per tenant, duration second, UTC day and direction (exact duration
totals); the records' tenant, agent and group time indexes end with the duration

Revision ID: f7a3c9e1b5d4
Revises: f3a9c1e7b5d2
Create Date: 2026-12-01 23:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f7a3c9e1b5d4"
down_revision: str | None = "f3a9c1e7b5d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The call_records indexes that gain the duration as their last column: (name, columns before).
WIDENED = (
    ("ix_call_records_tenant_start", ["tenant_id", "start_time"]),
    ("ix_call_records_tenant_agent_start", ["tenant_id", "agent_id", "start_time"]),
    ("ix_call_records_tenant_group_start", ["tenant_id", "group_id", "start_time"]),
)


def upgrade() -> None:
    op.create_table(
        "call_stats_duration",
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("duration", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("direction", sa.String(length=32), nullable=False),
        sa.Column("calls", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_call_stats_duration_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "duration", "day", "direction", name=op.f("pk_call_stats_duration")
        ),
    )
    # From the records, keyed as aggregates.DURATION_RECOMPUTE_SQL keys them (what a rebuild writes).
    op.execute(
        """INSERT INTO call_stats_duration (tenant_id, duration, day, direction, calls)
        SELECT r.tenant_id, r.duration, (COALESCE(r.start_time, r.created_at) AT TIME ZONE 'UTC')::date,
               COALESCE(r.direction, ''), count(*)
        FROM call_records r WHERE r.duration IS NOT NULL GROUP BY 1, 2, 3, 4"""
    )
    for name, columns in WIDENED:
        op.drop_index(name, table_name="call_records")
        op.create_index(name, "call_records", [*columns, "duration"], unique=False)


def downgrade() -> None:
    for name, columns in WIDENED:
        op.drop_index(name, table_name="call_records")
        op.create_index(name, "call_records", columns, unique=False)
    op.drop_table("call_stats_duration")
