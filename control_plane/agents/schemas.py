"""Wire shapes of the voice-agent and provider routes. Credentials are write-only: reads carry only
``has_credentials``."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shared.providers import ProviderInfo

Name = Annotated[str, Meta(min_length=1, max_length=255)]
ProviderKey = Annotated[str, Meta(min_length=1, max_length=64)]
ServiceValue = Annotated[str, Meta(min_length=1, max_length=1024)]
Credential = Annotated[str, Meta(max_length=1024)]

# A stored metadata object may not exceed this many bytes of JSON.
METADATA_MAX_BYTES = 16 * 1024


class ProvidersOut(msgspec.Struct, kw_only=True):
    data: list[ProviderInfo]


class AgentCreateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    provider: ProviderKey
    service_value: ServiceValue
    username: Credential | None = None
    password: Credential | None = None
    enabled: bool = True
    metadata: dict[str, Any] = {}


class AgentUpdateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A partial update: absent fields keep their value. For ``username``/``password``, ``null``
    clears the stored value and ``""`` keeps it (forms send empty password fields)."""

    name: Name | UnsetType = UNSET
    provider: ProviderKey | UnsetType = UNSET
    service_value: ServiceValue | UnsetType = UNSET
    username: Credential | UnsetType | None = UNSET
    password: Credential | UnsetType | None = UNSET
    enabled: bool | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET


class AgentRead(msgspec.Struct, kw_only=True):
    id: int
    tenant_id: int
    name: str
    provider: str
    service_value: str
    has_credentials: bool
    enabled: bool
    metadata: dict[str, Any]
    created_at: datetime.datetime
    updated_at: datetime.datetime


class AgentsOut(msgspec.Struct, kw_only=True):
    data: list[AgentRead]


class Problem(msgspec.Struct, kw_only=True):
    field: str
    message: str


class ValidationOut(msgspec.Struct, kw_only=True):
    valid: bool
    problems: list[Problem]
