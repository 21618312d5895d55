"""Config written through the control plane's API reaches a running engine through the snapshot
pipe (PostgreSQL → outbox → NATS KV → engine), and calls are routed by it. Prints propagation times."""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any

from routing_engine.app import EngineApp
from tests.control_plane.conftest import Account
from tests.routing_engine.harness import asgi_client, running_engine


async def applied_within(engine: EngineApp, tenant_id: int, version: int, within_s: float = 5.0) -> float:
    """Seconds until the engine runs ``version`` (or newer) of the tenant's snapshot."""
    started = time.perf_counter()
    assert await engine.store.wait_for(tenant_id, version, within_s=within_s), "snapshot did not arrive"
    return time.perf_counter() - started


async def tenant_version(account: Account) -> int:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from control_plane.settings import get_settings

    db = create_async_engine(get_settings().database_url)
    async with db.connect() as conn:
        version = (
            await conn.execute(
                text("SELECT config_version FROM tenants WHERE id = :t"), {"t": account.tenant_id}
            )
        ).scalar_one()
    await db.dispose()
    return int(version)


async def call(engine: EngineApp, domain: str, key: str, to: str = "+12125550199") -> ET.Element:
    session = uuid.uuid4().hex
    async with asgi_client(engine) as client:
        response = await client.post(
            f"/api/voice/application/{domain}",
            json={
                "Session": session,
                "CallSid": session,
                "From": "+14155550100",
                "To": to,
                "Direction": "inbound",
            },
            headers={"Authorization": f"Bearer {key}"},
        )
    assert response.status_code == 200, response.text
    return ET.fromstring(response.content)


async def test_api_changes_reach_the_engine_and_route_calls(account: Account) -> None:
    async with running_engine() as engine:
        domain_name = f"e2e-{uuid.uuid4().hex[:8]}.cloudonix.net"
        domain: dict[str, Any] = (await account.post("/api/domains", json={"domain": domain_name})).json()
        agent = (
            await account.post(
                "/api/voice-agents",
                json={"name": "E2E agent", "provider": "vapi", "service_value": "+12125550123"},
            )
        ).json()
        group = (
            await account.post("/api/agent-groups", json={"name": "E2E group", "strategy": "priority"})
        ).json()
        assert (
            await account.post(f"/api/agent-groups/{group['id']}/members", json={"agent_id": agent["id"]})
        ).status_code == 201
        written = time.perf_counter()
        rule = await account.post(
            "/api/inbound-routing-rules",
            json={"pattern": "+1212*", "target_type": "group", "target_id": group["id"]},
        )
        assert rule.status_code == 201
        version = await tenant_version(account)
        await applied_within(engine, account.tenant_id, version)
        first_total = time.perf_counter() - written

        answer = await call(engine, domain_name, domain["webhook_key"])
        service = answer.find("./Dial/Service")
        assert service is not None
        assert service.get("provider") == "vapi"
        assert service.text == "+12125550123"

        # Disable the agent: the next call gets the no-agent answer.
        toggled_at = time.perf_counter()
        assert (await account.patch(f"/api/voice-agents/{agent['id']}/toggle")).json()["enabled"] is False
        second = await applied_within(engine, account.tenant_id, await tenant_version(account))
        second_total = time.perf_counter() - toggled_at
        answer = await call(engine, domain_name, domain["webhook_key"])
        assert answer.find("./Dial") is None
        assert answer.find("./Hangup") is not None

        # A number no rule matches, and the old key after a rotation.
        rotated = (await account.post(f"/api/domains/{domain['id']}/rotate-key")).json()
        await applied_within(engine, account.tenant_id, await tenant_version(account))
        async with asgi_client(engine) as client:
            old = await client.post(
                f"/api/voice/application/{domain_name}",
                json={"Session": uuid.uuid4().hex, "To": "+12125550199"},
                headers={"Authorization": f"Bearer {domain['webhook_key']}"},
            )
        assert old.status_code == 401
        unmatched = await call(engine, domain_name, rotated["webhook_key"], to="+33155550199")
        assert unmatched.find("./Dial") is None
        print(
            f"\npropagation (API request sent → engine runs the new snapshot): rule create "
            f"{first_total * 1000:.1f} ms; agent toggle {second_total * 1000:.1f} ms "
            f"({second * 1000:.1f} ms of it after the API answered)"
        )
