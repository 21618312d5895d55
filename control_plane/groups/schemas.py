"""Wire shapes of the agent-group and member routes. A group read carries its members twice: as
``members`` (SPEC §2.3) and as the original system's ``agents`` with a ``pivot``."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shared.enums import Strategy

Name = Annotated[str, Meta(min_length=1, max_length=255)]
Priority = Annotated[int, Meta(ge=1, le=1000)]
Capacity = Annotated[int, Meta(ge=0, le=10000)]
Weight = Annotated[int, Meta(ge=1, le=1000)]
# Members one group may have; also bounds the bulk bodies.
MAX_MEMBERS = 1000


class GroupCreateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    strategy: Strategy = Strategy.LOAD_BALANCED
    # shared.snapshot.GroupSettings; validated by the service so errors name ``settings.<key>``.
    settings: dict[str, Any] = {}
    enabled: bool = True


class GroupUpdateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A partial update; ``settings`` keys given are merged into the stored settings."""

    name: Name | UnsetType = UNSET
    strategy: Strategy | UnsetType = UNSET
    settings: dict[str, Any] | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class MemberRead(msgspec.Struct, kw_only=True):
    agent_id: int
    group_id: int
    name: str
    provider: str
    enabled: bool
    priority: int
    capacity: int
    weight: int


class Pivot(msgspec.Struct, kw_only=True):
    priority: int
    capacity: int
    weight: int


class GroupAgent(msgspec.Struct, kw_only=True):
    """The original system's member shape."""

    id: int
    name: str
    provider: str
    enabled: bool
    pivot: Pivot


class GroupRead(msgspec.Struct, kw_only=True):
    id: int
    tenant_id: int
    name: str
    strategy: Strategy
    settings: dict[str, Any]
    enabled: bool
    members: list[MemberRead]
    agents: list[GroupAgent]
    created_at: datetime.datetime
    updated_at: datetime.datetime


class MemberIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    agent_id: int
    priority: Priority = 1
    capacity: Capacity = 0
    weight: Weight = 100


class MemberUpdateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    priority: Priority | UnsetType = UNSET
    capacity: Capacity | UnsetType = UNSET
    weight: Weight | UnsetType = UNSET


class MemberPatchIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    agent_id: int
    priority: Priority | UnsetType = UNSET
    capacity: Capacity | UnsetType = UNSET
    weight: Weight | UnsetType = UNSET


class MembersReplaceIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    members: Annotated[list[MemberIn], Meta(max_length=MAX_MEMBERS)]


class MembersBulkUpdateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    members: Annotated[list[MemberPatchIn], Meta(max_length=MAX_MEMBERS)]


class ReorderIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    agent_ids: Annotated[list[int], Meta(max_length=MAX_MEMBERS)]


class MembersOut(msgspec.Struct, kw_only=True):
    data: list[MemberRead]


class MemberStats(msgspec.Struct, kw_only=True):
    agent_id: int
    name: str
    provider: str
    enabled: bool
    priority: int
    capacity: int
    weight: int
    window_calls: int
    active_calls: int
    # active / capacity; None when the capacity is unlimited.
    utilisation: float | None
    last_chosen_at: datetime.datetime | None
    # settings.outlier: out of the group's selection until then (null when in), why, and how many
    # ejections in a row (the back-off doubles with each); on probation after its last ejection ended
    # (one failure re-ejects it, a success clears it); failures in a row since its last success.
    ejected_until: datetime.datetime | None = None
    ejection_reason: str | None = None
    ejections: int = 0
    on_probation: bool = False
    consecutive_failures: int = 0


class EjectionRead(msgspec.Struct, kw_only=True):
    """An agent out of the group's selection (settings.outlier)."""

    agent_id: int
    until: datetime.datetime
    since: datetime.datetime
    reason: str  # "<trigger>:<failure>": consecutive | failure_rate | probation, busy | failed | no_answer | short_call
    ejections: int  # in a row, this one included
    session_token: str  # the call whose failure ejected it


class RoundRobinPointer(msgspec.Struct, kw_only=True):
    priority: int
    agent_id: int


class GroupStats(msgspec.Struct, kw_only=True):
    group_id: int
    strategy: Strategy
    window_hours: int
    window_calls: int
    active_calls: int
    round_robin_last: RoundRobinPointer | None
    members: list[MemberStats]
    # Who is out now (settings.outlier), soonest back first; empty when the group has no outlier settings.
    ejected: list[EjectionRead] = []


class ResetOut(msgspec.Struct, kw_only=True):
    group_id: int
    agents: int
    keys_deleted: int  # counters removed (members' fields of window buckets and sums, the rr pointer)
    message: str
