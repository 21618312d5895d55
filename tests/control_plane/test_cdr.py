"""CDR API: list with filters echoed in filters_applied, partial matches, dispositions normalised,
422s for bad filters, one CDR with its masked body, other tenants see nothing."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.control_plane.conftest import Account
from tests.control_plane.test_calls import answered, db, store

__all__ = ["db"]


@pytest.fixture
async def cdrs(account: Account, db: AsyncEngine) -> dict[str, str]:
    now = time.time()
    t = account.tenant_id
    tokens = {name: uuid.uuid4().hex for name in ("answered", "busy", "noanswer", "old")}
    await store(db, answered(t, tokens["answered"], now - 900, 60))
    await store(db, answered(t, tokens["busy"], now - 800, 0, disposition="BUSY"))
    await store(db, answered(t, tokens["noanswer"], now - 700, 0, disposition="NO ANSWER"))
    await store(db, answered(t, tokens["old"], now - 5 * 86400, 30))
    return tokens


async def test_cdr_list_and_filters(account: Account, cdrs: dict[str, str]) -> None:
    async def listed(**params: Any) -> tuple[list[str], dict[str, Any]]:
        response = await account.get("/api/cdr", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        return [c["session_token"] for c in body["data"]], body

    tokens, body = await listed()
    assert tokens == [cdrs["noanswer"], cdrs["busy"], cdrs["answered"], cdrs["old"]]
    assert body["meta"]["per_page"] == 50
    assert body["meta"]["total"] == 4
    assert body["filters_applied"] == {}
    first = body["data"][0]
    assert set(first) == {
        "id",
        "call_id",
        "session_token",
        "from_number",
        "to_number",
        "direction",
        "disposition",
        "start_time",
        "answer_time",
        "end_time",
        "duration_seconds",
        "billsec",
        "domain",
        "created_at",
    }
    assert first["disposition"] == "NOANSWER"

    tokens, body = await listed(disposition="answer")
    assert tokens == [cdrs["answered"], cdrs["old"]]
    assert body["filters_applied"] == {"disposition": "ANSWER"}
    tokens, _ = await listed(disposition="NO ANSWER")
    assert tokens == [cdrs["noanswer"]]
    tokens, body = await listed(token=cdrs["busy"][4:12])
    assert tokens == [cdrs["busy"]]
    assert body["filters_applied"] == {"token": cdrs["busy"][4:12]}
    tokens, body = await listed(**{"from": "4155550", "to": "555123"})
    assert len(tokens) == 4
    assert body["filters_applied"] == {"from": "4155550", "to": "555123"}
    tokens, _ = await listed(**{"from": "999999"})
    assert tokens == []
    today = time.strftime("%Y-%m-%d", time.gmtime())
    old_day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 5 * 86400))
    tokens, body = await listed(start_date=old_day, end_date=old_day)
    assert tokens == [cdrs["old"]]
    assert body["filters_applied"] == {"start_date": old_day, "end_date": old_day}
    tokens, _ = await listed(start_date=today, disposition="BUSY")
    assert tokens == [cdrs["busy"]]
    _, body = await listed(per_page=2, page=2)
    assert body["meta"] == {"current_page": 2, "per_page": 2, "total": 4, "last_page": 2, "from": 3, "to": 4}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"disposition": "MAYBE"}, "disposition"),
        ({"per_page": 201}, "per_page"),
        ({"page": 0}, "page"),
        ({"start_date": "2024-01-18", "end_date": "2024-01-01"}, "end_date"),
        ({"start_date": "18/01/2024"}, "start_date"),
    ],
)
async def test_bad_cdr_filters_are_422(account: Account, params: dict[str, Any], field: str) -> None:
    response = await account.get("/api/cdr", params=params)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_one_cdr_and_isolation(account: Account, other_account: Account, cdrs: dict[str, str]) -> None:
    listed = (await account.get("/api/cdr", params={"token": cdrs["answered"]})).json()["data"][0]
    one = await account.get(f"/api/cdr/{listed['id']}")
    assert one.status_code == 200
    body = one.json()
    assert body["payload"] == {"disposition": "ANSWERED", "apikey": "***"}
    assert body["duration_seconds"] == 65
    assert body["billsec"] == 60
    assert {k: v for k, v in body.items() if k != "payload"} == listed

    stolen = await other_account.get(f"/api/cdr/{listed['id']}")
    assert stolen.status_code == 404
    assert cdrs["answered"] not in stolen.text
    assert (await other_account.get("/api/cdr")).json()["data"] == []
    assert (await other_account.get("/api/cdr", params={"token": cdrs["answered"]})).json()["data"] == []
    assert (await account.get("/api/cdr/999999999")).status_code == 404
