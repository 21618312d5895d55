"""Routes: agent-group CRUD, toggle, live stats and strategy reset; members (and the original
system's ``/memberships`` aliases, reorder and bulk-update)."""

from __future__ import annotations

import datetime
import time
from typing import Any

import structlog
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.exceptions import NotFoundException, ServiceUnavailableException
from litestar.params import FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from redis.exceptions import RedisError

from control_plane.agents.schemas import AgentsOut
from control_plane.agents.service import agent_read
from control_plane.auth.context import Auth
from control_plane.db.models import AgentGroup
from control_plane.groups import members, service
from control_plane.groups.counters import (
    group_counters,
    group_outliers,
    lift_ejection,
    reset_group_counters,
)
from control_plane.groups.schemas import (
    EjectionRead,
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
from shared.enums import EventKind, Strategy
from shared.events import CallEvent, encode_events, event_subject
from shared.redis_client import RedisClient
from shared.redis_keys import TenantKeys
from shared.snapshot import GroupSettings

GROUP = "agent group"
log = structlog.get_logger("control_plane.groups")


def _ms(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


async def announce_lift(
    request: Request[Any, Any, Any], tenant_id: int, group_id: int, agent_id: int
) -> None:
    """An ``agent.lifted`` frame for the tenant's live feed: an outlier event on the events subject,
    through the live hub's NATS connection (best effort: the lift itself is done)."""
    hub = getattr(request.app.state, "live_hub", None)
    nc = getattr(hub, "nc", None)
    if nc is None or not nc.is_connected:
        return
    settings = get_settings()
    now = time.time()
    event = CallEvent(
        event_id=f"{tenant_id}:lift:{group_id}:{agent_id}:{now:.6f}",
        kind=EventKind.OUTLIER,
        tenant_id=tenant_id,
        domain="",
        session_token="",
        occurred_at=now,
        engine_id="control-plane",
        group_id=group_id,
        agent_id=agent_id,
        outcome="lifted",
        status="admin",
    )
    try:
        await nc.publish(
            event_subject(settings.events_subject_prefix, tenant_id, EventKind.OUTLIER),
            encode_events([event]),
        )
    except Exception as exc:  # the feed misses one frame; the stats show the truth
        log.warning("ejection_lift_not_announced", error=str(exc) or type(exc).__name__)


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
            now_ms, ejections, streaks = await group_outliers(_redis(request), keys, group.id)
        except RedisError as exc:
            raise ServiceUnavailableException("Live counters are unavailable (RedisClient).") from exc
        members_ids = {m.agent_id for m in listed}
        out = {a: e for a, e in ejections.items() if e.until_ms > now_ms and a in members_ids}
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
                ejected_until=_ms(out[m.agent_id].until_ms) if m.agent_id in out else None,
                ejection_reason=ejections[m.agent_id].reason if m.agent_id in ejections else None,
                ejections=ejections[m.agent_id].ejections if m.agent_id in ejections else 0,
                on_probation=m.agent_id in ejections and m.agent_id not in out,
                consecutive_failures=streaks.get(m.agent_id, 0),
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
            ejected=[
                EjectionRead(
                    agent_id=agent_id,
                    until=_ms(e.until_ms),
                    since=_ms(e.at_ms),
                    reason=e.reason,
                    ejections=e.ejections,
                    session_token=e.session_token,
                )
                for agent_id, e in sorted(out.items(), key=lambda item: (item[1].until_ms, item[0]))
            ],
        )

    @delete("/{group_id:int}/ejections/{agent_id:int}", status_code=HTTP_204_NO_CONTENT)
    async def lift_ejection(
        self, request: Request[Any, Any, Any], auth: Auth, group_id: Id, agent_id: Id
    ) -> None:
        """Let an ejected agent (settings.outlier) back into the group's selection now, with a clean
        slate (no probation, failures forgotten); 404 when it is not a member or has no ejection."""
        group = await auth.scope.get(AgentGroup, group_id, GROUP)
        if agent_id not in {m.agent_id for m in await members.list_members(auth.scope, group)}:
            raise NotFoundException(f"agent {agent_id} is not a member of agent group {group_id}")
        keys = TenantKeys(get_settings().redis_prefix, auth.tenant_id)
        try:
            lifted = await lift_ejection(_redis(request), keys, group.id, agent_id)
        except RedisError as exc:
            raise ServiceUnavailableException("Live counters are unavailable (RedisClient).") from exc
        if not lifted:
            raise NotFoundException(f"agent {agent_id} is not ejected from agent group {group_id}")
        log.info(
            "admin_change",
            action="ejection_lifted",
            tenant_id=auth.tenant_id,
            user_id=auth.user.id,
            group_id=group.id,
            agent_id=agent_id,
        )
        await announce_lift(request, auth.tenant_id, group.id, agent_id)

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
