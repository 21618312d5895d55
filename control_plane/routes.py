"""Every domain's controllers, registered in one list."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from control_plane.agents.controllers import ProvidersController, VoiceAgentsController
from control_plane.analytics.controllers import AnalyticsController
from control_plane.audit.controllers import WebhookAuditController
from control_plane.auth.controllers import AuthController, UsersController
from control_plane.calls.controllers import (
    AnalyticsCallRecordsController,
    CallRecordsController,
    CallsController,
)
from control_plane.cdr.controllers import CdrController
from control_plane.exports.controllers import ExportsController
from control_plane.groups.controllers import AgentGroupsController, GroupMembersController
from control_plane.live.controllers import live_feed
from control_plane.replay.controllers import RoutingReplayController
from control_plane.routing.controllers import InboundRulesController
from control_plane.tenants.controllers import DomainsController, TenantController
from control_plane.trunks.controllers import OutboundRulesController, TrunksController

ROUTE_HANDLERS: list[ControllerRouterHandler] = [
    AuthController,
    UsersController,
    ProvidersController,
    VoiceAgentsController,
    TenantController,
    DomainsController,
    AgentGroupsController,
    GroupMembersController,
    InboundRulesController,
    RoutingReplayController,
    TrunksController,
    OutboundRulesController,
    CallsController,
    AnalyticsCallRecordsController,
    CallRecordsController,
    AnalyticsController,
    CdrController,
    WebhookAuditController,
    ExportsController,
    live_feed,
]
