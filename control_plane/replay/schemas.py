"""Wire shapes of ``POST /api/routing/replay``."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

# The most calls one replay may take (``last_calls``), and how many changed calls it lists.
MAX_REPLAY_CALLS = 10_000
SAMPLE_SIZE = 50
MAX_DRAFT_ITEMS = 1000


class ReplayConfigIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A draft of the tenant's routing configuration, applied over the current one.

    Each item is the body the config API takes: with ``id`` it changes that item as the item's PUT
    would (absent fields keep their value; a group's ``settings`` keys are merged); without ``id`` it
    is a new item, as the item's POST would create it; ``{"id": …, "delete": true}`` removes the item.
    A group item may carry ``members`` (``[{agent_id, priority, capacity, weight}]``): the group's
    whole member list, as ``PUT /api/agent-groups/{id}/members`` replaces it. A draft rule sends to a
    new draft group with ``target_id`` -1 for the first new group of ``groups``, -2 for the second, ….
    """

    groups: Annotated[list[dict[str, Any]], Meta(max_length=MAX_DRAFT_ITEMS)] = []
    inbound_rules: Annotated[list[dict[str, Any]], Meta(max_length=MAX_DRAFT_ITEMS)] = []


class ReplayIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    config: ReplayConfigIn = msgspec.field(default_factory=ReplayConfigIn)
    # How many of the tenant's most recent inbound call records to replay.
    last_calls: Annotated[int, Meta(ge=1, le=MAX_REPLAY_CALLS)] = 1000


class Count(msgspec.Struct, kw_only=True):
    before: int
    after: int
    change: int


class AgentCount(msgspec.Struct, kw_only=True):
    agent_id: int
    name: str | None
    before: int
    after: int
    change: int


class GroupCount(msgspec.Struct, kw_only=True):
    group_id: int  # a new draft group: -1, -2, …
    name: str | None
    before: int
    after: int
    change: int


class RuleCount(msgspec.Struct, kw_only=True):
    rule_id: int  # a new draft rule: -1, -2, … in the order of config.inbound_rules
    name: str | None
    before: int
    after: int
    change: int


class Outcome(msgspec.Struct, kw_only=True):
    rule_id: int | None
    group_id: int | None
    agent_id: int | None
    split_target: str | None


class ChangedCall(msgspec.Struct, kw_only=True):
    session_token: str
    start_time: datetime.datetime
    before: Outcome
    after: Outcome


class ReplayOut(msgspec.Struct, kw_only=True):
    calls: int  # replayed
    first_start: datetime.datetime | None
    last_start: datetime.datetime | None
    changed: int  # calls whose rule, group, agent or split branch differs
    no_agent: Count  # calls that got no agent (no rule matched, or none free)
    no_rule: Count  # calls no rule matched
    agents: list[AgentCount]
    groups: list[GroupCount]
    rules: list[RuleCount]
    # Up to 50 changed calls, earliest first.
    sample: list[ChangedCall]
    # What the simulation leaves out (see docs).
    notes: list[str]
