"""TenantSnapshot: the whole routing config of one tenant, as the control plane compiles it and the
engines hold it. Travels msgpack-encoded in the JetStream KV bucket ``vlb-config`` under
``tenant.<tenant_id>``. Webhook keys travel only as sha256 hashes; agent credentials as a Fernet token
made with ``VLB_SNAPSHOT_KEY``."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from shared.enums import NoAgentAction, Strategy, TargetType

# Bump when a change is not backwards compatible; engines refuse a snapshot whose schema_version is
# newer than the one they were built with.
SNAPSHOT_SCHEMA_VERSION = 1


class RetentionDays(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    call_records: Annotated[int, Meta(ge=30, le=3650)] = 365
    cdrs: Annotated[int, Meta(ge=30, le=3650)] = 365
    webhook_audit: Annotated[int, Meta(ge=30, le=3650)] = 90


class TenantSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Tenant-wide settings (``GET/PUT /api/tenant``)."""

    timezone: Annotated[str, Meta(min_length=1, max_length=64)] = "UTC"
    no_agent_action: NoAgentAction = NoAgentAction.SAY_AND_HANGUP
    no_agent_message: Annotated[str, Meta(max_length=500)] = (
        "We are sorry, no agent is available to take your call. Please try again later."
    )
    # Raw CXML answered when the engine meets an unexpected error; None = the built-in apology.
    fallback_cxml: Annotated[str, Meta(max_length=8192)] | None = None
    retention_days: RetentionDays = RetentionDays()


class OutlierSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``settings.outlier`` (SPEC §5): agents whose dials keep failing (busy / failed / no-answer, or
    answered calls shorter than ``short_call_s``) are left out of the group's selection for a back-off
    of ``base_ejection_s * 2^(k-1)`` (capped at ``max_ejection_s``) on their k-th ejection in a row,
    then let back on probation: one failure re-ejects, a success clears. Absent = off."""

    consecutive_failures: Annotated[int, Meta(ge=1, le=100)] = 5
    # Eject when failures / calls over the last ``window_s`` exceed this (with at least ``min_calls``).
    failure_rate: Annotated[float, Meta(gt=0, le=1)] | None = None
    window_s: Annotated[int, Meta(ge=10, le=86400)] = 60
    min_calls: Annotated[int, Meta(ge=1, le=10000)] = 10
    base_ejection_s: Annotated[int, Meta(ge=1, le=3600)] = 30
    max_ejection_s: Annotated[int, Meta(ge=1, le=86400)] = 600
    max_ejected_percent: Annotated[int, Meta(ge=0, le=100)] = 50
    short_call_s: Annotated[int, Meta(ge=0, le=600)] = 0
    # Whether the group's last available agent may be ejected too (then calls get the no-agent answer).
    allow_eject_all: bool = False


class OverflowStep(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One step of ``settings.overflow`` (SPEC §5), tried after the group's members are exhausted:
    another group (``group_id``), a phone number (``number``, dialled once per call) or an
    announcement (``message`` and/or ``play_url``, then the call hangs up)."""

    type: Literal["group", "number", "announcement"]
    group_id: int | None = None
    number: Annotated[str, Meta(min_length=1, max_length=32)] | None = None
    message: Annotated[str, Meta(min_length=1, max_length=500)] | None = None
    play_url: Annotated[str, Meta(min_length=1, max_length=2048)] | None = None


class GroupSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Agent-group settings (SPEC §2.3)."""

    window_hours: Annotated[int, Meta(ge=1, le=168)] = 24
    fallback_enabled: bool = True
    max_attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    ring_timeout_s: Annotated[int, Meta(ge=5, le=120)] = 30
    no_agent_action: NoAgentAction = NoAgentAction.SAY_AND_HANGUP
    no_agent_message: Annotated[str, Meta(max_length=500)] | None = None
    # Caller stickiness: a caller who reached an agent of the group within this many hours gets it
    # again when it can take the call (0 = off).
    sticky_hours: Annotated[int, Meta(ge=0, le=720)] = 0
    # priority strategy: rotate among members of equal priority (False: stable order by id).
    rotate_same_priority: bool = True
    outlier: OutlierSettings | None = None
    # What comes after the members are exhausted, in order; max_attempts is the budget of the whole chain.
    overflow: Annotated[list[OverflowStep], Meta(max_length=10)] = []


class DomainSnap(msgspec.Struct, kw_only=True, frozen=True):
    id: int
    name: str
    key_hash: str  # sha256 hex of the webhook key
    allowed_networks: list[str] = []
    max_requests_per_second: float | None = None
    # Other names the voice-application path may carry instead of the domain (application ids/names).
    aliases: list[str] = []


class AgentSnap(msgspec.Struct, kw_only=True, frozen=True):
    id: int
    name: str
    provider: str
    service_value: str
    enabled: bool = True
    # Fernet token (snapshot key) of msgpack {"username": str|None, "password": str|None}; None = none.
    credentials: str | None = None


class MemberSnap(msgspec.Struct, kw_only=True, frozen=True):
    agent_id: int
    priority: int = 1
    capacity: int = 0  # 0 = unlimited
    weight: int = 100


class GroupSnap(msgspec.Struct, kw_only=True, frozen=True):
    id: int
    name: str
    strategy: Strategy
    enabled: bool = True
    settings: GroupSettings = GroupSettings()
    members: list[MemberSnap] = []


class RuleSchedule(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """When an inbound rule may match (SPEC §5; semantics in shared/schedule.py): outside it the rule
    is skipped and a later rule takes the call."""

    timezone: Annotated[str, Meta(min_length=1, max_length=64)] = "UTC"
    days: list[str] = []  # "mon" … "sun"; empty = every day
    ranges: list[list[str]] = []  # [["09:00", "17:30"], …]; empty = all day; end < start crosses midnight
    holidays: list[str] = []  # "YYYY-MM-DD" dates in the schedule's timezone: closed all day


class SplitTarget(msgspec.Struct, kw_only=True, frozen=True):
    """One branch of an inbound rule's traffic split."""

    target_type: TargetType
    target_id: int
    percent: Annotated[int, Meta(ge=1, le=100)]


class InboundRuleSnap(msgspec.Struct, kw_only=True, frozen=True):
    id: int
    name: str | None = None
    pattern: str
    caller_pattern: str | None = None
    target_type: TargetType
    target_id: int
    priority: int = 100
    enabled: bool = True
    domain_id: int | None = None
    # None = always open.
    schedule: RuleSchedule | None = None
    # A traffic split (percents sum to 100); empty = the one target above. With a split,
    # target_type/target_id repeat the first branch (so they stay meaningful to older readers).
    targets: list[SplitTarget] = []


class TrunkSnap(msgspec.Struct, kw_only=True, frozen=True):
    id: int
    name: str
    cloudonix_trunk: str
    priority: int = 100
    is_default: bool = False
    enabled: bool = True


class OutboundRuleSnap(msgspec.Struct, kw_only=True, frozen=True):
    id: int
    name: str
    caller_id: str | None = None  # pattern on the calling number/extension
    destination_pattern: str
    trunk_ids: list[int] = []
    caller_id_override: str | None = None
    strip_prefix: str | None = None
    add_prefix: str | None = None
    priority: int = 100
    enabled: bool = True


class TenantSnapshot(msgspec.Struct, kw_only=True, frozen=True):
    schema_version: int = SNAPSHOT_SCHEMA_VERSION
    tenant_id: int
    version: int
    compiled_at: float  # epoch seconds
    settings: TenantSettings = TenantSettings()
    domains: list[DomainSnap] = []
    agents: list[AgentSnap] = []
    groups: list[GroupSnap] = []
    inbound_rules: list[InboundRuleSnap] = []
    outbound_rules: list[OutboundRuleSnap] = []
    trunks: list[TrunkSnap] = []


def snapshot_key(tenant_id: int) -> str:
    """The KV key a tenant's snapshot lives under."""
    return f"tenant.{tenant_id}"


SNAPSHOT_ENCODER = msgspec.msgpack.Encoder()
SNAPSHOT_DECODER = msgspec.msgpack.Decoder(TenantSnapshot)
