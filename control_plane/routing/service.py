"""Inbound-rule rules: patterns checked with the shared grammar, targets and domains checked to be the
tenant's, and the dry run through the very table the engine builds."""

from __future__ import annotations

import datetime

import msgspec
from msgspec import UnsetType
from sqlalchemy import func

from control_plane.db.models import AgentGroup, Domain, InboundRoutingRule, VoiceAgent
from control_plane.errors import FieldError
from control_plane.routing.schemas import (
    InboundRuleCreateIn,
    InboundRuleRead,
    InboundRuleUpdateIn,
    RuleTestIn,
    RuleTestOut,
    SplitBranchOut,
    SplitTargetIn,
    TargetOut,
)
from control_plane.snapshots.compile import inbound_rule_snap
from control_plane.tenancy import TenantScope
from shared.enums import TargetType
from shared.routing import PatternError, build_inbound_table, compile_pattern, normalize_number
from shared.schedule import ScheduleError, compile_schedule
from shared.snapshot import RuleSchedule, SplitTarget


def rule_read(rule: InboundRoutingRule) -> InboundRuleRead:
    return InboundRuleRead(
        id=rule.id,
        tenant_id=rule.tenant_id,
        name=rule.name,
        pattern=rule.pattern,
        caller_pattern=rule.caller_pattern,
        target_type=rule.target_type,
        target_id=rule.target_id,
        priority=rule.priority,
        enabled=rule.enabled,
        domain_id=rule.domain_id,
        schedule=msgspec.convert(rule.schedule, RuleSchedule) if rule.schedule is not None else None,
        targets=msgspec.convert(rule.targets, list[SplitTarget]) if rule.targets else [],
        created_at=rule.created_at,
        updated_at=rule.updated_at,
    )


def check_schedule(schedule: RuleSchedule | None) -> dict[str, object] | None:
    """The schedule as stored, or a 422 naming the field under ``schedule`` (shared/schedule.py)."""
    if schedule is None:
        return None
    try:
        compile_schedule(schedule)
    except ScheduleError as exc:
        raise FieldError((exc.field, str(exc))) from exc
    stored = msgspec.to_builtins(schedule)
    assert isinstance(stored, dict)
    # Day names as the engine compares them.
    stored["days"] = [d.strip().lower() for d in schedule.days]
    return stored


async def check_targets(scope: TenantScope, targets: list[SplitTargetIn]) -> list[dict[str, object]]:
    """A traffic split as stored: every branch the tenant's, none twice, percents summing to 100."""
    seen: set[tuple[str, int]] = set()
    for i, branch in enumerate(targets):
        key = (branch.target_type.value, branch.target_id)
        if key in seen:
            raise FieldError((f"targets[{i}]", f"{key[0]} {key[1]} is already a branch of this split"))
        seen.add(key)
        if await target_name(scope, branch.target_type, branch.target_id) is None:
            label = "voice agent" if branch.target_type == TargetType.AGENT else "agent group"
            raise FieldError((f"targets[{i}].target_id", f"{label} {branch.target_id} does not exist"))
    total = sum(b.percent for b in targets)
    if total != 100:
        raise FieldError(("targets", f"the percents of a split must sum to 100, not {total}"))
    return [
        {"target_type": b.target_type.value, "target_id": b.target_id, "percent": b.percent} for b in targets
    ]


def check_pattern(field: str, value: str | None, *, required: bool) -> str | None:
    """The pattern as stored (trimmed), or a 422 naming ``field`` with the grammar's message."""
    text = (value or "").strip()
    if not text:
        if required:
            raise FieldError((field, f"{field} must not be blank (use '*' to match any number)"))
        return None
    try:
        compile_pattern(text)
    except PatternError as exc:
        raise FieldError((field, str(exc))) from exc
    return text


def _clean_name(value: str | None) -> str | None:
    name = (value or "").strip()
    return name or None


async def target_name(scope: TenantScope, target_type: str, target_id: int) -> str | None:
    """The target's name, or None when it is not the tenant's (or does not exist)."""
    if target_type == TargetType.AGENT:
        agent = await scope.find(VoiceAgent, target_id)
        return agent.name if agent is not None else None
    group = await scope.find(AgentGroup, target_id)
    return group.name if group is not None else None


async def _check_target(scope: TenantScope, target_type: str, target_id: int) -> None:
    if await target_name(scope, target_type, target_id) is None:
        label = "voice agent" if target_type == TargetType.AGENT else "agent group"
        raise FieldError(("target_id", f"{label} {target_id} does not exist"))


async def _check_domain(scope: TenantScope, domain_id: int | None) -> None:
    if domain_id is not None and await scope.find(Domain, domain_id) is None:
        raise FieldError(("domain_id", f"domain {domain_id} does not exist"))


