"""Calls API: live calls, today's statistics, one call's timeline, call-record lists with their filters
and 422s, the summary and filter options; other tenants see nothing; viewers can read."""

from __future__ import annotations

import datetime
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from control_plane.analytics import aggregates
from control_plane.events.writer import write_events
from control_plane.settings import ControlPlaneSettings
from shared.enums import EventKind
from shared.events import CallEvent
from tests.control_plane.conftest import Account
from tests.control_plane.test_consumer import full_call


@pytest.fixture(scope="module")
async def db(cp_settings: ControlPlaneSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(cp_settings.database_url, pool_size=2)
    yield engine
    await engine.dispose()


async def store(db: AsyncEngine, events: list[CallEvent]) -> None:
    """Write events as the consumer does (the consumer itself is tested in test_consumer.py)."""
    async with db.begin() as conn, AsyncSession(bind=conn) as session:
        await write_events(session, events)
        # The list totals and summaries read call_stats; until the consumer keeps them itself (its own
        # branch), recompute them as a restore would.
        for tenant_id in {e.tenant_id for e in events}:
            await aggregates.rebuild(session, tenant_id)


def live_call(tenant_id: int, token: str, started: float, agent_id: int = 11) -> list[CallEvent]:
    base: dict[str, Any] = {"tenant_id": tenant_id, "domain": "acme.cloudonix.net", "session_token": token}
    return [
        CallEvent(
            event_id=f"{tenant_id}:{token}:app",
            kind=EventKind.ROUTED,
            occurred_at=started,
            direction="inbound",
            from_number="+14155550199",
            to_number="+15550000000",
            agent_id=agent_id,
            group_id=22,
            attempt=1,
            outcome="routed",
            **base,
        ),
        CallEvent(
            event_id=f"{tenant_id}:{token}:su:ringing",
            kind=EventKind.SESSION_UPDATE,
            occurred_at=started + 1,
            status="ringing",
            **base,
        ),
    ]


def answered(tenant_id: int, token: str, start_s: float, talk_s: int, **kw: Any) -> list[CallEvent]:
    start_ms = int(start_s * 1000)
    return full_call(
        tenant_id,
        token,
        start_ms=start_ms,
        answer_ms=start_ms + 5000,
        end_ms=start_ms + 5000 + talk_s * 1000,
        **kw,
    )


@pytest.fixture
async def calls(account: Account, db: AsyncEngine) -> dict[str, str]:
    """A live call, two answered ones today (agents 11 and 12), a busy one three days ago."""
    now = time.time()
    t = account.tenant_id
    tokens = {name: uuid.uuid4().hex for name in ("live", "short", "long", "old")}
    await store(db, live_call(t, tokens["live"], now - 30))
    await store(db, answered(t, tokens["short"], now - 600, 20))
    await store(db, answered(t, tokens["long"], now - 500, 300, agent_id=12))
    await store(
        db, answered(t, tokens["old"], now - 3 * 86400, 10, disposition="BUSY")[:1] + _busy(t, tokens["old"])
    )
    return tokens


def _busy(tenant_id: int, token: str) -> list[CallEvent]:
    return [
        CallEvent(
            event_id=f"{tenant_id}:{token}:su:busy",
            kind=EventKind.SESSION_UPDATE,
            tenant_id=tenant_id,
            domain="acme.cloudonix.net",
            session_token=token,
            occurred_at=time.time() - 3 * 86400 + 20,
            status="busy",
        )
    ]


async def test_active_calls_and_statistics(account: Account, calls: dict[str, str]) -> None:
    active = (await account.get("/api/calls/active")).json()["data"]
    assert [c["session_token"] for c in active] == [calls["live"]]
    live = active[0]
    assert live["from"] == "+14155550199"
    assert live["to"] == "+15550000000"
    assert live["status"] == "connecting"
    assert live["agent_id"] == 11
    assert live["group_id"] == 22
    assert live["direction"] == "inbound"
    assert 25 <= live["duration_seconds"] <= 120
    assert live["started_at"].endswith("Z")

    # The fixture's calls started 30 s (live), 500 and 600 s (answered) ago: just after midnight UTC
    # (the tenant's zone) the answered ones are yesterday's.
    now = time.time()
    today = time.gmtime(now)[:3]
    completed = sum(time.gmtime(now - ago)[:3] == today for ago in (500, 600))
    live_today = int(time.gmtime(now - 30)[:3] == today)
    stats = (await account.get("/api/calls/statistics")).json()
    assert stats == {"active_calls": 1, "completed_today": completed, "total_today": completed + live_today}


async def test_statistics_count_days_in_the_tenants_time_zone(account: Account, db: AsyncEngine) -> None:
    """A call three hours ago is today where midnight was more than three hours ago, else yesterday."""
    now = time.time()
    started = now - 3 * 3600
    await store(db, answered(account.tenant_id, uuid.uuid4().hex, started, 30))

    def same_day(zone: str) -> bool:
        tz = ZoneInfo(zone)
        local = datetime.datetime.fromtimestamp
        return local(started, tz).date() == local(now, tz).date()

    zones = [f"Etc/GMT{sign}{h}" for h in range(1, 13) for sign in ("+", "-")] + ["Etc/GMT-13", "Etc/GMT-14"]
    today_zone = next(z for z in zones if same_day(z))
    yesterday_zone = next(z for z in zones if not same_day(z))
    for zone, expected in ((today_zone, 1), (yesterday_zone, 0)):
        response = await account.put("/api/settings", json={"settings": {"timezone": zone}})
        assert response.status_code == 200, response.text
        stats = (await account.get("/api/calls/statistics")).json()
        assert stats["total_today"] == expected, zone
        assert stats["completed_today"] == expected, zone


async def test_one_call_with_its_timeline(account: Account, calls: dict[str, str]) -> None:
    body = (await account.get(f"/api/calls/{calls['long']}")).json()
    assert body["status"] == "completed"
    assert body["agent_id"] == 12
    assert body["duration"] == 305
    assert body["billsec"] == 300
    assert len(body["timeline"]) == 11
    assert body["timeline"][0]["source"] == "engine-a"
    assert body["routing_attempts"][0]["agent_id"] == 12
    assert (await account.get(f"/api/calls/{uuid.uuid4().hex}")).status_code == 404


@pytest.mark.parametrize("url", ["/api/analytics/call-records", "/api/call-records"])
async def test_call_record_filters(account: Account, calls: dict[str, str], url: str) -> None:
    async def tokens(**params: Any) -> list[str]:
        response = await account.get(url, params=params)
        assert response.status_code == 200, response.text
        return [r["session_token"] for r in response.json()["data"]]

    everything = await tokens()
    assert everything == [calls["live"], calls["long"], calls["short"], calls["old"]]  # newest first
    assert await tokens(agent_id=12) == [calls["long"]]
    assert await tokens(status="busy") == [calls["old"]]
    assert await tokens(status="COMPLETED", sort="duration") == [calls["short"], calls["long"]]
    assert await tokens(min_duration=100) == [calls["long"]]
    assert await tokens(max_duration=30, status="completed") == [calls["short"]]
    assert await tokens(**{"from": "555010"}) == [calls["long"], calls["short"], calls["old"]]
    assert await tokens(to="0000000") == [calls["live"]]
    assert await tokens(direction="inbound", group_id=22, per_page=1) == [calls["live"]]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert calls["old"] not in await tokens(start_date=today)
    assert await tokens(end_date=time.strftime("%Y-%m-%d", time.gmtime(time.time() - 2 * 86400))) == [
        calls["old"]
    ]
    page = (await account.get(url, params={"per_page": 2, "page": 2})).json()
    assert page["meta"] == {"current_page": 2, "per_page": 2, "total": 4, "last_page": 2, "from": 3, "to": 4}
    record = page["data"][0]
    for key in ("id", "session_token", "direction", "from_number", "to_number", "agent_id", "group_id"):
        assert key in record
    for key in ("status", "start_time", "end_time", "duration", "created_at", "disposition", "attempts"):
        assert key in record


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "bogus"}, "status"),
        ({"direction": "sideways"}, "direction"),
        ({"per_page": 201}, "per_page"),
        ({"per_page": 0}, "per_page"),
        ({"page": 0}, "page"),
        ({"start_date": "2024-02-10", "end_date": "2024-02-01"}, "end_date"),
        ({"start_date": "yesterday"}, "start_date"),
        ({"end_date": "2024-13-01"}, "end_date"),
        ({"min_duration": 60, "max_duration": 10}, "max_duration"),
        ({"sort": "password"}, "sort"),
        # Bounded at the edge (control_plane/params.py): nothing a bigint, an integer or text cannot hold.
        ({"agent_id": str(2**63)}, "agent_id"),
        ({"group_id": "0"}, "group_id"),
        ({"min_duration": "-1"}, "min_duration"),
        ({"max_duration": str(2**31)}, "max_duration"),
        ({"status": "a\x00b"}, "status"),
        ({"to": "1" * 257}, "to"),
        # Litestar's validation names the handler's parameter, not the query's name (``from``).
        ({"from": "\x00"}, "from_number"),
        ({"page": str(2**63)}, "page"),
    ],
)
async def test_bad_call_record_filters_are_422(account: Account, params: dict[str, Any], field: str) -> None:
    for url in ("/api/analytics/call-records", "/api/call-records"):
        response = await account.get(url, params=params)
        assert response.status_code == 422, response.text
        assert field in [e["field"] for e in response.json()["errors"]]


