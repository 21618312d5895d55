"""Group-member rules: add, change, remove, replace the whole list, reorder and bulk-update. Every
bulk change is validated in full before anything is written (the request's transaction does the rest)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from litestar.exceptions import NotFoundException
from sqlalchemy import select

from control_plane.db.models import AgentGroup, AgentGroupMember, VoiceAgent
from control_plane.errors import Conflict, FieldError
from control_plane.groups.schemas import (
    MemberIn,
    MemberPatchIn,
    MemberRead,
    MemberUpdateIn,
)
from control_plane.groups.service import member_read, member_rows
from control_plane.tenancy import TenantScope


async def list_members(scope: TenantScope, group: AgentGroup) -> list[MemberRead]:
    await scope.session.flush()
    return [member_read(m, a) for m, a in await member_rows(scope, [group.id])]


async def _current(scope: TenantScope, group: AgentGroup) -> dict[int, AgentGroupMember]:
    stmt = scope.select(AgentGroupMember).where(AgentGroupMember.group_id == group.id)
    return {m.agent_id: m for m in (await scope.session.scalars(stmt)).all()}


async def _tenant_agents(scope: TenantScope, agent_ids: Sequence[int]) -> dict[int, VoiceAgent]:
    if not agent_ids:
        return {}
    stmt = scope.select(VoiceAgent).where(VoiceAgent.id.in_(set(agent_ids)))
    return {a.id: a for a in (await scope.session.scalars(stmt)).all()}


async def get_member(scope: TenantScope, group: AgentGroup, agent_id: int) -> AgentGroupMember:
    stmt = scope.select(AgentGroupMember).where(
        AgentGroupMember.group_id == group.id, AgentGroupMember.agent_id == agent_id
    )
    member = (await scope.session.scalars(stmt)).one_or_none()
    if member is None:
        raise NotFoundException(f"agent {agent_id} is not a member of group {group.id}")
    return member


async def read_member(scope: TenantScope, member: AgentGroupMember) -> MemberRead:
    await scope.session.flush()
    agent = await scope.get(VoiceAgent, member.agent_id, "voice agent")
    return member_read(member, agent)


async def add_member(scope: TenantScope, group: AgentGroup, data: MemberIn) -> AgentGroupMember:
    if await scope.find(VoiceAgent, data.agent_id) is None:
        raise FieldError(("agent_id", f"voice agent {data.agent_id} does not exist"))
    if data.agent_id in await _current(scope, group):
        raise Conflict(f"voice agent {data.agent_id} is already a member of group {group.id}")
    member = scope.add(
        AgentGroupMember(
            group_id=group.id,
            agent_id=data.agent_id,
            priority=data.priority,
            capacity=data.capacity,
            weight=data.weight,
        )
    )
    await scope.config_changed()
    return member


def _apply(member: AgentGroupMember, data: MemberUpdateIn | MemberPatchIn) -> None:
    if not isinstance(data.priority, msgspec.UnsetType):
        member.priority = data.priority
    if not isinstance(data.capacity, msgspec.UnsetType):
        member.capacity = data.capacity
    if not isinstance(data.weight, msgspec.UnsetType):
        member.weight = data.weight


async def update_member(
    scope: TenantScope, group: AgentGroup, agent_id: int, data: MemberUpdateIn
) -> AgentGroupMember:
    member = await get_member(scope, group, agent_id)
    _apply(member, data)
    await scope.config_changed()
    return member


async def remove_member(scope: TenantScope, group: AgentGroup, agent_id: int) -> None:
    await scope.session.delete(await get_member(scope, group, agent_id))
    await scope.config_changed()


def _no_duplicates(agent_ids: Sequence[int], field: str) -> None:
    seen: set[int] = set()
    errors = []
    for i, agent_id in enumerate(agent_ids):
        if agent_id in seen:
            errors.append((field.format(i=i), f"voice agent {agent_id} is listed more than once"))
        seen.add(agent_id)
    if errors:
        raise FieldError(*errors)


async def replace_members(scope: TenantScope, group: AgentGroup, items: Sequence[MemberIn]) -> None:
    """Make the member list exactly ``items``: existing rows are updated, others added or removed."""
    ids = [item.agent_id for item in items]
    _no_duplicates(ids, "members[{i}].agent_id")
    agents = await _tenant_agents(scope, ids)
    missing = [
        (f"members[{i}].agent_id", f"voice agent {agent_id} does not exist")
        for i, agent_id in enumerate(ids)
        if agent_id not in agents
    ]
    if missing:
        raise FieldError(*missing)
    current = await _current(scope, group)
    for agent_id, member in current.items():
        if agent_id not in agents:
            await scope.session.delete(member)
    for item in items:
        member = current.get(item.agent_id) or scope.add(
            AgentGroupMember(group_id=group.id, agent_id=item.agent_id)
        )
        member.priority, member.capacity, member.weight = item.priority, item.capacity, item.weight
    await scope.config_changed()


async def reorder_members(scope: TenantScope, group: AgentGroup, agent_ids: Sequence[int]) -> None:
    """Priorities 1..n in the order given; the list must be exactly the current members."""
    _no_duplicates(agent_ids, "agent_ids[{i}]")
    current = await _current(scope, group)
    if set(agent_ids) != set(current):
        missing = sorted(set(current) - set(agent_ids))
        extra = sorted(set(agent_ids) - set(current))
        raise FieldError(
            (
                "agent_ids",
                f"must list exactly the group's members; missing {missing or 'none'}, "
                f"not members {extra or 'none'}",
            )
        )
    for position, agent_id in enumerate(agent_ids, start=1):
        current[agent_id].priority = position
    await scope.config_changed()


async def bulk_update_members(scope: TenantScope, group: AgentGroup, items: Sequence[MemberPatchIn]) -> None:
    _no_duplicates([item.agent_id for item in items], "members[{i}].agent_id")
    current = await _current(scope, group)
    missing = [
        (f"members[{i}].agent_id", f"voice agent {item.agent_id} is not a member of this group")
        for i, item in enumerate(items)
        if item.agent_id not in current
    ]
    if missing:
        raise FieldError(*missing)
    for item in items:
        _apply(current[item.agent_id], item)
    await scope.config_changed()


async def available_agents(scope: TenantScope, group: AgentGroup) -> list[VoiceAgent]:
    """The tenant's agents that are not members of ``group``."""
    members = scope.where(
        select(AgentGroupMember.agent_id).where(AgentGroupMember.group_id == group.id), AgentGroupMember
    )
    stmt = (
        scope.select(VoiceAgent).where(VoiceAgent.id.not_in(members)).order_by(VoiceAgent.name, VoiceAgent.id)
    )
    return list((await scope.session.scalars(stmt)).all())
