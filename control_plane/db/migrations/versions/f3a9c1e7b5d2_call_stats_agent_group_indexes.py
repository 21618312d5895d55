"""call_stats: indexes by (tenant, agent, hour) and (tenant, group, hour)

An agent's or a group's hourly rows were found by reading every row of the tenant's hours in range
(the primary key leads with the hour) and filtering: 45,000 rows for 30 days of 20 agents to keep the
10,000 of one group. The indexed columns never change on the consumer's upserts, so updates stay HOT.

Revision ID: f3a9c1e7b5d2
Revises: e5f1b3d7a9c2
Create Date: 2026-12-01 23:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "f3a9c1e7b5d2"
down_revision: str | None = "e5f1b3d7a9c2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_call_stats_tenant_agent_bucket", "call_stats", ["tenant_id", "agent_id", "bucket"])
    op.create_index("ix_call_stats_tenant_group_bucket", "call_stats", ["tenant_id", "group_id", "bucket"])


def downgrade() -> None:
    op.drop_index("ix_call_stats_tenant_group_bucket", table_name="call_stats")
    op.drop_index("ix_call_stats_tenant_agent_bucket", table_name="call_stats")
