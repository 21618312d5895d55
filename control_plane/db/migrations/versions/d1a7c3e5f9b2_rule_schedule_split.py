"""inbound rule schedules and traffic splits; the split branch on call records (issue 15, parts 4-5)

Revision ID: d1a7c3e5f9b2
Revises: c5e8a1f2d9b7
Create Date: 2026-12-01 19:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "d1a7c3e5f9b2"
down_revision: str | None = "c5e8a1f2d9b7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "inbound_routing_rules",
        sa.Column("schedule", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.add_column(
        "inbound_routing_rules",
        sa.Column("targets", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    # Nullable, no default: adding it rewrites nothing, however many records there are.
    op.add_column("call_records", sa.Column("split_target", sa.String(length=40), nullable=True))
    # Holds only split calls (none yet), so it builds at once.
    op.create_index(
        "ix_call_records_split",
        "call_records",
        ["tenant_id", "rule_id", sa.text("COALESCE(start_time, created_at)")],
        postgresql_where=sa.text("split_target IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_call_records_split", table_name="call_records")
    op.drop_column("call_records", "split_target")
    op.drop_column("inbound_routing_rules", "targets")
    op.drop_column("inbound_routing_rules", "schedule")
