"""Wire shapes of the inbound-routing-rule routes."""

from __future__ import annotations

import datetime
from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shared.enums import TargetType
from shared.snapshot import RuleSchedule, SplitTarget

Name = Annotated[str, Meta(max_length=255)]
PatternText = Annotated[str, Meta(min_length=1, max_length=255)]
Priority = Annotated[int, Meta(ge=1, le=100000)]
Id = Annotated[int, Meta(ge=1)]
Number = Annotated[str, Meta(max_length=255)]
MAX_SPLIT_TARGETS = 10


class SplitTargetIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One branch of a traffic split."""

    target_type: TargetType
    target_id: Id
    percent: Annotated[int, Meta(ge=1, le=100)]


# 1 to 10 branches whose percents sum to 100 (checked by the service, which names the field).
SplitTargets = Annotated[list[SplitTargetIn], Meta(min_length=1, max_length=MAX_SPLIT_TARGETS)]


class InboundRuleCreateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One target (``target_type`` + ``target_id``) or a traffic split (``targets``), not both."""

    name: Name | None = None
    pattern: PatternText
    caller_pattern: Annotated[str, Meta(max_length=255)] | None = None
    target_type: TargetType | None = None
    target_id: Id | None = None
    priority: Priority = 100
    enabled: bool = True
    domain_id: Id | None = None
    schedule: RuleSchedule | None = None
    targets: SplitTargets | None = None


class InboundRuleUpdateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A partial update: absent fields keep their value; ``null`` clears the optional ones."""

    name: Name | UnsetType | None = UNSET
    pattern: PatternText | UnsetType = UNSET
    caller_pattern: Annotated[str, Meta(max_length=255)] | UnsetType | None = UNSET
    target_type: TargetType | UnsetType = UNSET
    target_id: Id | UnsetType = UNSET
    priority: Priority | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    domain_id: Id | UnsetType | None = UNSET
    # null removes the schedule (always open).
    schedule: RuleSchedule | UnsetType | None = UNSET
    # null or [] ends a split (then target_type/target_id name the one target; the first branch's
    # stays if they are not given); target_type/target_id alone on a split rule are refused.
    targets: Annotated[list[SplitTargetIn], Meta(max_length=MAX_SPLIT_TARGETS)] | UnsetType | None = UNSET


class InboundRuleRead(msgspec.Struct, kw_only=True):
    id: int
    tenant_id: int
    name: str | None
    pattern: str
    caller_pattern: str | None
    target_type: str
    target_id: int
    priority: int
    enabled: bool
    domain_id: int | None
    schedule: RuleSchedule | None = None
    # The traffic split; [] when the rule has one target. With a split, target_type/target_id repeat
    # the first branch's.
    targets: list[SplitTarget] = []
    created_at: datetime.datetime
    updated_at: datetime.datetime


class RuleTestIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    to: Annotated[str, Meta(min_length=1, max_length=255)]
    from_: Number | None = msgspec.field(name="from", default=None)
    domain: Annotated[str, Meta(max_length=255)] | None = None
    # When the call would arrive (schedules are checked at this instant); now when absent, UTC when
    # it carries no offset.
    at: datetime.datetime | None = None


class TargetOut(msgspec.Struct, kw_only=True):
    type: str
    id: int
    name: str | None


class SplitBranchOut(msgspec.Struct, kw_only=True):
    type: str
    id: int
    name: str | None
    percent: int


class RuleTestOut(msgspec.Struct, kw_only=True):
    matched: bool
    rule: InboundRuleRead | None
    target: TargetOut | None
    normalized_to: str
    normalized_from: str
    # The instant schedules were checked at.
    at: datetime.datetime | None = None
    # The traffic split of the matched rule (each call takes one branch); then ``target`` is null.
    split: list[SplitBranchOut] | None = None