async def test_record_by_id_summary_and_options(account: Account, calls: dict[str, str]) -> None:
    listed = (await account.get("/api/call-records", params={"status": "busy"})).json()["data"][0]
    one = await account.get(f"/api/call-records/{listed['id']}")
    assert one.status_code == 200
    assert one.json() == listed

    summary = (await account.get("/api/call-records/statistics/summary")).json()
    assert summary["total"] == 4
    assert summary["by_status"] == {"connecting": 1, "completed": 2, "busy": 1}
    assert summary["answered"] == 2
    assert summary["success_rate"] == round(2 / 3, 4)
    assert summary["by_direction"] == {"inbound": 4}
    assert summary["avg_duration"] == (25 + 305) / 2
    filtered = (await account.get("/api/call-records/statistics/summary", params={"agent_id": 12})).json()
    assert filtered["total"] == 1
    bad = await account.get("/api/call-records/statistics/summary", params={"status": "nope"})
    assert bad.status_code == 422

    agent = (
        await account.post(
            "/api/voice-agents",
            json={"name": "Sales bot", "provider": "vapi", "service_value": "+14155550111"},
        )
    ).json()
    options = (await account.get("/api/call-records/filters/options")).json()
    assert "no_answer" in options["statuses"]
    assert "NOANSWER" in options["dispositions"]
    assert "inbound" in options["directions"]
    assert {"id": agent["id"], "name": "Sales bot"} in options["agents"]


