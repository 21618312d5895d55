"""Webhook audit API: every webhook an engine reported (refused ones too), newest first, filtered by
kind and session, bodies as the engine masked them; 422s; other tenants see nothing."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.enums import EventKind
from shared.events import CallEvent
from tests.control_plane.conftest import Account
from tests.control_plane.test_calls import answered, db, store

__all__ = ["db"]


async def test_audit_lists_every_webhook(account: Account, other_account: Account, db: AsyncEngine) -> None:
    t = account.tenant_id
    token = uuid.uuid4().hex
    await store(db, answered(t, token, time.time() - 300, 40))
    refused = CallEvent(
        event_id=f"{t}:-:rejected:session_update:{uuid.uuid4().hex[:16]}",
        kind=EventKind.REJECTED,
        tenant_id=t,
        domain="acme.cloudonix.net",
        session_token="",
        occurred_at=time.time(),
        engine_id="engine-b",
        outcome="bad_input",
        payload={"reason": "missing session token", "status": 400, "body": {"password": "***"}},
    )
    await store(db, [refused])

    everything = (await account.get("/api/webhook-audit", params={"per_page": 100})).json()
    assert everything["meta"]["total"] == 12
    newest = everything["data"][0]
    assert newest["event_type"] == "rejected"
    assert newest["outcome"] == "bad_input"
    assert newest["session_token"] is None
    assert newest["engine_id"] == "engine-b"
    assert newest["body"]["body"] == {"password": "***"}
    received = [row["received_at"] for row in everything["data"]]
    assert received == sorted(received, reverse=True)

    routed = (await account.get("/api/webhook-audit", params={"event_type": "routed"})).json()["data"]
    assert len(routed) == 1
    assert routed[0]["latency_us"] == 180
    assert routed[0]["domain"] == "acme.cloudonix.net"
    assert routed[0]["session_token"] == token
    by_session = (await account.get("/api/webhook-audit", params={"session_token": token})).json()
    assert by_session["meta"]["total"] == 11
    updates = await account.get("/api/webhook-audit", params={"event_type": "session_update", "per_page": 3})
    assert updates.json()["meta"]["total"] == 8
    assert len(updates.json()["data"]) == 3

    other = (await other_account.get("/api/webhook-audit")).json()
    assert other["data"] == []
    assert (await other_account.get("/api/webhook-audit", params={"session_token": token})).json()[
        "data"
    ] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [({"event_type": "voice"}, "event_type"), ({"per_page": 500}, "per_page"), ({"page": -1}, "page")],
)
async def test_bad_audit_filters_are_422(account: Account, params: dict[str, Any], field: str) -> None:
    response = await account.get("/api/webhook-audit", params=params)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]
