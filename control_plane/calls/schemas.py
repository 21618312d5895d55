"""Wire shapes of the call routes (SPEC §2.6 and the original's call-record JSON)."""

from __future__ import annotations

import datetime
from typing import Any

import msgspec


class CallRecordRead(msgspec.Struct, kw_only=True):
    id: int
    session_token: str
    direction: str | None
    from_number: str | None
    to_number: str | None
    caller_name: str | None
    domain: str | None
    agent_id: int | None
    group_id: int | None
    rule_id: int | None
    # The traffic-split branch the call took ("group:<id>" | "agent:<id>"); null when its rule splits not.
    split_target: str | None = None
    status: str
    attempts: int
    start_time: datetime.datetime | None
    answer_time: datetime.datetime | None
    end_time: datetime.datetime | None
    duration: int | None
    billsec: int | None
    disposition: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class ActiveCall(msgspec.Struct, kw_only=True):
    session_token: str
    from_: str | None = msgspec.field(name="from")
    to: str | None
    direction: str | None
    status: str
    agent_id: int | None
    group_id: int | None
    started_at: datetime.datetime | None
    duration_seconds: int


class ActiveCalls(msgspec.Struct, kw_only=True):
    data: list[ActiveCall]


class CallStatistics(msgspec.Struct, kw_only=True):
    active_calls: int
    completed_today: int
    total_today: int


class CandidateResult(msgspec.Struct, kw_only=True):
    agent_id: int
    group_id: int | None  # the group it was a member of (null for an agent target)
    step: int  # 0: the rule's own target; n: the n-th settings.overflow step
    # chosen | eligible (could have taken the call; another was chosen) | skipped | not_checked (the
    # choice ended before it) | not_reached (an overflow step not walked)
    result: str
    # why it was skipped: full | ejected | tried | disabled | credentials | group_disabled
    reason: str | None = None


class OverflowStepResult(msgspec.Struct, kw_only=True):
    step: int
    kind: str  # number | announcement
    result: str  # chosen | skipped | not_reached
    reason: str | None = None  # tried (the number was dialled before in this call)


class RuleSkipped(msgspec.Struct, kw_only=True):
    rule_id: int
    reason: str  # outside_schedule


class BranchSkipped(msgspec.Struct, kw_only=True):
    target: str  # "group:<id>" | "agent:<id>"
    reason: str = "not_in_split_branch"


class DecisionExplained(msgspec.Struct, kw_only=True):
    """How the engine made this decision (SPEC §5, explained decisions)."""

    rule_id: int | None
    snapshot_version: int | None
    traced: bool  # false: the engine decided without Redis and could not say why
    stopped: str | None = None  # call_ended | max_attempts | fallback_disabled: no candidate looked at
    candidates: list[CandidateResult]
    overflow_steps: list[OverflowStepResult]
    rules_skipped: list[RuleSkipped]
    split_branch: str | None = None
    branches_skipped: list[BranchSkipped]
    chosen_agent_id: int | None = None
    overflow_step: str | None = None  # "<n>:group" | "<n>:number" | "<n>:announcement"


class TimelineEntry(msgspec.Struct, kw_only=True):
    id: int
    kind: str
    status: str | None
    outcome: str | None
    disposition: str | None
    source: str | None  # the engine that saw it
    occurred_at: datetime.datetime
    agent_id: int | None
    attempt: int | None
    latency_us: int | None
    payload: dict[str, Any] | None
    decision: DecisionExplained | None = None  # routed and dial-status decisions


class RoutingAttempt(msgspec.Struct, kw_only=True):
    attempt: int | None
    agent_id: int | None
    group_id: int | None
    rule_id: int | None
    outcome: str | None
    dial_status: str | None  # how the <Dial> of this attempt ended, when known
    at: datetime.datetime
    overflow_step: str | None = None  # the settings.overflow step that answered, when one did


class CallDetail(CallRecordRead, kw_only=True):
    timeline: list[TimelineEntry]
    routing_attempts: list[RoutingAttempt]


class CallRecordSummary(msgspec.Struct, kw_only=True):
    total: int
    answered: int
    success_rate: float  # answered (completed) / finished, 0 when none
    avg_duration: float
    total_duration: int
    by_status: dict[str, int]
    by_direction: dict[str, int]


class NamedRef(msgspec.Struct, kw_only=True):
    id: int
    name: str


class FilterOptions(msgspec.Struct, kw_only=True):
    statuses: list[str]
    directions: list[str]
    dispositions: list[str]
    agents: list[NamedRef]
    groups: list[NamedRef]
