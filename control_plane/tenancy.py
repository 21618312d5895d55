"""The one place that applies the tenant filter: every tenant-owned read and write goes through a
TenantScope bound to the caller's tenant. Another tenant's id answers 404, never 403 or data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from litestar.exceptions import NotFoundException
from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.db.base import TenantOwned
from control_plane.db.models import SnapshotOutbox, Tenant

M = TypeVar("M", bound=TenantOwned)


@dataclass(slots=True)
class TenantScope:
    session: AsyncSession
    tenant_id: int

    def select(self, model: type[M]) -> Select[M]:
        return select(model).where(model.tenant_id == self.tenant_id)

    def where(self, stmt: Select[Any], model: type[TenantOwned]) -> Select[Any]:
        """Add the tenant filter to a hand-written select over ``model``."""
        return stmt.where(model.tenant_id == self.tenant_id)

    async def get(self, model: type[M], obj_id: int, label: str | None = None) -> M:
        """The tenant's row or a 404."""
        obj = await self.find(model, obj_id)
        if obj is None:
            raise NotFoundException(f"{label or model.__tablename__} {obj_id} not found")  # type: ignore[attr-defined]
        return obj

    async def find(self, model: type[M], obj_id: int) -> M | None:
        stmt = self.select(model).where(model.id == obj_id)  # type: ignore[attr-defined]
        return (await self.session.scalars(stmt)).one_or_none()

    def add(self, obj: M) -> M:
        obj.tenant_id = self.tenant_id
        self.session.add(obj)
        return obj

    async def tenant(self) -> Tenant:
        tenant = await self.session.get(Tenant, self.tenant_id)
        if tenant is None:
            raise NotFoundException("tenant not found")
        return tenant

    async def config_changed(self) -> int:
        """Bump the tenant's config version and queue a snapshot publish, in this transaction.

        Call after every write that changes routing; the snapshot publisher picks the outbox row up
        after the commit (and on start-up and a timer, so a crash in between heals itself).
        """
        await self.session.flush()
        version = await self.session.scalar(
            update(Tenant)
            .where(Tenant.id == self.tenant_id)
            .values(config_version=Tenant.config_version + 1)
            .returning(Tenant.config_version)
        )
        assert version is not None
        version = int(version)
        self.session.add(SnapshotOutbox(tenant_id=self.tenant_id, version=version))
        self.session.info["config_changed"] = {*self.session.info.get("config_changed", ()), self.tenant_id}
        return version
