"""Routes: the analytics reports (SPEC §2.7 and the original system's overview, trends and realtime).
Every route reads; viewers may call them. Shapes: control_plane/analytics/schemas.py."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import QueryParameter
from redis.asyncio import Redis

from control_plane.analytics import schemas, service, splits
from control_plane.auth.context import Auth
from control_plane.params import IdFilter, Text
from control_plane.settings import ControlPlaneSettings

Minutes = Annotated[
    int,
    QueryParameter(
        ge=1, le=service.MAX_REALTIME_MINUTES, description=f"1 to {service.MAX_REALTIME_MINUTES} minutes"
    ),
]


def _settings(request: Request[Any, Any, Any]) -> ControlPlaneSettings:
    settings: ControlPlaneSettings = request.app.state.settings
    return settings


def _live(request: Request[Any, Any, Any]) -> tuple[Redis, str]:
    redis: Redis = request.app.state.redis
    return redis, _settings(request).redis_prefix


async def _range(
    request: Request[Any, Any, Any], auth: Auth, start_date: str | None, end_date: str | None
) -> service.Range:
    max_days = _settings(request).analytics_max_range_days
    return await service.parse_range(auth.scope, start_date, end_date, max_days)


class AnalyticsController(Controller):
    path = "/api/analytics"
    tags = ["analytics"]

    @get("/metrics")
    async def metrics(
        self,
        request: Request[Any, Any, Any],
        auth: Auth,
        start_date: Text = None,
        end_date: Text = None,
        agent_id: IdFilter = None,
        group_id: IdFilter = None,
    ) -> schemas.Metrics:
        """Calls today, the range's success rate and mean answered duration, calls active now, and a
        trend point per tenant day. Dates are the tenant's days (default: the last 30 days)."""
        r = await _range(request, auth, start_date, end_date)
        await service.check_agent(auth.scope, agent_id)
        await service.check_group(auth.scope, group_id)
        return await service.metrics(auth.scope, _live(request), r, agent_id, group_id)

    @get("/agents")
    async def agents(
        self,
        request: Request[Any, Any, Any],
        auth: Auth,
        start_date: Text = None,
        end_date: Text = None,
        group_id: IdFilter = None,
    ) -> schemas.AgentsReport:
        """Per agent: calls, answered, success rate, mean duration and talk time, active calls now,
        capacity and utilisation (active / capacity). ``group_id`` keeps that group's calls and members."""
        r = await _range(request, auth, start_date, end_date)
        await service.check_group(auth.scope, group_id)
        return await service.agents(auth.scope, _live(request), r, group_id)

    @get("/groups")
    async def groups(
        self,
        request: Request[Any, Any, Any],
        auth: Auth,
        start_date: Text = None,
        end_date: Text = None,
    ) -> schemas.GroupsReport:
        """Per group: calls routed through it, answered, success rate, durations, its members' active
        calls now, capacity and utilisation."""
        r = await _range(request, auth, start_date, end_date)
        return await service.groups(auth.scope, _live(request), r)

    @get("/splits")
    async def splits(
        self,
        request: Request[Any, Any, Any],
        auth: Auth,
        rule_id: IdFilter = None,
        start_date: Text = None,
        end_date: Text = None,
    ) -> schemas.SplitReport:
        """Per branch of an inbound rule's traffic split (``rule_id``; without it, every split rule's):
        the calls that took it, answered, success rate, durations and talk time, its configured percent
        and actual share."""
        r = await _range(request, auth, start_date, end_date)
        return await splits.splits(auth.scope, r, rule_id)

    @get("/overview")
    async def overview(
        self,
        request: Request[Any, Any, Any],
        auth: Auth,
        start_date: Text = None,
        end_date: Text = None,
        agent_id: IdFilter = None,
        group_id: IdFilter = None,
    ) -> schemas.Overview:
        """The range's and today's calls by outcome, calls per direction, unrouted calls, active calls
        now, and how many agents and groups the tenant has."""
        r = await _range(request, auth, start_date, end_date)
        await service.check_agent(auth.scope, agent_id)
        await service.check_group(auth.scope, group_id)
        return await service.overview(auth.scope, _live(request), r, agent_id, group_id)

    @get("/trends")
    async def trends(
        self,
        request: Request[Any, Any, Any],
        auth: Auth,
        interval: Text = None,
        start_date: Text = None,
        end_date: Text = None,
        agent_id: IdFilter = None,
        group_id: IdFilter = None,
    ) -> schemas.Trends:
        """Calls by outcome per bucket: ``interval=day`` (tenant days, the default) or ``hour`` (UTC
        hours, at most 31 days); every bucket of the range is present, zeros included."""
        r = await _range(request, auth, start_date, end_date)
        chosen = service.check_interval(interval, r)
        await service.check_agent(auth.scope, agent_id)
        await service.check_group(auth.scope, group_id)
        return await service.trends(auth.scope, r, chosen, agent_id, group_id)

    @get("/realtime")
    async def realtime(
        self, request: Request[Any, Any, Any], auth: Auth, minutes: Minutes = 15
    ) -> schemas.Realtime:
        """Active calls now (the engines' live state), per agent and group, and the calls started in
        each of the last ``minutes`` minutes (1 to 60, default 15)."""
        return await service.realtime(auth.scope, _live(request), minutes)
