"""Retention purge runs (control_plane/retention): one row per run, the durable proof that a day's
scheduled purge happened (``scheduled_for`` is unique), and its audit (rows removed per tenant and kind)."""

from __future__ import annotations

import datetime
from typing import Any

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Date, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, IdMixin


class PurgeRun(IdMixin, Base):
    __tablename__ = "purge_runs"
    __table_args__ = (UniqueConstraint("scheduled_for"),)

    # The UTC day of the scheduled slot this run serves; NULL for a run asked by hand (``vlb purge``).
    scheduled_for: Mapped[datetime.date | None] = mapped_column(Date, nullable=True)
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | manual
    status: Mapped[str] = mapped_column(String(16))  # running | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    host: Mapped[str] = mapped_column(String(128))
    # {"<tenant id>": {"call_records": n, "call_events": n, "cdrs": n, "webhook_audit": n}}
    removed: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True))
    finished_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
