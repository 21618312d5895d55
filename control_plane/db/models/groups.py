"""Agent groups and their members."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, IdMixin, TenantOwned, TimestampMixin


class AgentGroup(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "agent_groups"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(255))
    strategy: Mapped[str] = mapped_column(String(32))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)  # shared.snapshot.GroupSettings
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class AgentGroupMember(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "agent_group_members"
    __table_args__ = (UniqueConstraint("group_id", "agent_id"),)

    group_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("agent_groups.id", ondelete="CASCADE"), index=True
    )
    agent_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("voice_agents.id", ondelete="CASCADE"), index=True
    )
    priority: Mapped[int] = mapped_column(Integer, default=1)
    capacity: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[int] = mapped_column(Integer, default=100)
