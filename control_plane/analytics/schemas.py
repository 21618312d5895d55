"""Wire shapes of the analytics routes (SPEC §2.7, §2.9). Rates are 0 to 1 with four decimals, durations
seconds; every figure is 0 (never null, never NaN) when nothing matched, except ``capacity`` and
``utilisation``, which are null when the capacity is unlimited."""

from __future__ import annotations

import datetime

import msgspec


class Window(msgspec.Struct, kw_only=True):
    """The range a report covers: ``[start, end)`` in UTC, and the tenant days it spans."""

    start: datetime.datetime
    end: datetime.datetime
    start_date: datetime.date  # first day, in the tenant's time zone
    end_date: datetime.date  # last day (inclusive)
    timezone: str


class Outcomes(msgspec.Struct, kw_only=True):
    """Calls of a range by outcome; ``answered`` = completed, ``in_progress`` = not yet finished."""

    calls: int
    answered: int
    busy: int
    failed: int
    no_answer: int
    canceled: int
    in_progress: int
    finished: int
    success_rate: float  # answered / finished
    avg_duration: float  # mean duration of answered calls
    total_duration: int  # every call's duration
    avg_talk_time: float  # mean billsec of answered calls
    total_talk_time: int  # billsec summed


class TrendPoint(msgspec.Struct, kw_only=True):
    date: datetime.date  # the tenant day (of the bucket's start, for hour buckets)
    start: datetime.datetime  # bucket start (UTC); the bucket ends where the next starts
    calls: int
    answered: int
    finished: int
    success_rate: float
    avg_duration: float


class Metrics(msgspec.Struct, kw_only=True):
    """SPEC §2.7: today's calls, the range's success rate and mean answered duration, calls active
    now, and a point per tenant day of the range."""

    calls_today: int
    success_rate: float
    avg_duration: float
    active_calls: int
    total_calls: int
    answered: int
    trends: list[TrendPoint]
    window: Window


class AgentReport(msgspec.Struct, kw_only=True):
    agent_id: int
    name: str | None  # None for an agent deleted since its calls
    enabled: bool
    calls: int
    answered: int
    finished: int
    success_rate: float
    avg_duration: float
    avg_talk_time: float
    total_talk_time: int
    active_calls: int
    capacity: int | None  # the most any of its groups allows; None = unlimited
    utilisation: float | None  # active_calls / capacity


class AgentsReport(msgspec.Struct, kw_only=True):
    data: list[AgentReport]
    window: Window


class GroupReport(msgspec.Struct, kw_only=True):
    group_id: int
    name: str | None  # None for a group deleted since its calls
    enabled: bool
    strategy: str | None
    members: int
    calls: int
    answered: int
    finished: int
    success_rate: float
    avg_duration: float
    avg_talk_time: float
    total_talk_time: int
    active_calls: int  # the members' active calls (an agent in two groups counts in both)
    capacity: int | None  # the members' capacities summed; None when one is unlimited
    utilisation: float | None


class GroupsReport(msgspec.Struct, kw_only=True):
    data: list[GroupReport]
    window: Window


class Overview(msgspec.Struct, kw_only=True):
    totals: Outcomes
    today: Outcomes
    by_direction: dict[str, int]  # calls per direction ("unknown" when none was reported)
    unrouted_calls: int  # calls that never reached an agent
    active_calls: int
    agents: int
    agents_enabled: int
    groups: int
    groups_enabled: int
    window: Window


class TrendBucket(msgspec.Struct, kw_only=True):
    start: datetime.datetime  # UTC
    local_start: datetime.datetime  # the same instant in the tenant's time zone
    date: datetime.date  # tenant day of the start
    calls: int
    answered: int
    busy: int
    failed: int
    no_answer: int
    canceled: int
    finished: int
    success_rate: float
    avg_duration: float
    total_talk_time: int


class Trends(msgspec.Struct, kw_only=True):
    interval: str  # hour | day
    data: list[TrendBucket]
    window: Window


class ActiveAgent(msgspec.Struct, kw_only=True):
    agent_id: int
    name: str
    active_calls: int
    capacity: int | None
    utilisation: float | None


class ActiveGroup(msgspec.Struct, kw_only=True):
    group_id: int
    name: str
    active_calls: int
    capacity: int | None
    utilisation: float | None


class MinuteCount(msgspec.Struct, kw_only=True):
    minute: datetime.datetime  # UTC minute start
    calls: int


class Realtime(msgspec.Struct, kw_only=True):
    """Now: active calls from the engines' live state, and the calls started in the last minutes."""

    at: datetime.datetime
    active_calls: int
    agents: list[ActiveAgent]
    groups: list[ActiveGroup]
    minutes: int
    calls_last_minutes: int
    per_minute: list[MinuteCount]  # oldest first, one entry per minute, zeros included


class SplitBranchReport(msgspec.Struct, kw_only=True):
    """One branch of a traffic split: the calls that took it in the range, and how they ended."""

    rule_id: int
    split_target: str  # "group:<id>" | "agent:<id>", as the call records carry it
    target_type: str
    target_id: int | None
    name: str | None  # the target's name now; null when it no longer exists
    percent: int | None  # its share in the rule's split now; null when the rule no longer has it
    share: float  # its calls over the rule's split calls in the range
    calls: int
    answered: int
    finished: int
    success_rate: float  # answered / finished
    avg_duration: float  # mean duration of answered calls
    avg_talk_time: float  # mean billsec of answered calls
    total_talk_time: int


class SplitReport(msgspec.Struct, kw_only=True):
    rule_id: int | None  # the rule asked for; null: every split rule of the tenant
    name: str | None  # that rule's name
    data: list[SplitBranchReport]
    window: Window
