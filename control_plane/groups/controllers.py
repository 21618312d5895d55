"""Routes: agent-group CRUD, toggle, live stats and strategy reset; members (and the original
system's ``/memberships`` aliases, reorder and bulk-update)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, patch, post, put
from litestar.exceptions import ServiceUnavailableException
from litestar.params import FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from redis.exceptions import RedisError

from control_plane.agents.schemas import AgentsOut
from control_plane.agents.service import agent_read
from control_plane.auth.context import Auth
from control_plane.db.models import AgentGroup
from control_plane.groups import members, service
from control_plane.groups.counters import group_counters, reset_group_counters
from control_plane.groups.schemas import (
    GroupCreateIn,
    GroupRead,
    GroupStats,
    GroupUpdateIn,
    MemberIn,
    MemberRead,
    MembersBulkUpdateIn,
    MembersOut,
    MembersReplaceIn,
    MemberStats,
    MemberUpdateIn,
    ReorderIn,
    ResetOut,
    RoundRobinPointer,
)
from control_plane.pagination import Page, paginate
from control_plane.params import Id, PageNumber, PerPage100, Search
from control_plane.settings import get_settings
from shared.enums import Strategy
from shared.redis_client import RedisClient
from shared.redis_keys import TenantKeys
from shared.snapshot import GroupSettings

GROUP = "agent group"


def _redis(request: Request[Any, Any, Any]) -> RedisClient:
    redis: RedisClient = request.app.state.redis
    return redis


class AgentGroupsController(Controller):
    path = "/api/agent-groups"
    tags = ["agent groups"]

    @get("/")
    async def list_groups(
        self,
        auth: Auth,
        page: PageNumber = 1,
        per_page: PerPage100 = 20,
        strategy: FromQuery[Strategy | None] = None,
        enabled: FromQuery[bool | None] = None,
        search: Search = None,
    ) -> Page[GroupRead]:
        stmt = auth.scope.select(AgentGroup)
        if strategy is not None:
            stmt = stmt.where(AgentGroup.strategy == strategy.value)
        if enabled is not None:
            stmt = stmt.where(AgentGroup.enabled.is_(enabled))
        if search:
            stmt = stmt.where(AgentGroup.name.ilike(f"%{search}%"))
        found: Page[AgentGroup] = await paginate(
            auth.scope.session, stmt.order_by(AgentGroup.id), page, per_page, lambda g: g
        )
        return Page(data=await service.read_groups(auth.scope, found.data), meta=found.meta)

    @post("/", status_code=HTTP_201_CREATED)
    async def create_group(self, auth: Auth, data: JSONBody[GroupCreateIn]) -> GroupRead:
        group = await service.create_group(auth.scope, data)
        return await service.read_group(auth.scope, group)

    @get("/{group_id:int}")
    async def get_group(self, auth: Auth, group_id: Id) -> GroupRead:
        return await service.read_group(auth.scope, await auth.scope.get(AgentGroup, group_id, GROUP))

    @put("/{group_id:int}")
    async def replace_group(self, auth: Auth, group_id: Id, data: JSONBody[GroupUpdateIn]) -> GroupRead:
        """Update the fields given; ``settings`` keys are merged into the stored settings."""
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        return await service.read_group(auth.scope, await service.update_group(auth.scope, group, data))

    @patch("/{group_id:int}")
    async def update_group(self, auth: Auth, group_id: Id, data: JSONBody[GroupUpdateIn]) -> GroupRead:
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        return await service.read_group(auth.scope, await service.update_group(auth.scope, group, data))

    @delete("/{group_id:int}", status_code=HTTP_204_NO_CONTENT)
    async def delete_group(self, auth: Auth, group_id: Id) -> None:
        """Delete a group and its memberships; 409 while an inbound rule targets it."""
        await service.delete_group(auth.scope, await auth.scope.get(AgentGroup, group_id, GROUP))

    @patch("/{group_id:int}/toggle")
    async def toggle_group(self, auth: Auth, group_id: Id) -> GroupRead:
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        group.enabled = not group.enabled
        await auth.scope.config_changed()
        return await service.read_group(auth.scope, group)

    @get("/{group_id:int}/available-agents")
    async def available_agents(self, auth: Auth, group_id: Id) -> AgentsOut:
        """The tenant's agents that are not yet members of this group."""
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        return AgentsOut(data=[agent_read(a) for a in await members.available_agents(auth.scope, group)])

    @get("/{group_id:int}/stats")
    async def group_stats(self, request: Request[Any, Any, Any], auth: Auth, group_id: Id) -> GroupStats:
        """Live balancer counters per member: calls in the group's window, active calls, last chosen."""
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        window_hours = GroupSettings().window_hours
        if isinstance(group.settings, dict):
            window_hours = int(group.settings.get("window_hours", window_hours))
        listed = await members.list_members(auth.scope, group)
        keys = TenantKeys(get_settings().redis_prefix, auth.tenant_id)
        try:
            counters, pointer = await group_counters(
                _redis(request), keys, group.id, window_hours, [m.agent_id for m in listed]
            )
        except RedisError as exc:
            raise ServiceUnavailableException("Live counters are unavailable (RedisClient).") from exc
        rows = [
            MemberStats(
                agent_id=m.agent_id,
                name=m.name,
                provider=m.provider,
                enabled=m.enabled,
                priority=m.priority,
                capacity=m.capacity,
                weight=m.weight,
                window_calls=counters[m.agent_id].window_calls,
                active_calls=counters[m.agent_id].active_calls,
                utilisation=counters[m.agent_id].active_calls / m.capacity if m.capacity else None,
                last_chosen_at=counters[m.agent_id].last_chosen_at,
            )
            for m in listed
        ]
        return GroupStats(
            group_id=group.id,
            strategy=Strategy(group.strategy),
            window_hours=window_hours,
            window_calls=sum(r.window_calls for r in rows),
            active_calls=sum(r.active_calls for r in rows),
            round_robin_last=RoundRobinPointer(priority=pointer[0], agent_id=pointer[1]) if pointer else None,
            members=rows,
        )

    @post("/{group_id:int}/reset-strategy", status_code=HTTP_200_OK)
    async def reset_strategy(self, request: Request[Any, Any, Any], auth: Auth, group_id: Id) -> ResetOut:
        """Clear the group's balancing counters (window counts of its members, round-robin pointer).
        Active calls are kept: they are real calls holding slots."""
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        agent_ids = [m.agent_id for m in await members.list_members(auth.scope, group)]
        keys = TenantKeys(get_settings().redis_prefix, auth.tenant_id)
        try:
            removed = await reset_group_counters(_redis(request), keys, group.id, agent_ids)
        except RedisError as exc:
            raise ServiceUnavailableException("Live counters are unavailable (RedisClient).") from exc
        return ResetOut(
            group_id=group.id,
            agents=len(agent_ids),
            keys_deleted=removed,
            message="Balancing counters cleared.",
        )


