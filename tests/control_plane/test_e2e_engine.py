"""Config written through the control plane's API reaches a running engine through the snapshot
pipe (PostgreSQL → outbox → NATS KV → engine), and calls are routed by it. Prints propagation times."""

from __future__ import annotations

import asyncio
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest

from routing_engine.app import EngineApp
from tests.control_plane.conftest import Account
from tests.routing_engine.harness import asgi_client, load_fixture, running_engine


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


SESSION_UPDATES = load_fixture("session-updates-answered.json")
CDR = load_fixture("cdr-answered.json")


async def engine_post(engine: EngineApp, path: str, body: Any, key: str) -> httpx.Response:
    async with asgi_client(engine) as client:
        return await client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})


async def test_a_whole_call_reads_back_through_the_api(account: Account) -> None:
    """Config → snapshot → engine → application request → dial-status fallback → session updates
    (duplicated and out of order) → CDR → record, timeline, CDR and audit through the API."""
    async with running_engine() as engine:
        domain_name = f"call-{uuid.uuid4().hex[:8]}.cloudonix.net"
        domain = (await account.post("/api/domains", json={"domain": domain_name})).json()
        key = domain["webhook_key"]
        agents = []
        for n in (1, 2):
            agents.append(
                (
                    await account.post(
                        "/api/voice-agents",
                        json={"name": f"Agent {n}", "provider": "vapi", "service_value": f"+1212555012{n}"},
                    )
                ).json()
            )
        group = (
            await account.post("/api/agent-groups", json={"name": "Line", "strategy": "priority"})
        ).json()
        for priority, agent in enumerate(agents, start=1):
            await account.post(
                f"/api/agent-groups/{group['id']}/members",
                json={"agent_id": agent["id"], "priority": priority},
            )
        rule = (
            await account.post(
                "/api/inbound-routing-rules",
                json={"pattern": "*", "target_type": "group", "target_id": group["id"]},
            )
        ).json()
        await applied_within(engine, account.tenant_id, await tenant_version(account))

        session = uuid.uuid4().hex
        inbound = dict(
            load_fixture("application-inbound.json"), Session=session, CallSid=session, Domain=domain_name
        )
        first = await engine_post(engine, f"/api/voice/application/{domain_name}", inbound, key)
        dial = ET.fromstring(first.content).find("./Dial")
        assert dial is not None
        assert dial.findtext("Service") == "+12125550121"  # priority 1
        action = httpx.URL(dial.get("action", ""))
        second = await engine_post(
            engine,
            f"{action.path}?{action.query.decode()}",
            dict(inbound, DialCallStatus="no-answer", CallStatus="no-answer"),
            key,
        )
        assert ET.fromstring(second.content).findtext("./Dial/Service") == "+12125550122"  # fallback

        # Cloudonix's session updates for this call: all five, then repeats, out of order (12 deliveries).
        updates = [dict(u, token=session, domain=domain_name) for u in SESSION_UPDATES]
        for u in updates:
            u["eventId"] = f"{session}-{u['status']}"
        deliveries = [updates[0], updates[2], updates[1], updates[4], updates[3], updates[0]]
        deliveries += [updates[4], updates[1], updates[2], updates[3], [updates[4]], updates[0]]
        for body in deliveries:
            r = await engine_post(engine, f"/api/voice/session/update/{domain_name}", body, key)
            assert r.status_code == 204, r.text
        cdr = dict(CDR, domain=domain_name, session=dict(CDR["session"], token=session))
        for _ in range(2):
            r = await engine_post(engine, f"/api/voice/session/cdr/{domain_name}", cdr, key)
            assert r.status_code == 204, r.text

        # The control plane's consumer persists the events; read everything back through the API.
        detail: dict[str, Any] = {}
        waited = time.perf_counter()
        for _ in range(200):
            response = await account.get(f"/api/calls/{session}")
            if response.status_code == 200:
                detail = response.json()
                if detail["disposition"] == "ANSWER" and len(detail["timeline"]) >= 8:
                    break
            await asyncio.sleep(0.05)
        assert detail, "the call never reached the control plane"
        print(f"\nlast webhook → call complete in the API: {(time.perf_counter() - waited) * 1000:.0f} ms")
        assert detail["status"] == "completed"
        assert detail["agent_id"] == agents[1]["id"]
        assert detail["group_id"] == group["id"]
        assert detail["rule_id"] == rule["id"]
        assert detail["attempts"] == 2
        assert detail["disposition"] == "ANSWER"
        assert detail["duration"] == 96
        assert detail["billsec"] == 88
        assert detail["start_time"].startswith("2026-01-10T23:58:35")
        assert detail["answer_time"].startswith("2026-01-10T23:58:43")
        assert detail["end_time"].startswith("2026-01-11T00:00:11")
        kinds = [e["kind"] for e in detail["timeline"]]
        # routed, dial_status, five distinct session updates, one CDR: duplicates stored once.
        assert kinds.count("routed") == 1
        assert kinds.count("dial_status") == 1
        assert kinds.count("session_update") == 5
        assert kinds.count("cdr") == 1
        assert [a["agent_id"] for a in detail["routing_attempts"]] == [agents[0]["id"], agents[1]["id"]]

        cdrs = (await account.get("/api/cdr", params={"token": session})).json()
        assert cdrs["meta"]["total"] == 1
        assert cdrs["data"][0]["disposition"] == "ANSWER"
        assert cdrs["filters_applied"] == {"token": session}
        audit = (
            await account.get("/api/webhook-audit", params={"session_token": session, "per_page": 100})
        ).json()
        assert audit["meta"]["total"] == len(detail["timeline"])
        assert key not in str(audit)
        active = (await account.get("/api/calls/active")).json()
        assert session not in str(active)


