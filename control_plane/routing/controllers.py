"""Routes: inbound routing rules CRUD and the dry run."""

from __future__ import annotations

from litestar import Controller, delete, get, post, put
from litestar.params import FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy import String, cast

from control_plane.auth.context import VIEWER_MAY_WRITE, Auth
from control_plane.db.models import InboundRoutingRule
from control_plane.pagination import Page, paginate
from control_plane.params import Id, IdFilter, PageNumber, PerPage100, Search
from control_plane.routing import service
from control_plane.routing.schemas import (
    InboundRuleCreateIn,
    InboundRuleRead,
    InboundRuleUpdateIn,
    RuleTestIn,
    RuleTestOut,
)
from shared.enums import TargetType

LABEL = "inbound routing rule"


class InboundRulesController(Controller):
    path = "/api/inbound-routing-rules"
    tags = ["routing"]

    @get("/")
    async def list_rules(
        self,
        auth: Auth,
        page: PageNumber = 1,
        per_page: PerPage100 = 100,
        enabled: FromQuery[bool | None] = None,
        target_type: FromQuery[TargetType | None] = None,
        domain_id: IdFilter = None,
        search: Search = None,
    ) -> Page[InboundRuleRead]:
        """Rules in the order the engine tries them: priority, then id."""
        stmt = auth.scope.select(InboundRoutingRule)
        if enabled is not None:
            stmt = stmt.where(InboundRoutingRule.enabled.is_(enabled))
        if target_type is not None:
            stmt = stmt.where(InboundRoutingRule.target_type == target_type.value)
        if domain_id is not None:
            stmt = stmt.where(InboundRoutingRule.domain_id == domain_id)
        if search:
            like = f"%{search}%"
            stmt = stmt.where(
                InboundRoutingRule.name.ilike(like)
                | InboundRoutingRule.pattern.ilike(like)
                | InboundRoutingRule.caller_pattern.ilike(like)
                | (cast(InboundRoutingRule.id, String) == search)
            )
        stmt = stmt.order_by(InboundRoutingRule.priority, InboundRoutingRule.id)
        return await paginate(auth.scope.session, stmt, page, per_page, service.rule_read)

    @post("/", status_code=HTTP_201_CREATED)
    async def create_rule(self, auth: Auth, data: JSONBody[InboundRuleCreateIn]) -> InboundRuleRead:
        return service.rule_read(await service.create_rule(auth.scope, data))

    # A dry run reads the rules and changes nothing: viewers may ask it too.
    @post("/test", status_code=HTTP_200_OK, opt={VIEWER_MAY_WRITE: True})
    async def test_rules(self, auth: Auth, data: JSONBody[RuleTestIn]) -> RuleTestOut:
        """Dry run: which rule and target the engine would choose for ``to``/``from``/``domain``."""
        return await service.dry_run(auth.scope, data)

    @get("/{rule_id:int}")
    async def get_rule(self, auth: Auth, rule_id: Id) -> InboundRuleRead:
        return service.rule_read(await auth.scope.get(InboundRoutingRule, rule_id, LABEL))

    @put("/{rule_id:int}")
    async def update_rule(
        self, auth: Auth, rule_id: Id, data: JSONBody[InboundRuleUpdateIn]
    ) -> InboundRuleRead:
        """Update the fields given."""
        rule = await auth.scope.get(InboundRoutingRule, rule_id, LABEL)
        return service.rule_read(await service.update_rule(auth.scope, rule, data))

    @delete("/{rule_id:int}", status_code=HTTP_204_NO_CONTENT)
    async def delete_rule(self, auth: Auth, rule_id: Id) -> None:
        await service.delete_rule(auth.scope, await auth.scope.get(InboundRoutingRule, rule_id, LABEL))


__all__ = ["InboundRulesController"]
