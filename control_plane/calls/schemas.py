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


class RoutingAttempt(msgspec.Struct, kw_only=True):
    attempt: int | None
    agent_id: int | None
    group_id: int | None
    rule_id: int | None
    outcome: str | None
    dial_status: str | None  # how the <Dial> of this attempt ended, when known
    at: datetime.datetime


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