MEMBERS = ["/members", "/memberships"]
MEMBER = ["/members/{agent_id:int}", "/memberships/{agent_id:int}"]


class GroupMembersController(Controller):
    path = "/api/agent-groups/{group_id:int}"
    tags = ["agent groups"]

    @get(MEMBERS)
    async def list_members(self, auth: Auth, group_id: Id) -> MembersOut:
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        return MembersOut(data=await members.list_members(auth.scope, group))

    @post(MEMBERS, status_code=HTTP_201_CREATED)
    async def add_member(self, auth: Auth, group_id: Id, data: JSONBody[MemberIn]) -> MemberRead:
        """Add one of the tenant's agents; 409 when it is already a member."""
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        return await members.read_member(auth.scope, await members.add_member(auth.scope, group, data))

    @put(MEMBERS)
    async def replace_members(self, auth: Auth, group_id: Id, data: JSONBody[MembersReplaceIn]) -> MembersOut:
        """Replace the whole member list at once (drag-and-drop ordering); all or nothing."""
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        await members.replace_members(auth.scope, group, data.members)
        return MembersOut(data=await members.list_members(auth.scope, group))

    @patch(["/members/reorder", "/memberships/reorder"])
    async def reorder_members(self, auth: Auth, group_id: Id, data: JSONBody[ReorderIn]) -> MembersOut:
        """Set priorities 1..n in the order given; ``agent_ids`` must be exactly the members."""
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        await members.reorder_members(auth.scope, group, data.agent_ids)
        return MembersOut(data=await members.list_members(auth.scope, group))

    @patch(["/members/bulk-update", "/memberships/bulk-update"])
    async def bulk_update_members(
        self, auth: Auth, group_id: Id, data: JSONBody[MembersBulkUpdateIn]
    ) -> MembersOut:
        """Change priority/capacity/weight of several existing members at once."""
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        await members.bulk_update_members(auth.scope, group, data.members)
        return MembersOut(data=await members.list_members(auth.scope, group))

    @get(MEMBER)
    async def get_member(self, auth: Auth, group_id: Id, agent_id: Id) -> MemberRead:
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        return await members.read_member(auth.scope, await members.get_member(auth.scope, group, agent_id))

    @put(MEMBER)
    async def replace_member(
        self, auth: Auth, group_id: Id, agent_id: Id, data: JSONBody[MemberUpdateIn]
    ) -> MemberRead:
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        member = await members.update_member(auth.scope, group, agent_id, data)
        return await members.read_member(auth.scope, member)

    @patch(MEMBER)
    async def update_member(
        self, auth: Auth, group_id: Id, agent_id: Id, data: JSONBody[MemberUpdateIn]
    ) -> MemberRead:
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        member = await members.update_member(auth.scope, group, agent_id, data)
        return await members.read_member(auth.scope, member)

    @delete(MEMBER, status_code=HTTP_204_NO_CONTENT)
    async def remove_member(self, auth: Auth, group_id: Id, agent_id: Id) -> None:
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        await members.remove_member(auth.scope, group, agent_id)


__all__ = ["AgentGroupsController", "GroupMembersController"]
