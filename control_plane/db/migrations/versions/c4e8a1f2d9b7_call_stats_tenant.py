"""call_stats_tenant: the per-tenant hourly rollup of call_stats; trigram indexes on call numbers

Revision ID: c4e8a1f2d9b7
Revises: ad7346cb1ebb
Create Date: 2026-12-01 17:40:00.000000
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op

revision: str = "c4e8a1f2d9b7"
down_revision: str | None = "ad7346cb1ebb"
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
        "call_stats_tenant",
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("bucket", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("routed", sa.Boolean(), nullable=False),
        sa.Column("direction", sa.String(length=32), nullable=False),
        *(sa.Column(c, sa.BigInteger(), server_default="0", nullable=False) for c in COLUMNS),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_call_stats_tenant_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "bucket", "routed", "direction", name=op.f("pk_call_stats_tenant")
        ),
    )
    # The rollup of what call_stats already holds (the same sums rebuild() writes).
    sums = ", ".join(f"sum({c})" for c in COLUMNS)
    op.execute(
        f"INSERT INTO call_stats_tenant (tenant_id, bucket, routed, direction, {', '.join(COLUMNS)}) "  # noqa: S608
        f"SELECT tenant_id, bucket, agent_id <> 0, direction, {sums} FROM call_stats GROUP BY 1, 2, 3, 4"
    )


    # The record list's number search (LIKE '%part%'): trigram indexes.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for column in ("from_number", "to_number"):
        op.create_index(
            f"ix_call_records_{column.split('_')[0]}_trgm",
            "call_records",
            [column],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={column: "gin_trgm_ops"},
        )


def downgrade() -> None:
    op.drop_index("ix_call_records_to_trgm", table_name="call_records")
    op.drop_index("ix_call_records_from_trgm", table_name="call_records")
    op.drop_table("call_stats_tenant")
