"""call_events.decision: the engine's explained decision (compact trace) per routed / dial-status event

Revision ID: f3a9c5e7b1d4
Revises: f7a3c9e1b5d4
Create Date: 2026-12-01 23:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f3a9c5e7b1d4"
down_revision: str | None = "f7a3c9e1b5d4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing (a catalog change only).
    op.add_column("call_events", sa.Column("decision", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("call_events", "decision")
