"""Routes: the tenant and its settings (``/api/tenant``, alias ``/api/settings``) and Cloudonix domains."""

from __future__ import annotations

from litestar import Controller, delete, get, post, put
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from control_plane.auth.context import Auth
from control_plane.db.models import Domain
from control_plane.pagination import Page, paginate
from control_plane.params import Id, PageNumber, PerPage100
from control_plane.tenants import domains, service
from control_plane.tenants.schemas import (
    DomainCreateIn,
    DomainRead,
    DomainUpdateIn,
    DomainWithKey,
    TenantRead,
    TenantUpdateIn,
)


class TenantController(Controller):
    path = "/api"
    tags = ["tenant"]

    @get(["/tenant", "/settings"])
    async def get_tenant(self, auth: Auth) -> TenantRead:
        """The caller's tenant: name, settings (no-agent behaviour, time zone, fallback CXML, retention)."""
        return service.tenant_read(await auth.scope.tenant())

    @put(["/tenant", "/settings"])
    async def update_tenant(self, auth: Auth, data: JSONBody[TenantUpdateIn]) -> TenantRead:
        """Change the name and/or settings; ``settings`` may be partial and is merged onto the current."""
        tenant = await service.update_tenant(auth.scope, await auth.scope.tenant(), data)
        return service.tenant_read(tenant)


class DomainsController(Controller):
    path = "/api/domains"
    tags = ["domains"]

    @get("/")
    async def list_domains(
        self,
        auth: Auth,
        page: PageNumber = 1,
        per_page: PerPage100 = 20,
    ) -> Page[DomainRead]:
        stmt = auth.scope.select(Domain).order_by(Domain.id)
        return await paginate(auth.scope.session, stmt, page, per_page, domains.domain_read)

    @post("/", status_code=HTTP_201_CREATED)
    async def create_domain(self, auth: Auth, data: JSONBody[DomainCreateIn]) -> DomainWithKey:
        """Register a Cloudonix domain. The answer carries its webhook key in full, once: paste it into
        the domain's ``authorization-api-key`` property; the webhook URLs go into Cloudonix too."""
        domain, key = await domains.create_domain(auth.scope, data)
        return domains.domain_with_key(domain, key)

    @get("/{domain_id:int}")
    async def get_domain(self, auth: Auth, domain_id: Id) -> DomainRead:
        return domains.domain_read(await auth.scope.get(Domain, domain_id, "domain"))

    @put("/{domain_id:int}")
    async def update_domain(self, auth: Auth, domain_id: Id, data: JSONBody[DomainUpdateIn]) -> DomainRead:
        """Set source networks (CIDRs; empty = any), a request-rate ceiling, and aliases."""
        domain = await auth.scope.get(Domain, domain_id, "domain")
        return domains.domain_read(await domains.update_domain(auth.scope, domain, data))

    @delete("/{domain_id:int}", status_code=HTTP_204_NO_CONTENT)
    async def delete_domain(self, auth: Auth, domain_id: Id) -> None:
        """Delete the domain and the inbound rules limited to it."""
        await domains.delete_domain(auth.scope, await auth.scope.get(Domain, domain_id, "domain"))

    @post("/{domain_id:int}/rotate-key", status_code=HTTP_200_OK)
    async def rotate_key(self, auth: Auth, domain_id: Id) -> DomainWithKey:
        """Replace the webhook key; the old one stops working as soon as engines load the new snapshot."""
        domain = await auth.scope.get(Domain, domain_id, "domain")
        key = await domains.rotate_key(auth.scope, domain)
        await auth.scope.session.flush()
        return domains.domain_with_key(domain, key)


__all__ = ["DomainsController", "TenantController"]
