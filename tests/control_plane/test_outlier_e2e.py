"""Outlier ejection end to end: config through the API (granian control plane), calls through a real
engine (granian), the shared NATS, Redis and PostgreSQL. An agent whose dial fails is ejected; the
live feed shows ``agent.ejected`` to its tenant only, the call's timeline holds the ejection, the group
stats show who is out; an admin lift sends ``agent.lifted`` and the agent is chosen again."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest

from tests.control_plane.live_harness import (
    INBOUND,
    open_live,
    routable_tenant,
    served_fixtures,
    webhook,
)

pytestmark = pytest.mark.slow

AGENT = re.compile(r"agent=(\d+)")


plane, engine_url, api, engine = served_fixtures({"VLB_LIVE_STATS_INTERVAL_S": "0.5"})


async def test_ejection_reaches_feed_timeline_stats_and_is_lifted(
    api: httpx.AsyncClient, engine: httpx.AsyncClient
) -> None:
    t = await routable_tenant(api, engine, "Outlier")
    other = await routable_tenant(api, engine, "Bystander")
    auth = {"Authorization": f"Bearer {t.token}"}
    r = await api.put(
        f"/api/agent-groups/{t.group_id}",
        json={
            "strategy": "priority",
            "settings": {"outlier": {"consecutive_failures": 1, "base_ejection_s": 300}},
        },
        headers=auth,
    )
    assert r.status_code == 200, r.text
    feed = await open_live(str(api.base_url).rstrip("/"), t.token)
    other_feed = await open_live(str(api.base_url).rstrip("/"), other.token)
    first = min(t.agent_ids)
    try:
        # until the engine runs the new snapshot, a failed dial ejects nobody: try until one does
        session = ""
        for _ in range(100):
            session = uuid.uuid4().hex
            answer = await webhook(engine, t, "application", dict(INBOUND, Session=session, CallSid=session))
            m = AGENT.search(answer.text)
            assert m is not None, answer.text
            agent = int(m.group(1))
            failed = await engine.post(
                f"/api/voice/application/{t.domain}/dial-status?attempt=1&agent={agent}",
                json=dict(INBOUND, Session=session, CallSid=session, DialCallStatus="busy"),
                headers={"Authorization": f"Bearer {t.key}"},
            )
            assert failed.status_code == 200
            stats = (await api.get(f"/api/agent-groups/{t.group_id}/stats", headers=auth)).json()
            if stats["ejected"]:
                break
        else:
            raise AssertionError("no ejection")
        assert [e["agent_id"] for e in stats["ejected"]] == [agent]
        assert stats["ejected"][0]["reason"] == "consecutive:busy"
        assert stats["ejected"][0]["session_token"] == session

        frame = await feed.wait_for(lambda b: b["type"] == "agent.ejected")
        assert frame.body["agent_id"] == agent
        assert frame.body["group_id"] == t.group_id
        assert frame.body["session_token"] == session
        assert frame.body["until"] is not None

        # the call's timeline holds the ejection (the consumer writes it a moment later)
        for _ in range(100):
            call = await api.get(f"/api/calls/{session}", headers=auth)
            kinds = [e["kind"] for e in call.json().get("timeline", [])] if call.status_code == 200 else []
            if "outlier" in kinds:
                break
            await asyncio.sleep(0.1)
        ejection = next(e for e in call.json()["timeline"] if e["kind"] == "outlier")
        assert (ejection["outcome"], ejection["status"], ejection["agent_id"]) == (
            "ejected",
            "consecutive:busy",
            agent,
        )

        # the ejected agent is not chosen while out
        if agent == first:
            s = uuid.uuid4().hex
            answer = await webhook(engine, t, "application", dict(INBOUND, Session=s, CallSid=s))
            assert f"agent={agent}" not in answer.text

        # lift: the agent is back at once
        lifted = await api.delete(f"/api/agent-groups/{t.group_id}/ejections/{agent}", headers=auth)
        assert lifted.status_code == 204, lifted.text
        frame = await feed.wait_for(lambda b: b["type"] == "agent.lifted")
        assert frame.body["agent_id"] == agent
        stats = (await api.get(f"/api/agent-groups/{t.group_id}/stats", headers=auth)).json()
        assert stats["ejected"] == []
        # another tenant sees none of it, and cannot lift it
        assert not other_feed.of_type("agent.ejected", "agent.lifted", "agent.returned")
        other_auth = {"Authorization": f"Bearer {other.token}"}
        r = await api.delete(f"/api/agent-groups/{t.group_id}/ejections/{agent}", headers=other_auth)
        assert r.status_code == 404
    finally:
        await feed.stop()
        await other_feed.stop()
