"""Agent-group rules: unique names, validated settings, reads with their members, and deletes guarded
by inbound rules."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import func, select

from control_plane.agents.service import ensure_not_targeted
from control_plane.db.models import AgentGroup, AgentGroupMember, VoiceAgent
from control_plane.errors import FieldError
from control_plane.groups.schemas import (
    GroupAgent,
    GroupCreateIn,
    GroupRead,
    GroupUpdateIn,
    MemberRead,
    Pivot,
)
from control_plane.tenancy import TenantScope
from shared.enums import Strategy, TargetType
from shared.routing import normalize_number
from shared.snapshot import GroupSettings

_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")


def parse_settings(raw: dict[str, Any]) -> GroupSettings:
    """``raw`` as GroupSettings, or a 422 naming the offending ``settings.<key>``."""
    try:
        settings = msgspec.convert(raw, GroupSettings)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = "settings"
        if "$." in message:
            field += "." + message.split("$.", 1)[1].rstrip("`")
        if unknown := _UNKNOWN_FIELD.search(message):
            field += "." + unknown.group(1)
        raise FieldError((field, message)) from exc
    outlier = settings.outlier
    if outlier is not None and outlier.max_ejection_s < outlier.base_ejection_s:
        raise FieldError(
            ("settings.outlier.max_ejection_s", "Expected `int` >= base_ejection_s (the first back-off)")
        )
    return settings


_NUMBER = re.compile(r"^\+?[0-9]{3,20}$")
_STEP_FIELDS = {"group": {"group_id"}, "number": {"number"}, "announcement": {"message", "play_url"}}


async def check_overflow(scope: TenantScope, settings: GroupSettings, group_id: int | None) -> None:
    """``settings.overflow``: each step has exactly the fields of its type, a group step names another
    group of the tenant, a number is a phone number, and no chain leads back to this group (422s name
    ``settings.overflow[i].<field>``)."""
    steps = settings.overflow
    if not steps:
        return
    for i, step in enumerate(steps):
        at = f"settings.overflow[{i}]"
        allowed = _STEP_FIELDS[step.type]
        for name in ("group_id", "number", "message", "play_url"):
            if getattr(step, name) is not None and name not in allowed:
                raise FieldError((f"{at}.{name}", f"A {step.type} step has no {name}."))
        if step.type == "group":
            if step.group_id is None:
                raise FieldError((f"{at}.group_id", "A group step needs group_id."))
            if step.group_id == group_id:
                raise FieldError((f"{at}.group_id", "A group cannot overflow to itself."))
            if await scope.find(AgentGroup, step.group_id) is None:
                raise FieldError((f"{at}.group_id", "No such agent group."))
        elif step.type == "number":
            if step.number is None or not _NUMBER.match(normalize_number(step.number)):
                raise FieldError((f"{at}.number", "Expected a phone number (+ and 3 to 20 digits)."))
        else:
            if step.message is None and step.play_url is None:
                raise FieldError((f"{at}.message", "An announcement needs message or play_url."))
            if step.play_url is not None and not step.play_url.startswith(("https://", "http://")):
                raise FieldError((f"{at}.play_url", "Expected an http(s) URL."))
    if group_id is None:
        return  # a new group: nothing names it yet, so no chain can come back to it
    rows = (
        await scope.session.execute(scope.where(select(AgentGroup.id, AgentGroup.settings), AgentGroup))
    ).all()
    edges: dict[int, list[int]] = {
        gid: [
            s["group_id"]
            for s in (raw or {}).get("overflow", [])
            if s.get("type") == "group" and s.get("group_id")
        ]
        for gid, raw in rows
    }
    edges[group_id] = [s.group_id for s in steps if s.type == "group" and s.group_id is not None]
    for i, step in enumerate(steps):
        if step.type != "group" or step.group_id is None:
            continue
        seen: set[int] = set()
        todo = [step.group_id]
        while todo:
            g = todo.pop()
            if g == group_id:
                raise FieldError(
                    (f"settings.overflow[{i}].group_id", "This chain leads back to the group (a cycle).")
                )
            if g not in seen:
                seen.add(g)
                todo += edges.get(g, [])


def member_read(member: AgentGroupMember, agent: VoiceAgent) -> MemberRead:
    return MemberRead(
        agent_id=member.agent_id,
        group_id=member.group_id,
        name=agent.name,
        provider=agent.provider,
        enabled=agent.enabled,
        priority=member.priority,
        capacity=member.capacity,
        weight=member.weight,
    )


def group_read(group: AgentGroup, members: list[MemberRead]) -> GroupRead:
    return GroupRead(
        id=group.id,
        tenant_id=group.tenant_id,
        name=group.name,
        strategy=Strategy(group.strategy),
        settings=group.settings or {},
        enabled=group.enabled,
        members=members,
        agents=[
            GroupAgent(
                id=m.agent_id,
                name=m.name,
                provider=m.provider,
                enabled=m.enabled,
                pivot=Pivot(priority=m.priority, capacity=m.capacity, weight=m.weight),
            )
            for m in members
        ],
        created_at=group.created_at,
        updated_at=group.updated_at,
    )


async def member_rows(
    scope: TenantScope, group_ids: Sequence[int]
) -> list[tuple[AgentGroupMember, VoiceAgent]]:
    """The members of these groups with their agents, in (group, priority, agent) order."""
    if not group_ids:
        return []
    stmt = (
        scope.select(AgentGroupMember)
        .add_columns(VoiceAgent)
        .join(VoiceAgent, VoiceAgent.id == AgentGroupMember.agent_id)
        .where(VoiceAgent.tenant_id == AgentGroupMember.tenant_id)
        .where(AgentGroupMember.group_id.in_(group_ids))
        .order_by(AgentGroupMember.group_id, AgentGroupMember.priority, AgentGroupMember.agent_id)
    )
    return [(m, a) for m, a in (await scope.session.execute(stmt)).all()]


async def members_by_group(scope: TenantScope, group_ids: Sequence[int]) -> dict[int, list[MemberRead]]:
    out: dict[int, list[MemberRead]] = {gid: [] for gid in group_ids}
    for member, agent in await member_rows(scope, group_ids):
        out[member.group_id].append(member_read(member, agent))
    return out


async def read_group(scope: TenantScope, group: AgentGroup) -> GroupRead:
    await scope.session.flush()
    return group_read(group, (await members_by_group(scope, [group.id]))[group.id])


async def read_groups(scope: TenantScope, groups: Sequence[AgentGroup]) -> list[GroupRead]:
    members = await members_by_group(scope, [g.id for g in groups])
    return [group_read(g, members[g.id]) for g in groups]


async def _ensure_name_free(scope: TenantScope, name: str, except_id: int | None = None) -> None:
    stmt = scope.where(select(func.count()).select_from(AgentGroup), AgentGroup).where(
        AgentGroup.name == name
    )
    if except_id is not None:
        stmt = stmt.where(AgentGroup.id != except_id)
    if await scope.session.scalar(stmt):
        raise FieldError(("name", "A group with this name already exists."))


async def create_group(scope: TenantScope, data: GroupCreateIn) -> AgentGroup:
    name = data.name.strip()
    if not name:
        raise FieldError(("name", "name must not be blank"))
    await _ensure_name_free(scope, name)
    settings = parse_settings(data.settings)
    await check_overflow(scope, settings, None)
    group = scope.add(
        AgentGroup(
            name=name,
            strategy=data.strategy.value,
            settings=msgspec.to_builtins(settings),
            enabled=data.enabled,
        )
    )
    await scope.config_changed()
    return group


async def update_group(scope: TenantScope, group: AgentGroup, data: GroupUpdateIn) -> AgentGroup:
    if not isinstance(data.name, msgspec.UnsetType):
        name = data.name.strip()
        if not name:
            raise FieldError(("name", "name must not be blank"))
        if name != group.name:
            await _ensure_name_free(scope, name, except_id=group.id)
        group.name = name
    if not isinstance(data.settings, msgspec.UnsetType):
        merged = {**(group.settings or {}), **data.settings}
        settings = parse_settings(merged)
        await check_overflow(scope, settings, group.id)
        group.settings = msgspec.to_builtins(settings)
    if not isinstance(data.strategy, msgspec.UnsetType):
        group.strategy = data.strategy.value
    if not isinstance(data.enabled, msgspec.UnsetType):
        group.enabled = data.enabled
    await scope.config_changed()
    return group


async def delete_group(scope: TenantScope, group: AgentGroup) -> None:
    await ensure_not_targeted(scope, TargetType.GROUP, group.id, "Agent group")
    # Members go with it (ON DELETE CASCADE).
    await scope.session.delete(group)
    await scope.config_changed()
