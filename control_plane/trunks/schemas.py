"""Wire shapes of the trunk and outbound-routing-rule routes."""

from __future__ import annotations

import datetime
from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

Name = Annotated[str, Meta(min_length=1, max_length=255)]
TrunkRef = Annotated[str, Meta(min_length=1, max_length=255)]
Description = Annotated[str, Meta(max_length=2000)]
Priority = Annotated[int, Meta(ge=1, le=100000)]
PatternText = Annotated[str, Meta(max_length=255)]
TrunkIds = Annotated[list[Annotated[int, Meta(ge=1)]], Meta(max_length=20)]
CallerIdOverride = Annotated[str, Meta(max_length=64)]
Prefix = Annotated[str, Meta(max_length=32)]


class TrunkCreateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    cloudonix_trunk: TrunkRef
    description: Description | None = None
    priority: Priority = 100
    is_default: bool = False
    enabled: bool = True


class TrunkUpdateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    cloudonix_trunk: TrunkRef | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    priority: Priority | UnsetType = UNSET
    is_default: bool | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class TrunkRead(msgspec.Struct, kw_only=True):
    id: int
    tenant_id: int
    name: str
    cloudonix_trunk: str
    description: str | None
    priority: int
    is_default: bool
    enabled: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime


class OutboundRuleCreateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    caller_id: PatternText | None = None
    destination_pattern: Annotated[str, Meta(min_length=1, max_length=255)]
    trunk_ids: TrunkIds = []
    caller_id_override: CallerIdOverride | None = None
    strip_prefix: Prefix | None = None
    add_prefix: Prefix | None = None
    priority: Priority = 100
    enabled: bool = True


class OutboundRuleUpdateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    caller_id: PatternText | UnsetType | None = UNSET
    destination_pattern: Annotated[str, Meta(min_length=1, max_length=255)] | UnsetType = UNSET
    trunk_ids: TrunkIds | UnsetType = UNSET
    caller_id_override: CallerIdOverride | UnsetType | None = UNSET
    strip_prefix: Prefix | UnsetType | None = UNSET
    add_prefix: Prefix | UnsetType | None = UNSET
    priority: Priority | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class OutboundRuleRead(msgspec.Struct, kw_only=True):
    id: int
    tenant_id: int
    name: str
    caller_id: str | None
    destination_pattern: str
    trunk_ids: list[int]
    caller_id_override: str | None
    strip_prefix: str | None
    add_prefix: str | None
    priority: int
    enabled: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime
