"""Wire shapes of the inbound-routing-rule routes."""

from __future__ import annotations

import datetime
from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shared.enums import TargetType

Name = Annotated[str, Meta(max_length=255)]
PatternText = Annotated[str, Meta(min_length=1, max_length=255)]
Priority = Annotated[int, Meta(ge=1, le=100000)]
Id = Annotated[int, Meta(ge=1)]
Number = Annotated[str, Meta(max_length=255)]


class InboundRuleCreateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name | None = None
    pattern: PatternText
    caller_pattern: Annotated[str, Meta(max_length=255)] | None = None
    target_type: TargetType
    target_id: Id
    priority: Priority = 100
    enabled: bool = True
    domain_id: Id | None = None


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
    created_at: datetime.datetime
    updated_at: datetime.datetime


class RuleTestIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    to: Annotated[str, Meta(min_length=1, max_length=255)]
    from_: Number | None = msgspec.field(name="from", default=None)
    domain: Annotated[str, Meta(max_length=255)] | None = None


class TargetOut(msgspec.Struct, kw_only=True):
    type: str
    id: int
    name: str | None


class RuleTestOut(msgspec.Struct, kw_only=True):
    matched: bool
    rule: InboundRuleRead | None
    target: TargetOut | None
    normalized_to: str
    normalized_from: str