async def test_other_tenants_see_nothing(
    account: Account, other_account: Account, calls: dict[str, str]
) -> None:
    record_id = (await account.get("/api/call-records")).json()["data"][0]["id"]
    for url in (f"/api/calls/{calls['long']}", f"/api/call-records/{record_id}"):
        response = await other_account.get(url)
        assert response.status_code == 404
        assert calls["long"] not in response.text
    for url in ("/api/calls/active", "/api/call-records", "/api/analytics/call-records"):
        body = (await other_account.get(url)).json()
        assert body["data"] == []
    assert (await other_account.get("/api/calls/statistics")).json() == {
        "active_calls": 0,
        "completed_today": 0,
        "total_today": 0,
    }
    assert (await other_account.get("/api/call-records/statistics/summary")).json()["total"] == 0


async def test_viewers_can_read(account: Account, calls: dict[str, str]) -> None:
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    created = await account.post(
        "/api/users", json={"name": "Viewer", "email": email, "password": "viewer password", "role": "viewer"}
    )
    assert created.status_code == 201, created.text
    login = await account.client.post("/api/login", json={"email": email, "password": "viewer password"})
    headers = {"Authorization": f"Bearer {login.json()['token']}"}
    for url in (
        "/api/calls/active",
        "/api/calls/statistics",
        f"/api/calls/{calls['short']}",
        "/api/call-records",
        "/api/cdr",
        "/api/webhook-audit",
    ):
        response = await account.client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.text)
    # Nothing here writes; a viewer's write elsewhere is still refused.
    refused = await account.client.post("/api/voice-agents", json={}, headers=headers)
    assert refused.status_code == 403


async def test_a_retried_call_keeps_every_attempt(account: Account, db: AsyncEngine) -> None:
    """Agent 11 does not answer, the engine dials agent 12, who takes the call."""
    t, token, now = account.tenant_id, uuid.uuid4().hex, time.time() - 60
    base: dict[str, Any] = {"tenant_id": t, "domain": "acme.cloudonix.net", "session_token": token}
    routed = live_call(t, token, now)[0]
    retry = CallEvent(
        event_id=f"{t}:{token}:dial-1",
        kind=EventKind.DIAL_STATUS,
        occurred_at=now + 20,
        status="no-answer",
        outcome="routed",
        agent_id=12,
        group_id=22,
        attempt=2,
        **base,
    )
    done = CallEvent(
        event_id=f"{t}:{token}:dial-2",
        kind=EventKind.DIAL_STATUS,
        occurred_at=now + 50,
        status="completed",
        outcome="ended",
        agent_id=12,
        attempt=2,
        **base,
    )
    await store(db, [done, retry])  # out of order, and in two batches
    await store(db, [routed])
    body = (await account.get(f"/api/calls/{token}")).json()
    assert body["status"] == "completed"
    assert body["agent_id"] == 12
    assert body["attempts"] == 2
    assert [
        (a["attempt"], a["agent_id"], a["outcome"], a["dial_status"]) for a in body["routing_attempts"]
    ] == [
        (1, 11, "routed", "no-answer"),
        (2, 12, "routed", "completed"),
    ]


