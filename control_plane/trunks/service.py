"""Trunk and outbound-rule rules: one default trunk per tenant, trunks in use cannot be deleted,
outbound patterns checked with the shared grammar and trunk ids checked to be the tenant's."""

from __future__ import annotations

import re

import msgspec
from msgspec import UnsetType
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql import cast

from control_plane.db.models import OutboundRoutingRule, Trunk
from control_plane.errors import Conflict, FieldError
from control_plane.routing.service import check_pattern
from control_plane.tenancy import TenantScope
from control_plane.trunks.schemas import (
    OutboundRuleCreateIn,
    OutboundRuleRead,
    OutboundRuleUpdateIn,
    TrunkCreateIn,
    TrunkRead,
    TrunkUpdateIn,
)

# What may go into a dialled number or caller id: digits, +, * and #, or a SIP-ish user part.
_DIAL_TEXT = re.compile(r"[0-9A-Za-z+*#._@-]+")


def trunk_read(trunk: Trunk) -> TrunkRead:
    return msgspec.convert(trunk, TrunkRead, from_attributes=True)


def outbound_read(rule: OutboundRoutingRule) -> OutboundRuleRead:
    return msgspec.convert(rule, OutboundRuleRead, from_attributes=True)


def _required(field: str, value: str) -> str:
    text = value.strip()
    if not text:
        raise FieldError((field, f"{field} must not be blank"))
    return text


def _dial_text(field: str, value: str | None) -> str | None:
    text = (value or "").strip()
    if not text:
        return None
    if not _DIAL_TEXT.fullmatch(text):
        raise FieldError((field, f"{field} may hold only digits, letters and + * # . _ @ -"))
    return text


# --- trunks ---


async def _clear_default(scope: TenantScope, keep_id: int | None) -> None:
    """Unset the tenant's current default trunk (flushed, so the new one can take the unique slot)."""
    stmt = scope.select(Trunk).where(Trunk.is_default.is_(True))
    if keep_id is not None:
        stmt = stmt.where(Trunk.id != keep_id)
    for old in (await scope.session.scalars(stmt)).all():
        old.is_default = False
    await scope.session.flush()


async def create_trunk(scope: TenantScope, data: TrunkCreateIn) -> Trunk:
    name = _required("name", data.name)
    ref = _required("cloudonix_trunk", data.cloudonix_trunk)
    if data.is_default:
        await _clear_default(scope, None)
    trunk = scope.add(
        Trunk(
            name=name,
            cloudonix_trunk=ref,
            description=(data.description or "").strip() or None,
            priority=data.priority,
            is_default=data.is_default,
            enabled=data.enabled,
        )
    )
    await scope.config_changed()
    return trunk


async def update_trunk(scope: TenantScope, trunk: Trunk, data: TrunkUpdateIn) -> Trunk:
    if not isinstance(data.name, UnsetType):
        trunk.name = _required("name", data.name)
    if not isinstance(data.cloudonix_trunk, UnsetType):
        trunk.cloudonix_trunk = _required("cloudonix_trunk", data.cloudonix_trunk)
    if not isinstance(data.description, UnsetType):
        trunk.description = (data.description or "").strip() or None
    if not isinstance(data.priority, UnsetType):
        trunk.priority = data.priority
    if not isinstance(data.enabled, UnsetType):
        trunk.enabled = data.enabled
    if not isinstance(data.is_default, UnsetType):
        if data.is_default and not trunk.is_default:
            await _clear_default(scope, trunk.id)
        trunk.is_default = data.is_default
    await scope.config_changed()
    return trunk


async def rules_using_trunk(scope: TenantScope, trunk_id: int) -> list[OutboundRoutingRule]:
    stmt = (
        scope.select(OutboundRoutingRule)
        .where(OutboundRoutingRule.trunk_ids.op("@>")(cast([trunk_id], JSONB)))
        .order_by(OutboundRoutingRule.priority, OutboundRoutingRule.id)
    )
    return list((await scope.session.scalars(stmt)).all())


async def delete_trunk(scope: TenantScope, trunk: Trunk) -> None:
    rules = await rules_using_trunk(scope, trunk.id)
    if rules:
        names = ", ".join(f"#{r.id} {r.name!r}" for r in rules)
        raise Conflict(
            f"Trunk {trunk.id} is used by outbound routing rule(s) {names}; remove it from those rules first."
        )
    await scope.session.delete(trunk)
    await scope.config_changed()


# --- outbound rules ---


async def _check_trunks(scope: TenantScope, trunk_ids: list[int]) -> list[int]:
    if len(set(trunk_ids)) != len(trunk_ids):
        raise FieldError(("trunk_ids", "a trunk is listed more than once"))
    if not trunk_ids:
        return []
    stmt = scope.where(select(Trunk.id), Trunk).where(Trunk.id.in_(trunk_ids))
    found = set((await scope.session.scalars(stmt)).all())
    missing = [t for t in trunk_ids if t not in found]
    if missing:
        raise FieldError(("trunk_ids", f"trunk(s) {', '.join(map(str, missing))} do not exist"))
    return list(trunk_ids)


async def create_outbound(scope: TenantScope, data: OutboundRuleCreateIn) -> OutboundRoutingRule:
    name = _required("name", data.name)
    destination = check_pattern("destination_pattern", data.destination_pattern, required=True)
    assert destination is not None
    caller = check_pattern("caller_id", data.caller_id, required=False)
    rule = scope.add(
        OutboundRoutingRule(
            name=name,
            caller_id=caller,
            destination_pattern=destination,
            trunk_ids=await _check_trunks(scope, data.trunk_ids),
            caller_id_override=_dial_text("caller_id_override", data.caller_id_override),
            strip_prefix=_dial_text("strip_prefix", data.strip_prefix),
            add_prefix=_dial_text("add_prefix", data.add_prefix),
            priority=data.priority,
            enabled=data.enabled,
        )
    )
    await scope.config_changed()
    return rule


async def update_outbound(
    scope: TenantScope, rule: OutboundRoutingRule, data: OutboundRuleUpdateIn
) -> OutboundRoutingRule:
    if not isinstance(data.name, UnsetType):
        rule.name = _required("name", data.name)
    if not isinstance(data.destination_pattern, UnsetType):
        destination = check_pattern("destination_pattern", data.destination_pattern, required=True)
        rule.destination_pattern = destination or rule.destination_pattern
    if not isinstance(data.caller_id, UnsetType):
        rule.caller_id = check_pattern("caller_id", data.caller_id, required=False)
    if not isinstance(data.trunk_ids, UnsetType):
        rule.trunk_ids = await _check_trunks(scope, data.trunk_ids)
    if not isinstance(data.caller_id_override, UnsetType):
        rule.caller_id_override = _dial_text("caller_id_override", data.caller_id_override)
    if not isinstance(data.strip_prefix, UnsetType):
        rule.strip_prefix = _dial_text("strip_prefix", data.strip_prefix)
    if not isinstance(data.add_prefix, UnsetType):
        rule.add_prefix = _dial_text("add_prefix", data.add_prefix)
    if not isinstance(data.priority, UnsetType):
        rule.priority = data.priority
    if not isinstance(data.enabled, UnsetType):
        rule.enabled = data.enabled
    await scope.config_changed()
    return rule


async def delete_outbound(scope: TenantScope, rule: OutboundRoutingRule) -> None:
    await scope.session.delete(rule)
    await scope.config_changed()
