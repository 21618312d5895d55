"""call records: index for the list sorted by duration

Revision ID: b3c1d2e4f5a6
Revises: 7406ebda00c9
Create Date: 2026-12-01 16:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b3c1d2e4f5a6"
down_revision: str | None = "7406ebda00c9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_call_records_tenant_duration",
        "call_records",
        ["tenant_id", sa.text("duration DESC NULLS LAST")],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_call_records_tenant_duration", table_name="call_records")
