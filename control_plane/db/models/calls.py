"""Calls as the engines report them: one record per call, its event timeline, CDRs and the webhook
audit. Written only by the event consumer (control_plane/events), each row with a unique key so a
redelivered event changes nothing. Agent, group and rule ids carry no foreign key: a record outlives
the config it was routed by."""

from __future__ import annotations

import datetime
from typing import Any

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, IdMixin, TenantOwned, TimestampMixin, utcnow

# The live states, for the partial index behind /api/calls/active (SPEC §6).
LIVE_STATUS_SQL = "status IN ('received', 'queued', 'routing', 'connecting', 'connected')"


def _ts(nullable: bool = True) -> Mapped[Any]:
    return mapped_column(DateTimeUTC(timezone=True), nullable=nullable)


class CallRecord(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "call_records"
    __table_args__ = (
        UniqueConstraint("tenant_id", "session_token"),
        # The duration ends the tenant's, the agent's and the group's time indexes: a duration count
        # over a time range (the edges of call_stats_duration's days) or over an agent's or group's
        # records checks it in the index and reads from the table only the records it counts.
        Index("ix_call_records_tenant_start", "tenant_id", "start_time", "duration"),
        Index("ix_call_records_tenant_status_start", "tenant_id", "status", "start_time"),
        Index("ix_call_records_tenant_agent_start", "tenant_id", "agent_id", "start_time", "duration"),
        Index("ix_call_records_tenant_group_start", "tenant_id", "group_id", "start_time", "duration"),
        Index("ix_call_records_live", "tenant_id", "start_time", postgresql_where=text(LIVE_STATUS_SQL)),
        # The split report (GET /api/analytics/splits): only calls that took a split branch.
        Index(
            "ix_call_records_split",
            "tenant_id",
            "rule_id",
            text("COALESCE(start_time, created_at)"),
            postgresql_where=text("split_target IS NOT NULL"),
        ),
        # The record list sorted by duration, longest first (its default NULLS LAST order), and its
        # min/max_duration counts.
        Index("ix_call_records_tenant_duration", "tenant_id", text("duration DESC NULLS LAST")),
        # The list's ``from``/``to`` filters match part of a number (LIKE '%…%'): trigrams (pg_trgm,
        # created with the schema) find the few records holding it instead of scanning the tenant's.
        Index(
            "ix_call_records_from_trgm",
            "from_number",
            postgresql_using="gin",
            postgresql_ops={"from_number": "gin_trgm_ops"},
        ),
        Index(
            "ix_call_records_to_trgm",
            "to_number",
            postgresql_using="gin",
            postgresql_ops={"to_number": "gin_trgm_ops"},
        ),
    )

    session_token: Mapped[str] = mapped_column(String(255))
    direction: Mapped[str | None] = mapped_column(String(32), nullable=True)
    from_number: Mapped[str | None] = mapped_column(String(255), nullable=True)
    to_number: Mapped[str | None] = mapped_column(String(255), nullable=True)
    caller_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    domain: Mapped[str | None] = mapped_column(String(255), nullable=True)
    agent_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    group_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rule_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The traffic-split branch the call took ("group:<id>" | "agent:<id>"); None when its rule splits not.
    split_target: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # shared.enums.CallStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    start_time: Mapped[datetime.datetime | None] = _ts()
    answer_time: Mapped[datetime.datetime | None] = _ts()
    end_time: Mapped[datetime.datetime | None] = _ts()
    duration: Mapped[int | None] = mapped_column(Integer, nullable=True)  # seconds
    billsec: Mapped[int | None] = mapped_column(Integer, nullable=True)
    disposition: Mapped[str | None] = mapped_column(String(16), nullable=True)  # from the CDR
    call_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    last_event_at: Mapped[datetime.datetime | None] = _ts()


class CallTimelineEntry(IdMixin, TenantOwned, Base):
    """One engine event about a call, as received (the call's timeline, SPEC §6)."""

    __tablename__ = "call_events"
    __table_args__ = (
        UniqueConstraint("event_id"),
        Index("ix_call_events_tenant_session", "tenant_id", "session_token", "occurred_at"),
    )

    event_id: Mapped[str] = mapped_column(String(255))
    session_token: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # shared.enums.EventKind
    occurred_at: Mapped[datetime.datetime] = _ts(nullable=False)
    engine_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[str | None] = mapped_column(String(32), nullable=True)  # raw Cloudonix status
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    agent_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    group_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rule_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    disposition: Mapped[str | None] = mapped_column(String(16), nullable=True)
    latency_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    # The engine's explained decision, as it sent it (shared.events.DecisionTrace's fields, plus
    # split_target, overflow_step and snapshot_version); decoded for the API by control_plane.calls.
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


class Cdr(IdMixin, TenantOwned, Base):
    """One call detail record per call (SPEC §2.6)."""

    __tablename__ = "cdrs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "session_token"),
        Index(
            "uq_cdrs_tenant_call_id",
            "tenant_id",
            "call_id",
            unique=True,
            postgresql_where=text("call_id IS NOT NULL"),
        ),
        Index("ix_cdrs_tenant_start", "tenant_id", "start_time"),
        Index("ix_cdrs_tenant_disposition_start", "tenant_id", "disposition", "start_time"),
    )

    event_id: Mapped[str] = mapped_column(String(255))
    session_token: Mapped[str] = mapped_column(String(255))
    call_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    from_number: Mapped[str | None] = mapped_column(String(255), nullable=True)
    to_number: Mapped[str | None] = mapped_column(String(255), nullable=True)
    direction: Mapped[str | None] = mapped_column(String(32), nullable=True)
    disposition: Mapped[str | None] = mapped_column(String(16), nullable=True)  # normalised
    start_time: Mapped[datetime.datetime] = _ts(nullable=False)
    answer_time: Mapped[datetime.datetime | None] = _ts()
    end_time: Mapped[datetime.datetime | None] = _ts()
    duration_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    billsec: Mapped[int | None] = mapped_column(Integer, nullable=True)
    domain: Mapped[str | None] = mapped_column(String(255), nullable=True)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


class WebhookAudit(IdMixin, TenantOwned, Base):
    """Every webhook any engine received: kind, domain, session, outcome, latency, masked body."""

    __tablename__ = "webhook_audit"
    __table_args__ = (
        UniqueConstraint("event_id"),
        Index("ix_webhook_audit_tenant_processed", "tenant_id", "processed_at"),
        Index("ix_webhook_audit_tenant_type_processed", "tenant_id", "event_type", "processed_at"),
        Index("ix_webhook_audit_tenant_session", "tenant_id", "session_token"),
    )

    event_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(16))  # shared.enums.EventKind
    domain: Mapped[str | None] = mapped_column(String(255), nullable=True)
    session_token: Mapped[str | None] = mapped_column(String(255), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    latency_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    engine_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    processed_at: Mapped[datetime.datetime] = _ts(nullable=False)  # when the engine handled it
    created_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
