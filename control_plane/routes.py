"""Every domain's controllers, registered in one list."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from control_plane.agents.controllers import ProvidersController, VoiceAgentsController
from control_plane.auth.controllers import AuthController, UsersController
from control_plane.groups.controllers import AgentGroupsController, GroupMembersController
from control_plane.tenants.controllers import DomainsController, TenantController

ROUTE_HANDLERS: list[ControllerRouterHandler] = [
    AuthController,
    UsersController,
    ProvidersController,
    VoiceAgentsController,
    TenantController,
    DomainsController,
    AgentGroupsController,
    GroupMembersController,
]
