"""Wire shapes of the tenant-settings and domain routes. A webhook key appears in full only in the
answer that created it (domain create, rotate-key); every other read carries only ``key_hint``."""

from __future__ import annotations

import datetime
from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shared.enums import NoAgentAction
from shared.snapshot import TenantSettings

Name = Annotated[str, Meta(min_length=1, max_length=255)]
DomainName = Annotated[str, Meta(min_length=1, max_length=253)]
Alias = Annotated[str, Meta(min_length=1, max_length=255)]
Network = Annotated[str, Meta(min_length=1, max_length=64)]
RequestsPerSecond = Annotated[float, Meta(ge=1, le=100_000)]
# Bounds on the lists a domain carries (they travel in every snapshot).
MAX_NETWORKS = 100
MAX_ALIASES = 50
Networks = Annotated[list[Network], Meta(max_length=MAX_NETWORKS)]
Aliases = Annotated[list[Alias], Meta(max_length=MAX_ALIASES)]


# ---- tenant settings ----------------------------------------------------------------------------


class RetentionDaysPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Days to keep each kind of data (30 to 3650); absent keys keep their value."""

    call_records: int | UnsetType = UNSET
    cdrs: int | UnsetType = UNSET
    webhook_audit: int | UnsetType = UNSET


class TenantSettingsPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A partial settings object, merged onto the stored settings; the result is validated whole."""

    timezone: str | UnsetType = UNSET
    no_agent_action: NoAgentAction | UnsetType = UNSET
    no_agent_message: str | UnsetType = UNSET
    # null clears it (the engine's built-in apology answers again).
    fallback_cxml: str | UnsetType | None = UNSET
    retention_days: RetentionDaysPatch | UnsetType = UNSET


class TenantUpdateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    settings: TenantSettingsPatch | UnsetType = UNSET


class TenantRead(msgspec.Struct, kw_only=True):
    id: int
    name: str
    settings: TenantSettings
    created_at: datetime.datetime
    updated_at: datetime.datetime


# ---- domains ------------------------------------------------------------------------------------


class DomainCreateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    domain: DomainName
    allowed_networks: Networks = []
    max_requests_per_second: RequestsPerSecond | None = None
    aliases: Aliases = []


class DomainUpdateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A partial update; the domain name itself never changes (its webhook URLs depend on it)."""

    allowed_networks: Networks | UnsetType = UNSET
    max_requests_per_second: RequestsPerSecond | UnsetType | None = UNSET
    aliases: Aliases | UnsetType = UNSET


class WebhookUrls(msgspec.Struct, kw_only=True):
    """What to configure in Cloudonix for this domain."""

    voice_application: str
    dial_status: str
    session_update: str
    cdr: str


class DomainRead(msgspec.Struct, kw_only=True):
    id: int
    tenant_id: int
    domain: str
    key_hint: str
    webhook_urls: WebhookUrls
    allowed_networks: list[str]
    max_requests_per_second: float | None
    aliases: list[str]
    created_at: datetime.datetime
    updated_at: datetime.datetime


class DomainWithKey(msgspec.Struct, kw_only=True):
    """A domain with its webhook key in full: answered once, on create and on rotate-key."""

    id: int
    tenant_id: int
    domain: str
    webhook_key: str
    key_hint: str
    webhook_urls: WebhookUrls
    allowed_networks: list[str]
    max_requests_per_second: float | None
    aliases: list[str]
    created_at: datetime.datetime
    updated_at: datetime.datetime
