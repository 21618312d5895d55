"""Inbound routing rules, trunks and outbound routing rules."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, IdMixin, TenantOwned, TimestampMixin


class InboundRoutingRule(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "inbound_routing_rules"

    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pattern: Mapped[str] = mapped_column(String(255))
    caller_pattern: Mapped[str | None] = mapped_column(String(255), nullable=True)
    target_type: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[int] = mapped_column(BigInteger)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    domain_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("domains.id", ondelete="CASCADE"), nullable=True
    )
    # shared.snapshot.RuleSchedule; None = always open.
    schedule: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    # A traffic split, [shared.snapshot.SplitTarget]; None = the one target above. With a split,
    # target_type/target_id hold the first branch's.
    targets: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB, nullable=True)


class Trunk(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "trunks"
    __table_args__ = (
        # At most one default trunk per tenant.
        Index("uq_trunks_one_default", "tenant_id", unique=True, postgresql_where=text("is_default")),
    )

    name: Mapped[str] = mapped_column(String(255))
    cloudonix_trunk: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class OutboundRoutingRule(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "outbound_routing_rules"

    name: Mapped[str] = mapped_column(String(255))
    caller_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    destination_pattern: Mapped[str] = mapped_column(String(255))
    trunk_ids: Mapped[list[int]] = mapped_column(JSONB, default=list)
    caller_id_override: Mapped[str | None] = mapped_column(String(64), nullable=True)
    strip_prefix: Mapped[str | None] = mapped_column(String(32), nullable=True)
    add_prefix: Mapped[str | None] = mapped_column(String(32), nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