@pytest.mark.parametrize(
    ("url", "field"),
    [
        (f"/api/call-records/{2**63}", "record_id"),
        ("/api/call-records/0", "record_id"),
        ("/api/calls/" + "a" * 129, "session_token"),
        ("/api/calls/bad%20token", "session_token"),
        (f"/api/exports/{2**63}/status", "export_id"),
        (f"/api/exports/{2**63}/download", "export_id"),
        ("/api/exports/call-records?format=" + "x" * 257, "format"),
        ("/api/exports/cdr?fields=%00", "fields"),
        ("/api/exports/cdr?token=%00", "token"),
    ],
)
async def test_ids_and_texts_beyond_their_bounds_are_422(account: Account, url: str, field: str) -> None:
    response = await account.get(url)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in response.json()["errors"]]


def _calling_from(events: list[CallEvent], number: str) -> list[CallEvent]:
    return [msgspec.structs.replace(e, from_number=number) if e.from_number else e for e in events]


async def test_long_number_searches_match_the_whole_search_and_only_the_tenants_records(
    account: Account, other_account: Account, db: AsyncEngine
) -> None:
    """A search of NUMBER_TAIL characters or more is looked up by its tail first (service
    ._number_candidates): a number sharing only the tail is not a match, another tenant's record with
    the same number never appears, and the totals agree with the rows."""
    now = time.time()
    t, o = account.tenant_id, other_account.tenant_id
    mine, near, theirs = (uuid.uuid4().hex for _ in range(3))
    await store(db, _calling_from(answered(t, mine, now - 100, 10), "+14155550123"))
    await store(db, _calling_from(answered(t, near, now - 90, 10), "+19995550123"))
    await store(db, _calling_from(answered(o, theirs, now - 80, 10), "+14155550123"))

    async def found(who: Account, url: str, part: str) -> tuple[list[str], int]:
        response = await who.get(url, params={"from": part})
        assert response.status_code == 200, response.text
        body = response.json()
        return [r["session_token"] for r in body["data"]], body["meta"]["total"]

    for url in ("/api/call-records", "/api/analytics/call-records"):
        assert await found(account, url, "+14155550123") == ([mine], 1)
        assert await found(account, url, "4155550123") == ([mine], 1)
        assert await found(account, url, "5550123") == ([near, mine], 2)
        assert await found(account, url, "+1999555012") == ([near], 1)
        assert await found(account, url, "+14155550124") == ([], 0)
        assert await found(other_account, url, "+14155550123") == ([theirs], 1)
    summary = (
        await account.get("/api/call-records/statistics/summary", params={"from": "+14155550123"})
    ).json()
    assert summary["total"] == 1
    exported = await account.get(
        "/api/exports/call-records", params={"from": "+14155550123", "format": "ndjson"}
    )
    assert exported.status_code == 200, exported.text
    assert [json.loads(line)["session_token"] for line in exported.text.splitlines()] == [mine]


async def test_a_long_number_search_pages_with_its_total(account: Account, db: AsyncEngine) -> None:
    """Page and total of a long search come from one statement; a page past the end still says the
    total."""
    now = time.time()
    tokens = [uuid.uuid4().hex for _ in range(5)]
    for i, token in enumerate(tokens):
        await store(db, _calling_from(answered(account.tenant_id, token, now - 100 + i, 10), "+14155550777"))
    newest_first = tokens[::-1]
    for page, expected in ((1, newest_first[:2]), (2, newest_first[2:4]), (3, newest_first[4:]), (4, [])):
        body = (
            await account.get("/api/call-records", params={"from": "4155550777", "per_page": 2, "page": page})
        ).json()
        assert [r["session_token"] for r in body["data"]] == expected, page
        assert body["meta"]["total"] == 5, page
        assert body["meta"]["last_page"] == 3