async def create_rule(scope: TenantScope, data: InboundRuleCreateIn) -> InboundRoutingRule:
    pattern = check_pattern("pattern", data.pattern, required=True)
    assert pattern is not None
    caller = check_pattern("caller_pattern", data.caller_pattern, required=False)
    schedule = check_schedule(data.schedule)
    targets: list[dict[str, object]] | None = None
    if data.targets:
        if data.target_type is not None or data.target_id is not None:
            raise FieldError(
                ("targets", "give either targets (a split) or target_type and target_id, not both")
            )
        targets = await check_targets(scope, data.targets)
        target_type, target_id = data.targets[0].target_type.value, data.targets[0].target_id
    else:
        if data.target_type is None:
            raise FieldError(("target_type", "target_type is required (or targets, for a split)"))
        if data.target_id is None:
            raise FieldError(("target_id", "target_id is required (or targets, for a split)"))
        await _check_target(scope, data.target_type, data.target_id)
        target_type, target_id = data.target_type.value, data.target_id
    await _check_domain(scope, data.domain_id)
    rule = scope.add(
        InboundRoutingRule(
            name=_clean_name(data.name),
            pattern=pattern,
            caller_pattern=caller,
            target_type=target_type,
            target_id=target_id,
            priority=data.priority,
            enabled=data.enabled,
            domain_id=data.domain_id,
            schedule=schedule,
            targets=targets,
        )
    )
    await scope.config_changed()
    return rule


async def update_rule(
    scope: TenantScope, rule: InboundRoutingRule, data: InboundRuleUpdateIn
) -> InboundRoutingRule:
    if not isinstance(data.pattern, UnsetType):
        rule.pattern = check_pattern("pattern", data.pattern, required=True) or rule.pattern
    if not isinstance(data.caller_pattern, UnsetType):
        rule.caller_pattern = check_pattern("caller_pattern", data.caller_pattern, required=False)
    if not isinstance(data.name, UnsetType):
        rule.name = _clean_name(data.name)
    if not isinstance(data.schedule, UnsetType):
        rule.schedule = check_schedule(data.schedule)
    one_target = not isinstance(data.target_type, UnsetType) or not isinstance(data.target_id, UnsetType)
    if not isinstance(data.targets, UnsetType) and data.targets:
        if one_target:
            raise FieldError(
                ("targets", "give either targets (a split) or target_type and target_id, not both")
            )
        rule.targets = await check_targets(scope, data.targets)
        rule.target_type = data.targets[0].target_type.value
        rule.target_id = data.targets[0].target_id
    else:
        if isinstance(data.targets, UnsetType) and rule.targets and one_target:
            raise FieldError(
                ("targets", "this rule splits traffic: set targets to null to send it to one target")
            )
        if not isinstance(data.targets, UnsetType):
            rule.targets = None  # null or []: the split ends; the one target is target_type/target_id
        if one_target:
            target_type = (
                rule.target_type if isinstance(data.target_type, UnsetType) else data.target_type.value
            )
            target_id = rule.target_id if isinstance(data.target_id, UnsetType) else data.target_id
            await _check_target(scope, target_type, target_id)
            rule.target_type = target_type
            rule.target_id = target_id
    if not isinstance(data.domain_id, UnsetType):
        await _check_domain(scope, data.domain_id)
        rule.domain_id = data.domain_id
    if not isinstance(data.priority, UnsetType):
        rule.priority = data.priority
    if not isinstance(data.enabled, UnsetType):
        rule.enabled = data.enabled
    await scope.config_changed()
    return rule


async def delete_rule(scope: TenantScope, rule: InboundRoutingRule) -> None:
    await scope.session.delete(rule)
    await scope.config_changed()


async def dry_run(scope: TenantScope, data: RuleTestIn) -> RuleTestOut:
    """Which rule and target the engine would choose for this call; reads only, touches no counter."""
    domain_id: int | None = None
    if data.domain:
        name = data.domain.strip().lower()
        stmt = scope.select(Domain).where(func.lower(Domain.name) == name)
        domain = (await scope.session.scalars(stmt)).one_or_none()
        if domain is None:
            raise FieldError(("domain", f"domain {data.domain!r} is not one of this tenant's domains"))
        domain_id = domain.id
    rules = list((await scope.session.scalars(scope.select(InboundRoutingRule))).all())
    table = build_inbound_table(inbound_rule_snap(r) for r in rules)
    caller = data.from_ or ""
    at = data.at if data.at is not None else datetime.datetime.now(datetime.UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.UTC)
    hit = table.first_match(data.to, caller, domain_id, now=at.timestamp())
    normalized = RuleTestOut(
        matched=False,
        rule=None,
        target=None,
        normalized_to=normalize_number(data.to),
        normalized_from=normalize_number(caller),
        at=at,
    )
    if hit is None:
        return normalized
    rule = next(r for r in rules if r.id == hit.id)
    normalized.matched = True
    normalized.rule = rule_read(rule)
    if hit.targets:
        normalized.split = [
            SplitBranchOut(
                type=b.target_type.value,
                id=b.target_id,
                name=await target_name(scope, b.target_type.value, b.target_id),
                percent=b.percent,
            )
            for b in hit.targets
        ]
        return normalized
    normalized.target = TargetOut(
        type=rule.target_type,
        id=rule.target_id,
        name=await target_name(scope, rule.target_type, rule.target_id),
    )
    return normalized
