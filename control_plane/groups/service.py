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
    group = scope.add(
        AgentGroup(
            name=name,
            strategy=data.strategy.value,
            settings=msgspec.to_builtins(parse_settings(data.settings)),
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
        group.settings = msgspec.to_builtins(parse_settings(merged))
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
