"""Tenant-settings rules: a partial update is merged onto the stored settings and the result validated
whole (ranges from shared.snapshot.TenantSettings, an IANA time zone, a well-formed CXML fallback)."""

from __future__ import annotations

import re
import zoneinfo
from typing import Any
from xml.parsers import expat

import msgspec

from control_plane.db.models import Tenant
from control_plane.errors import FieldError
from control_plane.tenancy import TenantScope
from control_plane.tenants.schemas import TenantRead, TenantSettingsPatch, TenantUpdateIn
from shared.snapshot import TenantSettings

_AT_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)


def tenant_settings(tenant: Tenant) -> TenantSettings:
    """The stored settings; keys written by an older version fall back to their defaults."""
    return msgspec.convert(tenant.settings or {}, TenantSettings)


def tenant_read(tenant: Tenant) -> TenantRead:
    return TenantRead(
        id=tenant.id,
        name=tenant.name,
        settings=tenant_settings(tenant),
        created_at=tenant.created_at,
        updated_at=tenant.updated_at,
    )


def merge_settings(current: TenantSettings, patch: TenantSettingsPatch) -> TenantSettings:
    """``current`` with the keys ``patch`` gives (nested ``retention_days`` merged key by key)."""
    merged: dict[str, Any] = msgspec.to_builtins(current)
    given = msgspec.to_builtins(patch)  # UNSET fields are left out
    retention = given.pop("retention_days", None)
    merged.update(given)
    if retention:
        merged["retention_days"] = {**merged["retention_days"], **retention}
    try:
        settings = msgspec.convert(merged, TenantSettings)
    except msgspec.ValidationError as exc:
        found = _AT_PATH.match(str(exc))
        path = found.group("path") if found else ""
        message = found.group("message") if found else str(exc)
        raise FieldError((f"settings.{path}" if path else "settings", message)) from exc
    check_timezone(settings.timezone)
    if settings.fallback_cxml is not None:
        check_cxml(settings.fallback_cxml)
    return settings


def check_timezone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (KeyError, ValueError, OSError) as exc:  # not found, malformed key, a directory
        raise FieldError(("settings.timezone", f"{name!r} is not an IANA time zone.")) from exc


class _Refused(Exception):
    pass


def _refuse(*_: object) -> None:
    raise _Refused


def check_cxml(text: str, field: str = "settings.fallback_cxml") -> None:
    """Well-formed XML whose root element is ``<Response>``; DTDs and entity declarations refused
    (no entity expansion of any kind)."""
    root: list[str] = []

    def start(name: str, _attrs: object) -> None:
        if not root:
            root.append(name)

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.StartElementHandler = start
    try:
        parser.Parse(text.encode(), True)
    except _Refused as exc:
        raise FieldError((field, "CXML may not carry a DTD or entity declarations.")) from exc
    except expat.ExpatError as exc:
        raise FieldError((field, f"not well-formed XML: {expat.ErrorString(exc.code)}")) from exc
    if root != ["Response"]:
        raise FieldError((field, "the root element must be <Response>."))


async def update_tenant(scope: TenantScope, tenant: Tenant, data: TenantUpdateIn) -> Tenant:
    if not isinstance(data.name, msgspec.UnsetType):
        name = data.name.strip()
        if not name:
            raise FieldError(("name", "name must not be blank"))
        tenant.name = name
    if not isinstance(data.settings, msgspec.UnsetType):
        current = tenant_settings(tenant)
        settings = merge_settings(current, data.settings)
        if settings != current:
            tenant.settings = msgspec.to_builtins(settings)
            # Every tenant setting travels in the routing snapshot.
            await scope.config_changed()
    await scope.session.flush()
    return tenant
