"""Explained decisions (issue 15 part 7) end to end: config through the API (granian control plane),
calls through a real engine (granian), the shared NATS, Redis and PostgreSQL. A call whose first agent
is full and whose second is ejected (then tried) gets a timeline trace naming those reasons, the rule
skipped for its schedule and the disabled member; the engine counts the reasons in its metrics; another
tenant cannot read the call."""

from __future__ import annotations

import asyncio
import datetime
import re
import uuid
from typing import Any

import httpx
import pytest

from tests.control_plane.live_harness import (
    INBOUND,
    LiveTenant,
    register,
    routable_tenant,
    served_fixtures,
    webhook,
)

pytestmark = pytest.mark.slow

AGENT = re.compile(r"agent=(\d+)")


plane, engine_url, api, engine = served_fixtures()


async def traced_tenant(
    api: httpx.AsyncClient, engine: httpx.AsyncClient
) -> tuple[LiveTenant, list[int], int]:
    """A priority group: agent 1 (capacity 1), agent 2, agent 3, a disabled agent 4; outlier ejection
    after one failure; a scheduled rule (closed all of today and its neighbours) before the group's
    rule. The domain last, then wait until the engine runs the whole snapshot."""
    t = await register(api, "Explained")
    agents = []
    for n in (1, 2, 3, 4):
        agent = await t.post(
            "/api/voice-agents",
            json={
                "name": f"x-{n}",
                "provider": "vapi",
                "service_value": f"+121255501{n:02d}",
                "enabled": n != 4,
            },
        )
        agents.append(agent["id"])
    group = await t.post(
        "/api/agent-groups",
        json={
            "name": "explained",
            "strategy": "priority",
            "settings": {"outlier": {"consecutive_failures": 1, "base_ejection_s": 300}, "max_attempts": 3},
        },
    )
    t.group_id = group["id"]
    for n, agent_id in enumerate(agents, start=1):
        await t.post(
            f"/api/agent-groups/{t.group_id}/members",
            json={"agent_id": agent_id, "priority": n, "capacity": 1 if n == 1 else 0},
        )
    today = datetime.datetime.now(datetime.UTC).date()
    closed = [str(today + datetime.timedelta(days=d)) for d in (-1, 0, 1)]
    scheduled = await t.post(
        "/api/inbound-routing-rules",
        json={
            "pattern": "+1212*",
            "priority": 1,
            "target_type": "group",
            "target_id": t.group_id,
            "schedule": {"timezone": "UTC", "holidays": closed},
        },
    )
    rule = await t.post(
        "/api/inbound-routing-rules",
        json={"pattern": "+1212*", "priority": 2, "target_type": "group", "target_id": t.group_id},
    )
    t.rule_id = rule["id"]
    domain = await t.post("/api/domains", json={"domain": f"explained-{uuid.uuid4().hex[:8]}.cloudonix.net"})
    t.domain, t.key = domain["domain"], domain["webhook_key"]
    for _ in range(400):
        response = await webhook(
            engine, t, "application", dict(INBOUND, Session=uuid.uuid4().hex, To="+19995550100")
        )
        if response.status_code == 200:
            return t, agents, scheduled["id"]
        await asyncio.sleep(0.05)
    raise AssertionError("the engine never ran the tenant's snapshot")


async def call(engine: httpx.AsyncClient, t: LiveTenant, session: str) -> int:
    answer = await webhook(engine, t, "application", dict(INBOUND, Session=session, CallSid=session))
    m = AGENT.search(answer.text)
    assert m is not None, answer.text
    return int(m.group(1))


async def timeline(api: httpx.AsyncClient, t: LiveTenant, session: str, kinds: int) -> list[dict[str, Any]]:
    """The call's timeline once the consumer has written ``kinds`` routing decisions of it."""
    auth = {"Authorization": f"Bearer {t.token}"}
    for _ in range(100):
        r = await api.get(f"/api/calls/{session}", headers=auth)
        if r.status_code == 200:
            entries = [e for e in r.json()["timeline"] if e["decision"] is not None]
            if len(entries) >= kinds:
                return entries
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {kinds} decisions in the timeline of {session}")


def reasons(decision: dict[str, Any]) -> dict[int, tuple[str, str | None]]:
    return {c["agent_id"]: (c["result"], c["reason"]) for c in decision["candidates"]}


async def test_a_decision_explains_full_ejected_tried_schedule_and_disabled(
    api: httpx.AsyncClient, engine: httpx.AsyncClient, engine_url: str
) -> None:
    t, (a1, a2, a3, a4), scheduled_id = await traced_tenant(api, engine)
    before = (await engine.get("/metrics")).text

    # call A takes agent 1's only slot
    s_a = uuid.uuid4().hex
    assert await call(engine, t, s_a) == a1
    # call B: agent 1 is full, agent 2 is chosen; its dial fails (busy): agent 2 is ejected and B's
    # fallback decision goes to agent 3, agent 2 now tried
    s_b = uuid.uuid4().hex
    assert await call(engine, t, s_b) == a2
    failed = await engine.post(
        f"/api/voice/application/{t.domain}/dial-status?attempt=1&agent={a2}",
        json=dict(INBOUND, Session=s_b, CallSid=s_b, DialCallStatus="busy"),
        headers={"Authorization": f"Bearer {t.key}"},
    )
    assert AGENT.search(failed.text).group(1) == str(a3)  # type: ignore[union-attr]
    # call C: agent 1 full, agent 2 ejected, agent 3 chosen
    s_c = uuid.uuid4().hex
    assert await call(engine, t, s_c) == a3

    first, fallback = await timeline(api, t, s_b, 2)
    assert reasons(first["decision"])[a1] == ("skipped", "full")
    assert reasons(first["decision"])[a2] == ("chosen", None)
    assert reasons(fallback["decision"])[a2] == ("skipped", "tried")
    assert reasons(fallback["decision"])[a3] == ("chosen", None)
    assert fallback["decision"]["chosen_agent_id"] == a3

    (routed,) = await timeline(api, t, s_c, 1)
    d = routed["decision"]
    assert d["rule_id"] == t.rule_id
    assert isinstance(d["snapshot_version"], int)
    assert d["traced"] is True
    assert reasons(d) == {
        a1: ("skipped", "full"),
        a2: ("skipped", "ejected"),
        a3: ("chosen", None),
        a4: ("skipped", "disabled"),
    }
    assert d["rules_skipped"] == [{"rule_id": scheduled_id, "reason": "outside_schedule"}]
    assert d["chosen_agent_id"] == a3
    assert d["split_branch"] is None

    # the engine counted the reasons (its counters are flushed before every /metrics answer)
    after = (await engine.get("/metrics")).text

    def count(text: str, metric: str, reason: str) -> float:
        m = re.search(rf'^{metric}{{reason="{reason}"}} ([0-9.e+]+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    skipped = "vlb_engine_candidates_skipped_total"
    assert count(after, skipped, "full") - count(before, skipped, "full") >= 3  # B, B's fallback, C
    assert count(after, skipped, "ejected") - count(before, skipped, "ejected") >= 1
    assert count(after, skipped, "tried") - count(before, skipped, "tried") >= 1
    assert count(after, skipped, "disabled") - count(before, skipped, "disabled") >= 4
    rules = "vlb_engine_rules_skipped_total"
    assert count(after, rules, "outside_schedule") - count(before, rules, "outside_schedule") >= 3

    # tenant isolation: another tenant cannot read the call or its decisions
    other = await routable_tenant(api, engine, "Nosy")
    r = await api.get(f"/api/calls/{s_c}", headers={"Authorization": f"Bearer {other.token}"})
    assert r.status_code == 404
