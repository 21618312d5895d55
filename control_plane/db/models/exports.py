"""Asynchronous export jobs (SPEC §2.9): one row per requested file, durable so a job whose control
plane died is claimed again by another (or the restarted) one once its lease runs out."""

from __future__ import annotations

import datetime
from typing import Any

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, IdMixin, TenantOwned, TimestampMixin

# The jobs a worker may claim: queued ones, and running ones whose lease may have run out.
PENDING_SQL = "status IN ('queued', 'running')"


def _ts() -> Mapped[Any]:
    return mapped_column(DateTimeUTC(timezone=True), nullable=True)


class ExportJob(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "export_jobs"
    __table_args__ = (
        Index("ix_export_jobs_pending", "id", postgresql_where=text(PENDING_SQL)),
        Index("ix_export_jobs_done_expires", "expires_at", postgresql_where=text("status = 'done'")),
    )

    user_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # who asked (no FK: audit)
    type: Mapped[str] = mapped_column(String(16))  # call_records | cdr
    format: Mapped[str] = mapped_column(String(8))  # csv | json | ndjson
    fields: Mapped[list[str]] = mapped_column(JSONB)
    # The filters as asked (echoed back) and as validated (dates resolved in the tenant's zone then).
    filters: Mapped[dict[str, Any]] = mapped_column(JSONB)
    resolved_filters: Mapped[dict[str, Any]] = mapped_column(JSONB)
    anonymize: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))  # queued | running | done | failed | expired
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime.datetime | None] = _ts()
    rows: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # of the gzip file
    object_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime.datetime | None] = _ts()
    finished_at: Mapped[datetime.datetime | None] = _ts()
    expires_at: Mapped[datetime.datetime | None] = _ts()
