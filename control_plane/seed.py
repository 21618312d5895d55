"""The demo tenant for a local run (``vlb seed-demo``, and ``vlb run`` on an empty database).

``seed_demo(database_url)`` creates, only when the database has no tenant at all: tenant "Demo", its
admin ``admin@demo.local`` with a generated password, the domain ``demo.cloudonix.net`` with a webhook
key, two vapi agents, a load-balanced group of both (capacity 5 each) and a catch-all inbound rule to
the group. It goes through the same services as the API (so the same validation and config-version
bumps with their snapshot-outbox rows) in one transaction, and returns ``{email, password, domain,
webhook_key}``, or ``{}`` when tenants already exist.
"""

from __future__ import annotations

import asyncio
import secrets

import msgspec
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from control_plane.agents.schemas import AgentCreateIn
from control_plane.agents.service import create_agent
from control_plane.auth.service import create_tenant, create_user
from control_plane.db.models import AgentGroup, AgentGroupMember, InboundRoutingRule, Tenant
from control_plane.tenancy import TenantScope
from control_plane.tenants.domains import create_domain
from control_plane.tenants.schemas import DomainCreateIn
from shared.enums import Role, Strategy, TargetType
from shared.snapshot import GroupSettings

DEMO_TENANT = "Demo"
DEMO_EMAIL = "admin@demo.local"
DEMO_DOMAIN = "demo.cloudonix.net"
DEMO_AGENTS = (("Demo agent A", "+14155550101"), ("Demo agent B", "+14155550102"))
DEMO_GROUP = "Demo group"
DEMO_CAPACITY = 5
# Serialises concurrent seeders (two launchers on one database): taken for the transaction only.
_SEED_LOCK = 0x564C42_5345_4544  # "VLB" "SEED"


def async_database_url(database_url: str) -> str:
    """The URL with the psycopg (async-capable) driver, whatever driver it named."""
    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


async def seed_demo_async(database_url: str) -> dict[str, str]:
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
            await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SEED_LOCK})
            if await session.scalar(select(func.count()).select_from(Tenant)):
                return {}
            return await _create_demo(session)
    finally:
        await engine.dispose()


async def _create_demo(session: AsyncSession) -> dict[str, str]:
    tenant = await create_tenant(session, DEMO_TENANT)
    password = secrets.token_urlsafe(12)
    await create_user(session, tenant.id, "Demo admin", DEMO_EMAIL, password, Role.ADMIN)
    scope = TenantScope(session, tenant.id)
    domain, key = await create_domain(scope, DomainCreateIn(domain=DEMO_DOMAIN))
    agents = [
        await create_agent(scope, AgentCreateIn(name=name, provider="vapi", service_value=number))
        for name, number in DEMO_AGENTS
    ]
    group = scope.add(
        AgentGroup(
            name=DEMO_GROUP,
            strategy=Strategy.LOAD_BALANCED.value,
            settings=msgspec.to_builtins(GroupSettings()),
            enabled=True,
        )
    )
    await session.flush()
    for agent in agents:
        scope.add(
            AgentGroupMember(
                group_id=group.id, agent_id=agent.id, priority=1, capacity=DEMO_CAPACITY, weight=100
            )
        )
    scope.add(
        InboundRoutingRule(
            name="Every call to the demo group",
            pattern="*",
            target_type=TargetType.GROUP.value,
            target_id=group.id,
            priority=100,
            enabled=True,
            domain_id=None,
        )
    )
    await scope.config_changed()
    return {"email": DEMO_EMAIL, "password": password, "domain": domain.name, "webhook_key": key}


def seed_demo(database_url: str) -> dict[str, str]:
    """Synchronous entry point for the launcher (runs its own event loop)."""
    return asyncio.run(seed_demo_async(database_url))
