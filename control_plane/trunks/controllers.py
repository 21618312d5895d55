"""Routes: trunks and outbound routing rules CRUD."""

from __future__ import annotations

from litestar import Controller, delete, get, post, put
from litestar.params import FromQuery, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from control_plane.auth.context import Auth
from control_plane.db.models import OutboundRoutingRule, Trunk
from control_plane.pagination import Page, paginate
from control_plane.params import Id, IdFilter, PageNumber, PerPage100, Search
from control_plane.trunks import service
from control_plane.trunks.schemas import (
    OutboundRuleCreateIn,
    OutboundRuleRead,
    OutboundRuleUpdateIn,
    TrunkCreateIn,
    TrunkRead,
    TrunkUpdateIn,
)


class TrunksController(Controller):
    path = "/api/trunks"
    tags = ["routing"]

    @get("/")
    async def list_trunks(
        self,
        auth: Auth,
        page: PageNumber = 1,
        per_page: PerPage100 = 100,
        enabled: FromQuery[bool | None] = None,
        search: Search = None,
    ) -> Page[TrunkRead]:
        stmt = auth.scope.select(Trunk)
        if enabled is not None:
            stmt = stmt.where(Trunk.enabled.is_(enabled))
        if search:
            like = f"%{search}%"
            stmt = stmt.where(Trunk.name.ilike(like) | Trunk.cloudonix_trunk.ilike(like))
        stmt = stmt.order_by(Trunk.priority, Trunk.id)
        return await paginate(auth.scope.session, stmt, page, per_page, service.trunk_read)

    @post("/", status_code=HTTP_201_CREATED)
    async def create_trunk(self, auth: Auth, data: JSONBody[TrunkCreateIn]) -> TrunkRead:
        """Create a trunk; ``is_default: true`` takes the default from the tenant's previous one."""
        return service.trunk_read(await service.create_trunk(auth.scope, data))

    @get("/{trunk_id:int}")
    async def get_trunk(self, auth: Auth, trunk_id: Id) -> TrunkRead:
        return service.trunk_read(await auth.scope.get(Trunk, trunk_id, "trunk"))

    @put("/{trunk_id:int}")
    async def update_trunk(self, auth: Auth, trunk_id: Id, data: JSONBody[TrunkUpdateIn]) -> TrunkRead:
        """Update the fields given."""
        trunk = await auth.scope.get(Trunk, trunk_id, "trunk")
        return service.trunk_read(await service.update_trunk(auth.scope, trunk, data))

    @delete("/{trunk_id:int}", status_code=HTTP_204_NO_CONTENT)
    async def delete_trunk(self, auth: Auth, trunk_id: Id) -> None:
        """Delete a trunk; 409 naming the outbound rules that still use it."""
        await service.delete_trunk(auth.scope, await auth.scope.get(Trunk, trunk_id, "trunk"))


class OutboundRulesController(Controller):
    path = "/api/outbound-routing-rules"
    tags = ["routing"]

    @get("/")
    async def list_rules(
        self,
        auth: Auth,
        page: PageNumber = 1,
        per_page: PerPage100 = 100,
        enabled: FromQuery[bool | None] = None,
        trunk_id: IdFilter = None,
        search: Search = None,
    ) -> Page[OutboundRuleRead]:
        """Rules in the order the engine tries them: priority, then id."""
        stmt = auth.scope.select(OutboundRoutingRule)
        if enabled is not None:
            stmt = stmt.where(OutboundRoutingRule.enabled.is_(enabled))
        if trunk_id is not None:
            ids = [r.id for r in await service.rules_using_trunk(auth.scope, trunk_id)]
            stmt = stmt.where(OutboundRoutingRule.id.in_(ids))
        if search:
            like = f"%{search}%"
            stmt = stmt.where(
                OutboundRoutingRule.name.ilike(like)
                | OutboundRoutingRule.destination_pattern.ilike(like)
                | OutboundRoutingRule.caller_id.ilike(like)
            )
        stmt = stmt.order_by(OutboundRoutingRule.priority, OutboundRoutingRule.id)
        return await paginate(auth.scope.session, stmt, page, per_page, service.outbound_read)

    @post("/", status_code=HTTP_201_CREATED)
    async def create_rule(self, auth: Auth, data: JSONBody[OutboundRuleCreateIn]) -> OutboundRuleRead:
        return service.outbound_read(await service.create_outbound(auth.scope, data))

    @get("/{rule_id:int}")
    async def get_rule(self, auth: Auth, rule_id: Id) -> OutboundRuleRead:
        return service.outbound_read(
            await auth.scope.get(OutboundRoutingRule, rule_id, "outbound routing rule")
        )

    @put("/{rule_id:int}")
    async def update_rule(
        self, auth: Auth, rule_id: Id, data: JSONBody[OutboundRuleUpdateIn]
    ) -> OutboundRuleRead:
        """Update the fields given."""
        rule = await auth.scope.get(OutboundRoutingRule, rule_id, "outbound routing rule")
        return service.outbound_read(await service.update_outbound(auth.scope, rule, data))

    @delete("/{rule_id:int}", status_code=HTTP_204_NO_CONTENT)
    async def delete_rule(self, auth: Auth, rule_id: Id) -> None:
        rule = await auth.scope.get(OutboundRoutingRule, rule_id, "outbound routing rule")
        await service.delete_outbound(auth.scope, rule)


__all__ = ["OutboundRulesController", "TrunksController"]
