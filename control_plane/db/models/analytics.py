"""Per-tenant call aggregates that analytics reads instead of scanning call records.

One row per (tenant, UTC hour of the call's start, agent, group, direction). The event consumer
keeps them in the same transaction as the call records it writes (subtract a record's old
contribution, add its new one), and ``control_plane.analytics.aggregates.rebuild`` recomputes them
from the records; both follow ``aggregates.CONTRIBUTION_SQL``, the one definition of every column.
Agent, group and direction use 0 / ``''`` for "none", so the key has no NULLs."""

from __future__ import annotations

import datetime

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Boolean, Date, ForeignKey, Index, Integer, PrimaryKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base


def _count() -> Mapped[int]:
    return mapped_column(BigInteger, nullable=False, default=0, server_default="0")


class CallStat(Base):
    __tablename__ = "call_stats"
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "bucket", "agent_id", "group_id", "direction"),
        # An agent's or a group's hours without reading every agent's (migration f3a9c1e7b5d2).
        Index("ix_call_stats_tenant_agent_bucket", "tenant_id", "agent_id", "bucket"),
        Index("ix_call_stats_tenant_group_bucket", "tenant_id", "group_id", "bucket"),
    )

    tenant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tenants.id", ondelete="CASCADE"))
    bucket: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True))  # UTC hour start
    agent_id: Mapped[int] = mapped_column(BigInteger)  # 0 = no agent
    group_id: Mapped[int] = mapped_column(BigInteger)  # 0 = no group
    direction: Mapped[str] = mapped_column(String(32))  # '' = unknown

    calls: Mapped[int] = _count()  # every record
    finished: Mapped[int] = _count()  # in a terminal state
    completed: Mapped[int] = _count()  # answered and ended (status completed)
    busy: Mapped[int] = _count()
    failed: Mapped[int] = _count()
    no_answer: Mapped[int] = _count()
    canceled: Mapped[int] = _count()
    duration_sum: Mapped[int] = _count()  # seconds, over every record with a duration
    completed_duration_sum: Mapped[int] = _count()  # seconds, completed records with a duration
    completed_duration_n: Mapped[int] = _count()
    billsec_sum: Mapped[int] = _count()  # talk time, seconds


class CallStatTenant(Base):
    """``call_stats`` summed over agents and groups: one row per (tenant, UTC hour, routed, direction),
    where ``routed`` says whether the calls reached an agent (``call_stats.agent_id <> 0``). The reads
    without an agent or group filter (a tenant's totals, its daily trends, the record list's total) sum
    a few rows an hour here instead of one per agent, group and direction. Kept by the same upkeep and
    rebuild as ``call_stats`` (control_plane/analytics/aggregates.py), in the same transactions."""

    __tablename__ = "call_stats_tenant"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "bucket", "routed", "direction"),)

    tenant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tenants.id", ondelete="CASCADE"))
    bucket: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True))  # UTC hour start
    routed: Mapped[bool] = mapped_column(Boolean)  # the calls reached an agent
    direction: Mapped[str] = mapped_column(String(32))  # '' = unknown

    calls: Mapped[int] = _count()
    finished: Mapped[int] = _count()
    completed: Mapped[int] = _count()
    busy: Mapped[int] = _count()
    failed: Mapped[int] = _count()
    no_answer: Mapped[int] = _count()
    canceled: Mapped[int] = _count()
    duration_sum: Mapped[int] = _count()
    completed_duration_sum: Mapped[int] = _count()
    completed_duration_n: Mapped[int] = _count()
    billsec_sum: Mapped[int] = _count()
    # Records by duration bucket (aggregates.DURATION_EDGES; none while a call has no duration), for
    # the record list's duration totals; only here, not in call_stats (read without agent or group).
    dur_lt_10: Mapped[int] = _count()
    dur_10_20: Mapped[int] = _count()
    dur_20_30: Mapped[int] = _count()
    dur_30_45: Mapped[int] = _count()
    dur_45_60: Mapped[int] = _count()
    dur_60_90: Mapped[int] = _count()
    dur_90_120: Mapped[int] = _count()
    dur_120_180: Mapped[int] = _count()
    dur_180_240: Mapped[int] = _count()
    dur_240_300: Mapped[int] = _count()
    dur_300_360: Mapped[int] = _count()
    dur_360_420: Mapped[int] = _count()
    dur_420_480: Mapped[int] = _count()
    dur_480_540: Mapped[int] = _count()
    dur_540_600: Mapped[int] = _count()
    dur_600_900: Mapped[int] = _count()
    dur_900_1200: Mapped[int] = _count()
    dur_1200_1800: Mapped[int] = _count()
    dur_1800_3600: Mapped[int] = _count()
    dur_ge_3600: Mapped[int] = _count()


class CallStatDay(Base):
    """``call_stats`` summed per UTC day over directions: one row per (tenant, UTC day, agent, group).
    ``/api/analytics/agents`` and ``/groups`` read the whole UTC days of their range here (a row per
    agent and group a day, not one per hour and direction) and the edges from ``call_stats``. Kept by the
    same upkeep and rebuild as ``call_stats`` (control_plane/analytics/aggregates.py), in the same
    transactions."""

    __tablename__ = "call_stats_day"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "day", "agent_id", "group_id"),)

    tenant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tenants.id", ondelete="CASCADE"))
    day: Mapped[datetime.date] = mapped_column(Date)  # the UTC day of the call's start
    agent_id: Mapped[int] = mapped_column(BigInteger)  # 0 = no agent
    group_id: Mapped[int] = mapped_column(BigInteger)  # 0 = no group

    calls: Mapped[int] = _count()
    finished: Mapped[int] = _count()
    completed: Mapped[int] = _count()
    busy: Mapped[int] = _count()
    failed: Mapped[int] = _count()
    no_answer: Mapped[int] = _count()
    canceled: Mapped[int] = _count()
    duration_sum: Mapped[int] = _count()
    completed_duration_sum: Mapped[int] = _count()
    completed_duration_n: Mapped[int] = _count()
    billsec_sum: Mapped[int] = _count()


class CallStatDuration(Base):
    """A fine duration histogram: records per (tenant, duration in whole seconds, UTC day of the start,
    direction); live calls (no duration) are in none. The record list's ``min_duration`` /
    ``max_duration`` totals take whole duration buckets from ``call_stats_tenant`` and only the seconds
    between a bound and its nearest bucket edge from here (the key leads with the duration, so those
    few seconds are one index range whatever the history's length). Kept by the same upkeep and
    rebuild as ``call_stats`` (control_plane/analytics/aggregates.py), in the same transactions."""

    __tablename__ = "call_stats_duration"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "duration", "day", "direction"),)

    tenant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tenants.id", ondelete="CASCADE"))
    duration: Mapped[int] = mapped_column(Integer)  # seconds, as the record holds it
    day: Mapped[datetime.date] = mapped_column(Date)  # the UTC day of the call's start
    direction: Mapped[str] = mapped_column(String(32))  # '' = unknown

    calls: Mapped[int] = _count()
