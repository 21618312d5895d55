"""Routes: the provider catalogue and voice-agent CRUD, toggle and validate."""

from __future__ import annotations

from litestar import Controller, delete, get, patch, post, put
from litestar.params import FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from control_plane.agents import service
from control_plane.agents.schemas import (
    AgentCreateIn,
    AgentRead,
    AgentUpdateIn,
    ProvidersOut,
    ValidationOut,
)
from control_plane.auth.context import Auth
from control_plane.db.models import VoiceAgent
from control_plane.pagination import Page, paginate
from control_plane.params import Id, PageNumber, PerPage100, Search, Text
from shared.providers import provider_list


class ProvidersController(Controller):
    path = "/api"
    tags = ["voice agents"]

    @get(["/providers", "/voice-agents/providers"])
    async def list_providers(self, auth: Auth) -> ProvidersOut:
        """The provider catalogue: what each provider's service_value must be, and which credentials it needs."""
        return ProvidersOut(data=provider_list())


class VoiceAgentsController(Controller):
    path = "/api/voice-agents"
    tags = ["voice agents"]

    @get("/")
    async def list_agents(
        self,
        auth: Auth,
        page: PageNumber = 1,
        per_page: PerPage100 = 20,
        search: Search = None,
        enabled: FromQuery[bool | None] = None,
        provider: Text = None,
    ) -> Page[AgentRead]:
        stmt = auth.scope.select(VoiceAgent)
        if search:
            like = f"%{search}%"
            stmt = stmt.where(VoiceAgent.name.ilike(like) | VoiceAgent.service_value.ilike(like))
        if enabled is not None:
            stmt = stmt.where(VoiceAgent.enabled.is_(enabled))
        if provider:
            stmt = stmt.where(VoiceAgent.provider == provider)
        return await paginate(
            auth.scope.session, stmt.order_by(VoiceAgent.id), page, per_page, service.agent_read
        )

    @post("/", status_code=HTTP_201_CREATED)
    async def create_agent(self, auth: Auth, data: JSONBody[AgentCreateIn]) -> AgentRead:
        return service.agent_read(await service.create_agent(auth.scope, data))

    @get("/{agent_id:int}")
    async def get_agent(self, auth: Auth, agent_id: Id) -> AgentRead:
        return service.agent_read(await auth.scope.get(VoiceAgent, agent_id, "voice agent"))

    @put("/{agent_id:int}")
    async def replace_agent(self, auth: Auth, agent_id: Id, data: JSONBody[AgentUpdateIn]) -> AgentRead:
        """Update the fields given (the original system's PUT took partial bodies too)."""
        agent = await auth.scope.get(VoiceAgent, agent_id, "voice agent")
        return service.agent_read(await service.update_agent(auth.scope, agent, data))

    @patch("/{agent_id:int}")
    async def update_agent(self, auth: Auth, agent_id: Id, data: JSONBody[AgentUpdateIn]) -> AgentRead:
        agent = await auth.scope.get(VoiceAgent, agent_id, "voice agent")
        return service.agent_read(await service.update_agent(auth.scope, agent, data))

    @delete("/{agent_id:int}", status_code=HTTP_204_NO_CONTENT)
    async def delete_agent(self, auth: Auth, agent_id: Id) -> None:
        """Delete an agent (it leaves its groups); 409 while an inbound rule targets it."""
        await service.delete_agent(auth.scope, await auth.scope.get(VoiceAgent, agent_id, "voice agent"))

    @patch("/{agent_id:int}/toggle")
    async def toggle_agent(self, auth: Auth, agent_id: Id) -> AgentRead:
        agent = await auth.scope.get(VoiceAgent, agent_id, "voice agent")
        agent.enabled = not agent.enabled
        await auth.scope.config_changed()
        return service.agent_read(agent)

    @post("/{agent_id:int}/validate", status_code=HTTP_200_OK)
    async def validate_agent(self, auth: Auth, agent_id: Id) -> ValidationOut:
        """Check the stored config against the provider's rules; lists the problems found."""
        agent = await auth.scope.get(VoiceAgent, agent_id, "voice agent")
        problems = service.stored_config_problems(agent)
        return ValidationOut(valid=not problems, problems=problems)


__all__ = ["ProvidersController", "VoiceAgentsController"]
