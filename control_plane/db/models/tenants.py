"""Tenants and their Cloudonix domains."""

from __future__ import annotations

import datetime
from typing import Any

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Float, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, IdMixin, TenantOwned, TimestampMixin, utcnow


class Tenant(IdMixin, TimestampMixin, Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(255))
    # shared.snapshot.TenantSettings as JSON
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # Bumped in the same transaction as every routing change; the snapshot version.
    config_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Domain(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "domains"

    name: Mapped[str] = mapped_column(String(255), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the webhook key
    key_hint: Mapped[str] = mapped_column(String(16))  # last characters, to tell keys apart
    allowed_networks: Mapped[list[str]] = mapped_column(JSONB, default=list)
    max_requests_per_second: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Application ids or names the voice-application path may carry instead of the domain name.
    aliases: Mapped[list[str]] = mapped_column(JSONB, default=list)


class SnapshotOutbox(IdMixin, TenantOwned, Base):
    """A tenant whose routing changed: written in the same transaction as the change, published to NATS
    after commit, marked published then. Unpublished rows are retried on start and on a timer."""

    __tablename__ = "snapshot_outbox"

    version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    published_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
