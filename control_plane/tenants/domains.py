"""Cloudonix-domain rules: hostname syntax, one owner per name, webhook keys kept only as sha256 hashes,
source networks as CIDRs, and aliases (application ids or names) unique across every domain."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets

import msgspec
from sqlalchemy import func, select

from control_plane.db.models import Domain
from control_plane.errors import Conflict, FieldError
from control_plane.settings import get_settings
from control_plane.tenancy import TenantScope
from control_plane.tenants.schemas import (
    DomainCreateIn,
    DomainRead,
    DomainUpdateIn,
    DomainWithKey,
    WebhookUrls,
)

DEFAULT_ENGINE_URL = "http://127.0.0.1:8080"
KEY_HINT_CHARS = 4
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# An alias is one URL path segment: letters, digits and . _ - (Cloudonix application ids and names).
_ALIAS = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


# ---- keys and URLs ------------------------------------------------------------------------------


def new_webhook_key() -> str:
    return secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """What the engine compares against: sha256 hex of the key as sent."""
    return hashlib.sha256(key.encode()).hexdigest()


def set_key(domain: Domain) -> str:
    """Give ``domain`` a new key; returns it (the only time it exists in clear)."""
    key = new_webhook_key()
    domain.key_hash = hash_key(key)
    domain.key_hint = key[-KEY_HINT_CHARS:]
    return key


def engine_base_url() -> str:
    return get_settings().engine_public_url.strip().rstrip("/") or DEFAULT_ENGINE_URL


def webhook_urls(name: str, base: str | None = None) -> WebhookUrls:
    root = base if base is not None else engine_base_url()
    return WebhookUrls(
        voice_application=f"{root}/api/voice/application/{name}",
        dial_status=f"{root}/api/voice/application/{name}/dial-status",
        session_update=f"{root}/api/voice/session/update/{name}",
        cdr=f"{root}/api/voice/session/cdr/{name}",
    )


def domain_read(domain: Domain) -> DomainRead:
    return DomainRead(
        id=domain.id,
        tenant_id=domain.tenant_id,
        domain=domain.name,
        key_hint=domain.key_hint,
        webhook_urls=webhook_urls(domain.name),
        allowed_networks=list(domain.allowed_networks or []),
        max_requests_per_second=domain.max_requests_per_second,
        aliases=list(domain.aliases or []),
        created_at=domain.created_at,
        updated_at=domain.updated_at,
    )


def domain_with_key(domain: Domain, key: str) -> DomainWithKey:
    read = domain_read(domain)
    return DomainWithKey(webhook_key=key, **msgspec.structs.asdict(read))


# ---- validation ---------------------------------------------------------------------------------


def normalize_hostname(raw: str) -> str:
    name = raw.strip().lower().removesuffix(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise FieldError(("domain", f"{raw!r} is not a valid host name."))
    if labels[-1].isdigit():
        raise FieldError(("domain", f"{raw!r} is not a valid host name (the last label is numeric)."))
    return name


def normalize_networks(raw: list[str]) -> list[str]:
    networks: list[str] = []
    for index, value in enumerate(raw):
        try:
            network = str(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise FieldError(
                (f"allowed_networks.{index}", f"{value!r} is not an IP network in CIDR notation.")
            ) from exc
        if network not in networks:
            networks.append(network)
    return networks


def normalize_aliases(raw: list[str]) -> list[str]:
    aliases: list[str] = []
    for index, value in enumerate(raw):
        alias = value.strip().lower()
        if not _ALIAS.match(alias):
            raise FieldError(
                (f"aliases.{index}", f"{value!r} is not an application id or name (letters, digits, . _ -).")
            )
        if alias in aliases:
            raise FieldError((f"aliases.{index}", f"{value!r} is given twice."))
        aliases.append(alias)
    return aliases


# Domain names and aliases share one namespace (the engine's path segment), across all tenants, so the
# checks below look at every tenant's domains; they answer only "taken", never whose.


async def _name_taken(scope: TenantScope, name: str) -> bool:
    stmt = (
        select(func.count())
        .select_from(Domain)
        .where((Domain.name == name) | Domain.aliases.contains([name]))
    )
    return bool(await scope.session.scalar(stmt))


async def _check_aliases_free(
    scope: TenantScope, aliases: list[str], own_name: str, except_id: int | None
) -> None:
    for index, alias in enumerate(aliases):
        if alias == own_name:
            raise FieldError((f"aliases.{index}", "An alias cannot repeat the domain's own name."))
        stmt = (
            select(func.count())
            .select_from(Domain)
            .where((Domain.name == alias) | Domain.aliases.contains([alias]))
        )
        if except_id is not None:
            stmt = stmt.where(Domain.id != except_id)
        if await scope.session.scalar(stmt):
            raise Conflict(f"The alias {alias!r} is already registered.")


# ---- writes -------------------------------------------------------------------------------------


async def create_domain(scope: TenantScope, data: DomainCreateIn) -> tuple[Domain, str]:
    name = normalize_hostname(data.domain)
    networks = normalize_networks(data.allowed_networks)
    aliases = normalize_aliases(data.aliases)
    if await _name_taken(scope, name):
        raise Conflict(f"The domain {name!r} is already registered.")
    await _check_aliases_free(scope, aliases, name, except_id=None)
    domain = scope.add(
        Domain(
            name=name,
            allowed_networks=networks,
            max_requests_per_second=data.max_requests_per_second,
            aliases=aliases,
        )
    )
    key = set_key(domain)
    await scope.config_changed()
    return domain, key


async def update_domain(scope: TenantScope, domain: Domain, data: DomainUpdateIn) -> Domain:
    if not isinstance(data.allowed_networks, msgspec.UnsetType):
        domain.allowed_networks = normalize_networks(data.allowed_networks)
    if not isinstance(data.max_requests_per_second, msgspec.UnsetType):
        domain.max_requests_per_second = data.max_requests_per_second
    if not isinstance(data.aliases, msgspec.UnsetType):
        aliases = normalize_aliases(data.aliases)
        await _check_aliases_free(scope, aliases, domain.name, except_id=domain.id)
        domain.aliases = aliases
    await scope.config_changed()
    return domain


async def rotate_key(scope: TenantScope, domain: Domain) -> str:
    key = set_key(domain)
    await scope.config_changed()
    return key


async def delete_domain(scope: TenantScope, domain: Domain) -> None:
    """Delete the domain; inbound rules limited to it go with it (FK cascade)."""
    await scope.session.delete(domain)
    await scope.config_changed()