TERMINAL_PATHS = [
    # (final Cloudonix session status, CDR disposition, the record's state)
    ("answer", "ANSWER", "completed"),
    ("busy", "BUSY", "busy"),
    ("noanswer", "NO ANSWER", "no_answer"),
    ("cancel", "CANCEL", "canceled"),
    ("error", "FAILED", "failed"),
    ("error", "CONGESTION", "failed"),
]


@pytest.mark.parametrize(("final_status", "disposition", "state"), TERMINAL_PATHS)
async def test_each_terminal_path_frees_the_slot_once(
    account: Account, final_status: str, disposition: str, state: str
) -> None:
    async with running_engine() as engine:
        domain_name = f"end-{uuid.uuid4().hex[:8]}.cloudonix.net"
        key = (await account.post("/api/domains", json={"domain": domain_name})).json()["webhook_key"]
        agent = (
            await account.post(
                "/api/voice-agents",
                json={"name": "Solo", "provider": "vapi", "service_value": "+12125550131"},
            )
        ).json()
        await account.post(
            "/api/inbound-routing-rules",
            json={"pattern": "*", "target_type": "agent", "target_id": agent["id"]},
        )
        await applied_within(engine, account.tenant_id, await tenant_version(account))

        session = uuid.uuid4().hex
        inbound = dict(
            load_fixture("application-inbound.json"), Session=session, CallSid=session, Domain=domain_name
        )
        routed = await engine_post(engine, f"/api/voice/application/{domain_name}", inbound, key)
        assert ET.fromstring(routed.content).findtext("./Dial/Service") == "+12125550131"
        active = await engine.balancer.active_calls(account.tenant_id, [agent["id"]])
        assert active == {agent["id"]: 1}

        ringing, final = (dict(SESSION_UPDATES[2]), dict(SESSION_UPDATES[4]))
        for update, status in ((ringing, "ringing"), (final, final_status.upper())):
            update.update(token=session, domain=domain_name, status=status, eventId=f"{session}-{status}")
            if status != "ringing" and final_status != "answer":
                update.update(callAnswerTime=None, answerTime=None)
        for body in (ringing, final, final):  # the terminal update twice
            assert (
                await engine_post(engine, f"/api/voice/session/update/{domain_name}", body, key)
            ).status_code == 204
        assert await engine.balancer.active_calls(account.tenant_id, [agent["id"]]) == {agent["id"]: 0}
        cdr = dict(
            CDR, domain=domain_name, disposition=disposition, session=dict(CDR["session"], token=session)
        )
        if disposition != "ANSWER":
            cdr.update(billsec=0)
            cdr["session"].update(callAnswerTime=None)
        assert (
            await engine_post(engine, f"/api/voice/session/cdr/{domain_name}", cdr, key)
        ).status_code == 204
        # Still exactly free (not negative, not double-freed) after the CDR.
        assert await engine.balancer.active_calls(account.tenant_id, [agent["id"]]) == {agent["id"]: 0}
        assert not await engine.balancer.release(account.tenant_id, session, reason="test")

        record: dict[str, Any] = {}
        for _ in range(200):
            response = await account.get(f"/api/calls/{session}")
            if response.status_code == 200 and response.json()["disposition"] is not None:
                record = response.json()
                break
            await asyncio.sleep(0.05)
        assert record, "the call never reached the control plane"
        assert record["status"] == state
        assert record["disposition"] == ("NOANSWER" if disposition == "NO ANSWER" else disposition)
        assert record["agent_id"] == agent["id"]
        releases = [e for e in record["timeline"] if e["outcome"] == "released"]
        assert len(releases) == 1, record["timeline"]
