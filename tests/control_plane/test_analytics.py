"""Analytics API: every figure checked against answers this test computes itself from the calls it
seeded (Python over the records, not the SQL the service runs), in whole-hour, DST-changing and
half-hour time zones; empty ranges; the 422s; viewers; active calls from real Redis zsets; and the
record-list totals and summaries that now come from call_stats."""

from __future__ import annotations

import datetime
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from control_plane.analytics import aggregates
from control_plane.db.models import CallRecord
from control_plane.settings import ControlPlaneSettings
from shared.enums import TERMINAL_STATUSES
from shared.redis_keys import TenantKeys
from tests.control_plane.conftest import Account

UTC = datetime.UTC
STATUSES = ["completed"] * 6 + ["busy", "failed", "no_answer", "canceled", "connected"]
DIRECTIONS = ["inbound", "inbound", "outbound", "outbound-api", None]


@dataclass
class Call:
    start: datetime.datetime
    status: str
    duration: int | None
    billsec: int | None
    agent_id: int | None
    group_id: int | None
    direction: str | None


@pytest.fixture(scope="module")
async def db(cp_settings: ControlPlaneSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(cp_settings.database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def redis(cp_settings: ControlPlaneSettings) -> AsyncIterator[Redis]:
    client = Redis.from_url(cp_settings.redis_url)
    yield client
    await client.aclose()


async def seed(db: AsyncEngine, tenant_id: int, calls: Iterable[Call]) -> None:
    """Records as the consumer would leave them, then call_stats rebuilt from them (the consumer keeps
    the same rows incrementally; its own tests hold the two together)."""
    async with db.begin() as conn, AsyncSession(bind=conn) as session:
        for c in calls:
            session.add(
                CallRecord(
                    tenant_id=tenant_id,
                    session_token=uuid.uuid4().hex,
                    direction=c.direction,
                    from_number="+14155550100",
                    to_number="+12125550100",
                    agent_id=c.agent_id,
                    group_id=c.group_id,
                    status=c.status,
                    attempts=1,
                    start_time=c.start,
                    duration=c.duration,
                    billsec=c.billsec,
                    created_at=c.start,
                    updated_at=c.start,
                )
            )
        await session.flush()
        await aggregates.rebuild(session, tenant_id)


def random_calls(
    rng: random.Random,
    n: int,
    since: datetime.datetime,
    until: datetime.datetime,
    agents: list[int],
    groups: list[int],
) -> list[Call]:
    span = (until - since).total_seconds()
    out = []
    for _ in range(n):
        status = rng.choice(STATUSES)
        duration = rng.randint(5, 900) if status in ("completed", "canceled", "busy") else None
        index = rng.randrange(len(agents) + 1)
        out.append(
            Call(
                start=since + datetime.timedelta(seconds=rng.uniform(0, span)),
                status=status,
                duration=duration,
                billsec=max(0, duration - 4) if status == "completed" and duration else None,
                agent_id=agents[index] if index < len(agents) else None,
                group_id=groups[index % len(groups)] if index < len(agents) else None,
                direction=rng.choice(DIRECTIONS),
            )
        )
    return out


# --- the answers, computed here ---------------------------------------------------------------


@dataclass
class Expected:
    calls: int = 0
    answered: int = 0
    finished: int = 0
    answered_durations: int = 0
    answered_with_duration: int = 0
    talk: int = 0

    def add(self, c: Call) -> None:
        self.calls += 1
        if c.status in {s.value for s in TERMINAL_STATUSES}:
            self.finished += 1
        if c.status == "completed":
            self.answered += 1
            self.talk += c.billsec or 0
            if c.duration is not None:
                self.answered_durations += c.duration
                self.answered_with_duration += 1

    @property
    def success_rate(self) -> float:
        return round(self.answered / self.finished, 4) if self.finished else 0.0

    @property
    def avg_duration(self) -> float:
        n = self.answered_with_duration
        return round(self.answered_durations / n, 1) if n else 0.0


def expected_by_day(calls: list[Call], zone: ZoneInfo, first: datetime.date, last: datetime.date) -> dict:
    days: dict[datetime.date, Expected] = defaultdict(Expected)
    for c in calls:
        day = c.start.astimezone(zone).date()
        if first <= day <= last:
            days[day].add(c)
    return days


def total(calls: Iterable[Call]) -> Expected:
    e = Expected()
    for c in calls:
        e.add(c)
    return e


async def make_agents(account: Account, n: int) -> list[int]:
    ids = []
    for i in range(n):
        response = await account.post(
            "/api/voice-agents",
            json={"name": f"Agent {i}", "provider": "vapi", "service_value": f"+1415555{1000 + i}"},
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


async def make_group(account: Account, name: str, members: list[tuple[int, int]]) -> int:
    response = await account.post("/api/agent-groups", json={"name": name, "strategy": "round_robin"})
    assert response.status_code == 201, response.text
    group_id = int(response.json()["id"])
    for agent_id, capacity in members:
        added = await account.post(
            f"/api/agent-groups/{group_id}/members", json={"agent_id": agent_id, "capacity": capacity}
        )
        assert added.status_code == 201, added.text
    return group_id


async def set_zone(account: Account, zone: str) -> None:
    response = await account.put("/api/settings", json={"settings": {"timezone": zone}})
    assert response.status_code == 200, response.text


# --- tests ------------------------------------------------------------------------------------


def check_days(body: dict[str, Any], calls: list[Call], zone: ZoneInfo, first: str, last: str) -> None:
    first_day, last_day = datetime.date.fromisoformat(first), datetime.date.fromisoformat(last)
    expected = expected_by_day(calls, zone, first_day, last_day)
    dates = [p["date"] for p in body["trends"]]
    assert dates == [
        str(first_day + datetime.timedelta(days=i)) for i in range((last_day - first_day).days + 1)
    ]
    for point in body["trends"]:
        e = expected.get(datetime.date.fromisoformat(point["date"]), Expected())
        got = (
            point["calls"],
            point["answered"],
            point["finished"],
            point["success_rate"],
            point["avg_duration"],
        )
        assert got == (e.calls, e.answered, e.finished, e.success_rate, e.avg_duration), (zone, point)
    whole = total(c for c in calls if first_day <= c.start.astimezone(zone).date() <= last_day)
    assert body["total_calls"] == whole.calls
    assert body["answered"] == whole.answered
    assert body["success_rate"] == whole.success_rate
    assert body["avg_duration"] == whole.avg_duration


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "UTC"])
async def test_metrics_per_tenant_day_match_the_records(account: Account, db: AsyncEngine, zone: str) -> None:
    """A week around the end of US daylight time (1 Nov 2026: a 25-hour day in New York), with calls
    on both sides of each local midnight; in half- and quarter-hour zones every day boundary splits a
    UTC hour, which the service corrects from the records of that hour."""
    tz = ZoneInfo(zone)
    agents = await make_agents(account, 3)
    group = await make_group(account, "Sales", [(a, 2) for a in agents])
    await set_zone(account, zone)
    rng = random.Random(zone)
    since = datetime.datetime(2026, 10, 28, tzinfo=UTC)
    until = datetime.datetime(2026, 11, 5, tzinfo=UTC)
    calls = random_calls(rng, 600, since, until, agents, [group])
    # A call a second either side of each local midnight of the range.
    day = datetime.date(2026, 10, 29)
    while day <= datetime.date(2026, 11, 4):
        midnight = datetime.datetime.combine(day, datetime.time(), tz).astimezone(UTC)
        for offset in (-1, 0, 1):
            calls.append(
                Call(
                    midnight + datetime.timedelta(seconds=offset),
                    "completed",
                    60,
                    55,
                    agents[0],
                    group,
                    "inbound",
                )
            )
        day += datetime.timedelta(days=1)
    await seed(db, account.tenant_id, calls)

    body = (
        await account.get(
            "/api/analytics/metrics", params={"start_date": "2026-10-29", "end_date": "2026-11-04"}
        )
    ).json()
    check_days(body, calls, tz, "2026-10-29", "2026-11-04")
    assert body["window"]["timezone"] == zone
    assert body["calls_today"] == 0
    assert body["active_calls"] == 0

    mine = [c for c in calls if c.agent_id == agents[0]]
    by_agent = (
        await account.get(
            "/api/analytics/metrics",
            params={"start_date": "2026-10-29", "end_date": "2026-11-04", "agent_id": agents[0]},
        )
    ).json()
    check_days(by_agent, mine, tz, "2026-10-29", "2026-11-04")

    # The same days as trends; hour buckets add up to the same totals.
    trends = (
        await account.get(
            "/api/analytics/trends", params={"start_date": "2026-10-29", "end_date": "2026-11-04"}
        )
    ).json()
    assert [(p["date"], p["calls"]) for p in trends["data"]] == [
        (p["date"], p["calls"]) for p in body["trends"]
    ]
    hours = (
        await account.get(
            "/api/analytics/trends",
            params={"interval": "hour", "start_date": "2026-10-29", "end_date": "2026-11-04"},
        )
    ).json()
    assert sum(p["calls"] for p in hours["data"]) == body["total_calls"]
    assert sum(p["answered"] for p in hours["data"]) == body["answered"]
    expected_buckets = int(
        (
            datetime.datetime.fromisoformat(hours["window"]["end"])
            - datetime.datetime.fromisoformat(hours["window"]["start"])
        ).total_seconds()
        // 3600
    )
    assert len(hours["data"]) in (expected_buckets, expected_buckets + 1)
    first_local = datetime.datetime.fromisoformat(hours["data"][0]["local_start"])
    assert first_local.replace(tzinfo=None) == datetime.datetime(2026, 10, 29)

    # Agents and groups (whole UTC days from call_stats_day, the edges from call_stats) equal the
    # records of the tenant days, over ranges ending at and away from the DST change.
    for first, last in (
        ("2026-10-29", "2026-11-04"),
        ("2026-10-30", "2026-11-01"),
        ("2026-11-01", "2026-11-01"),
    ):
        check_agents_and_groups(
            await account.get("/api/analytics/agents", params={"start_date": first, "end_date": last}),
            await account.get("/api/analytics/groups", params={"start_date": first, "end_date": last}),
            calls,
            tz,
            first,
            last,
        )


def check_agents_and_groups(
    agents: Any, groups: Any, calls: list[Call], zone: ZoneInfo, first: str, last: str
) -> None:
    first_day, last_day = datetime.date.fromisoformat(first), datetime.date.fromisoformat(last)
    inside = [c for c in calls if first_day <= c.start.astimezone(zone).date() <= last_day]
    assert agents.status_code == 200, agents.text
    assert groups.status_code == 200, groups.text
    for body, key in ((agents.json(), "agent_id"), (groups.json(), "group_id")):
        by: dict[int, Expected] = defaultdict(Expected)
        for c in inside:
            by[getattr(c, key) or 0].add(c)
        for row in body["data"]:
            e = by.get(row[key], Expected())
            got = (row["calls"], row["answered"], row["finished"], row["success_rate"], row["avg_duration"])
            assert got == (e.calls, e.answered, e.finished, e.success_rate, e.avg_duration), (zone, key, row)
            assert row["total_talk_time"] == e.talk, (zone, key, row)
        assert {r[key] for r in body["data"] if r["calls"]} == {k for k in by if k}, (zone, key)


async def test_a_range_to_the_minute_counts_exactly(account: Account, db: AsyncEngine) -> None:
    agents = await make_agents(account, 2)
    rng = random.Random(7)
    since = datetime.datetime(2026, 3, 1, tzinfo=UTC)
    calls = random_calls(rng, 300, since, since + datetime.timedelta(hours=6), agents, [0])
    for c in calls:
        c.group_id = None
    await seed(db, account.tenant_id, calls)
    start, end = "2026-03-01T01:17:00Z", "2026-03-01T04:43:30Z"
    body = (
        await account.get("/api/analytics/overview", params={"start_date": start, "end_date": end})
    ).json()
    low, high = datetime.datetime.fromisoformat(start), datetime.datetime.fromisoformat(end)
    inside = [c for c in calls if low <= c.start < high]
    e = total(inside)
    totals = body["totals"]
    assert (totals["calls"], totals["answered"], totals["finished"]) == (e.calls, e.answered, e.finished)
    assert totals["success_rate"] == e.success_rate
    assert totals["avg_duration"] == e.avg_duration
    assert totals["total_talk_time"] == e.talk
    assert totals["in_progress"] == e.calls - e.finished
    assert totals["total_duration"] == sum(c.duration or 0 for c in inside)
    assert body["unrouted_calls"] == sum(1 for c in inside if c.agent_id is None)
    directions: dict[str, int] = defaultdict(int)
    for c in inside:
        directions[c.direction or "unknown"] += 1
    assert body["by_direction"] == dict(directions)
    assert body["agents"] == 2
    assert body["groups"] == 0

    # The record list's total and summary (now from call_stats) say the same, filter by filter.
    for params, keep in [
        ({}, lambda c: True),
        ({"agent_id": agents[0]}, lambda c: c.agent_id == agents[0]),
        ({"status": "busy"}, lambda c: c.status == "busy"),
        ({"status": "connected"}, lambda c: c.status == "connected"),
        ({"direction": "outbound"}, lambda c: c.direction == "outbound"),
        (
            {"agent_id": agents[1], "status": "completed", "direction": "inbound"},
            lambda c: c.agent_id == agents[1] and c.status == "completed" and c.direction == "inbound",
        ),
        ({"min_duration": 300}, lambda c: c.duration is not None and c.duration >= 300),
    ]:
        query = {"start_date": start, "end_date": end, "per_page": 5, **params}
        page = (await account.get("/api/call-records", params=query)).json()
        wanted = [c for c in inside if keep(c)]
        assert page["meta"]["total"] == len(wanted), params
        summary = (await account.get("/api/call-records/statistics/summary", params=query)).json()
        assert summary["total"] == len(wanted), params
        assert summary["answered"] == sum(1 for c in wanted if c.status == "completed"), params
        assert summary["total_duration"] == sum(c.duration or 0 for c in wanted), params
        statuses: dict[str, int] = defaultdict(int)
        for c in wanted:
            statuses[c.status] += 1
        assert summary["by_status"] == dict(statuses), params
        assert summary["success_rate"] == total(wanted).success_rate, params
        assert summary["avg_duration"] == total(wanted).avg_duration, params


async def test_agents_and_groups_with_live_calls_from_redis(
    account: Account, db: AsyncEngine, redis: Redis, cp_settings: ControlPlaneSettings
) -> None:
    """Agent 0 is in two groups (capacities 2 and 4: it may take 4); agent 1 in one (capacity 3);
    agent 2 in a group with capacity 0 (unlimited); agent 3 in no group."""
    a = await make_agents(account, 4)
    g1 = await make_group(account, "One", [(a[0], 2), (a[1], 3)])
    g2 = await make_group(account, "Two", [(a[0], 4), (a[2], 0)])
    today = datetime.datetime.now(UTC)
    calls = [
        Call(today - datetime.timedelta(minutes=5), "completed", 100, 90, a[0], g1, "inbound"),
        Call(today - datetime.timedelta(minutes=4), "completed", 50, 40, a[0], g2, "inbound"),
        Call(today - datetime.timedelta(minutes=3), "busy", 0, None, a[1], g1, "inbound"),
        Call(today - datetime.timedelta(minutes=2), "connected", None, None, a[2], g2, "inbound"),
    ]
    await seed(db, account.tenant_id, calls)
    keys = TenantKeys(cp_settings.redis_prefix, account.tenant_id)
    now_ms = int(today.timestamp() * 1000)
    await redis.zadd(keys.active(a[0]), {"s1": now_ms + 60_000, "s2": now_ms + 60_000, "gone": now_ms - 1000})
    await redis.zadd(keys.active(a[2]), {"s3": now_ms + 60_000})

    body = (await account.get("/api/analytics/agents")).json()
    rows = {r["agent_id"]: r for r in body["data"]}
    assert set(rows) == set(a)
    assert (rows[a[0]]["calls"], rows[a[0]]["answered"], rows[a[0]]["total_talk_time"]) == (2, 2, 130)
    assert rows[a[0]]["avg_talk_time"] == 65.0
    assert rows[a[0]]["avg_duration"] == 75.0
    assert (rows[a[0]]["active_calls"], rows[a[0]]["capacity"], rows[a[0]]["utilisation"]) == (2, 4, 0.5)
    assert (rows[a[1]]["success_rate"], rows[a[1]]["capacity"], rows[a[1]]["utilisation"]) == (0.0, 3, 0.0)
    assert (rows[a[2]]["active_calls"], rows[a[2]]["capacity"], rows[a[2]]["utilisation"]) == (1, None, None)
    assert (rows[a[3]]["calls"], rows[a[3]]["capacity"], rows[a[3]]["utilisation"]) == (0, None, None)
    assert rows[a[0]]["name"] == "Agent 0"

    only_g1 = (await account.get("/api/analytics/agents", params={"group_id": g1})).json()
    assert {r["agent_id"]: r["calls"] for r in only_g1["data"]} == {a[0]: 1, a[1]: 1}

    groups = {r["group_id"]: r for r in (await account.get("/api/analytics/groups")).json()["data"]}
    assert (groups[g1]["calls"], groups[g1]["answered"], groups[g1]["members"]) == (2, 1, 2)
    assert (groups[g1]["active_calls"], groups[g1]["capacity"], groups[g1]["utilisation"]) == (2, 5, 0.4)
    assert (groups[g2]["active_calls"], groups[g2]["capacity"], groups[g2]["utilisation"]) == (3, None, None)
    assert groups[g2]["name"] == "Two"

    metrics = (await account.get("/api/analytics/metrics")).json()
    assert metrics["active_calls"] == 3
    assert metrics["calls_today"] == sum(1 for c in calls if c.start.date() == today.date())  # a UTC tenant
    by_group = (await account.get("/api/analytics/metrics", params={"group_id": g1})).json()
    assert by_group["active_calls"] == 2

    realtime = (await account.get("/api/analytics/realtime", params={"minutes": 10})).json()
    assert realtime["active_calls"] == 3
    assert len(realtime["per_minute"]) == 10
    assert realtime["calls_last_minutes"] == 4
    assert {r["agent_id"]: r["active_calls"] for r in realtime["agents"]} == {
        a[0]: 2,
        a[1]: 0,
        a[2]: 1,
        a[3]: 0,
    }
    assert {r["group_id"]: r["utilisation"] for r in realtime["groups"]} == {g1: 0.4, g2: None}


async def test_calls_today_follow_the_tenant_day(account: Account, db: AsyncEngine) -> None:
    now = datetime.datetime.now(UTC)
    calls = [
        Call(now - datetime.timedelta(hours=h), "completed", 10, 5, None, None, "inbound")
        for h in range(0, 48, 3)
    ]
    await seed(db, account.tenant_id, calls)
    for zone in ("Pacific/Kiritimati", "America/New_York", "Asia/Kolkata", "Pacific/Pago_Pago"):
        await set_zone(account, zone)
        tz = ZoneInfo(zone)
        today = now.astimezone(tz).date()
        expected = sum(1 for c in calls if c.start.astimezone(tz).date() == today)
        body = (await account.get("/api/analytics/metrics")).json()
        assert body["calls_today"] == expected, zone
        assert body["window"]["end_date"] == str(today)
        assert len(body["trends"]) == 30
        overview = (await account.get("/api/analytics/overview")).json()
        assert overview["today"]["calls"] == expected, zone
        stats = (await account.get("/api/calls/statistics")).json()
        assert stats["total_today"] == expected, zone


async def test_empty_ranges_are_zeros(account: Account) -> None:
    params = {"start_date": "2020-01-01", "end_date": "2020-01-31"}
    metrics = (await account.get("/api/analytics/metrics", params=params)).json()
    assert (metrics["total_calls"], metrics["success_rate"], metrics["avg_duration"]) == (0, 0.0, 0.0)
    assert len(metrics["trends"]) == 31
    assert all(
        p["calls"] == 0 and p["success_rate"] == 0.0 and p["avg_duration"] == 0.0 for p in metrics["trends"]
    )
    overview = (await account.get("/api/analytics/overview", params=params)).json()
    assert overview["totals"]["calls"] == 0
    assert overview["totals"]["avg_talk_time"] == 0.0
    assert overview["by_direction"] == {}
    trends = (await account.get("/api/analytics/trends", params={**params, "interval": "hour"})).json()
    assert len(trends["data"]) == 31 * 24
    assert (await account.get("/api/analytics/agents", params=params)).json()["data"] == []
    assert (await account.get("/api/analytics/groups", params=params)).json()["data"] == []
    realtime = (await account.get("/api/analytics/realtime")).json()
    assert (realtime["active_calls"], realtime["calls_last_minutes"]) == (0, 0)
    for path in ("/api/analytics/metrics", "/api/analytics/overview", "/api/analytics/trends"):
        response = await account.get(path, params=params)
        assert "NaN" not in response.text
        assert "Infinity" not in response.text


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/analytics/metrics", {"start_date": "2026-02-10", "end_date": "2026-02-01"}, "end_date"),
        ("/api/analytics/metrics", {"start_date": "2025-01-01", "end_date": "2026-01-05"}, "end_date"),
        ("/api/analytics/metrics", {"start_date": "yesterday"}, "start_date"),
        ("/api/analytics/metrics", {"agent_id": 999999999}, "agent_id"),
        ("/api/analytics/metrics", {"group_id": 999999999}, "group_id"),
        ("/api/analytics/metrics", {"agent_id": 0}, "agent_id"),
        ("/api/analytics/overview", {"agent_id": 999999999}, "agent_id"),
        ("/api/analytics/agents", {"group_id": 999999999}, "group_id"),
        ("/api/analytics/agents", {"end_date": "2026-13-01"}, "end_date"),
        ("/api/analytics/groups", {"start_date": "2026-02-10", "end_date": "2026-02-01"}, "end_date"),
        ("/api/analytics/trends", {"interval": "week"}, "interval"),
        (
            "/api/analytics/trends",
            {"interval": "hour", "start_date": "2026-01-01", "end_date": "2026-03-01"},
            "interval",
        ),
        ("/api/analytics/trends", {"group_id": 999999999}, "group_id"),
        ("/api/analytics/realtime", {"minutes": 0}, "minutes"),
        ("/api/analytics/realtime", {"minutes": 61}, "minutes"),
        # Bounded at the edge (control_plane/params.py).
        ("/api/analytics/metrics", {"agent_id": str(2**63)}, "agent_id"),
        ("/api/analytics/overview", {"group_id": "-1"}, "group_id"),
        ("/api/analytics/trends", {"interval": "\x00"}, "interval"),
        ("/api/analytics/agents", {"start_date": "2" * 257}, "start_date"),
        ("/api/analytics/realtime", {"minutes": str(2**63)}, "minutes"),
    ],
)
async def test_bad_queries_are_422_naming_the_field(
    account: Account, path: str, params: dict[str, Any], field: str
) -> None:
    response = await account.get(path, params=params)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_another_tenants_ids_are_422_and_its_calls_never_counted(
    account: Account, other_account: Account, db: AsyncEngine
) -> None:
    theirs = await make_agents(other_account, 1)
    their_group = await make_group(other_account, "Theirs", [(theirs[0], 1)])
    now = datetime.datetime.now(UTC)
    await seed(
        db, other_account.tenant_id, [Call(now, "completed", 30, 25, theirs[0], their_group, "inbound")]
    )
    for path in ("/api/analytics/metrics", "/api/analytics/overview", "/api/analytics/trends"):
        for name, value in (("agent_id", theirs[0]), ("group_id", their_group)):
            response = await account.get(path, params={name: value})
            assert response.status_code == 422, (path, name)
            assert name in [e["field"] for e in response.json()["errors"]]
    overview = (await account.get("/api/analytics/overview")).json()
    assert overview["totals"]["calls"] == 0
    assert (await account.get("/api/analytics/agents")).json()["data"] == []
    assert (await other_account.get("/api/analytics/overview")).json()["totals"]["calls"] == 1


async def test_a_deleted_agents_history_stays_readable(account: Account, db: AsyncEngine) -> None:
    agent = (await make_agents(account, 1))[0]
    await seed(
        db, account.tenant_id, [Call(datetime.datetime.now(UTC), "completed", 30, 25, agent, None, "inbound")]
    )
    assert (await account.delete(f"/api/voice-agents/{agent}")).status_code == 204
    metrics = (await account.get("/api/analytics/metrics", params={"agent_id": agent})).json()
    assert metrics["total_calls"] == 1
    rows = (await account.get("/api/analytics/agents")).json()["data"]
    assert [(r["agent_id"], r["name"], r["calls"]) for r in rows] == [(agent, None, 1)]


async def test_viewers_can_read_analytics(account: Account) -> None:
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    created = await account.post(
        "/api/users", json={"name": "Viewer", "email": email, "password": "viewer password", "role": "viewer"}
    )
    assert created.status_code == 201, created.text
    login = await account.client.post("/api/login", json={"email": email, "password": "viewer password"})
    headers = {"Authorization": f"Bearer {login.json()['token']}"}
    for path in ("metrics", "agents", "groups", "overview", "trends", "realtime", "call-records"):
        response = await account.client.get(f"/api/analytics/{path}", headers=headers)
        assert response.status_code == 200, (path, response.text)
    assert (await account.client.get("/api/analytics/metrics")).status_code == 401


async def test_the_longest_calls_first_and_calls_without_a_duration_last(
    account: Account, db: AsyncEngine
) -> None:
    now = datetime.datetime.now(UTC)
    calls = [
        Call(now - datetime.timedelta(minutes=m), status, duration, None, None, None, "inbound")
        for m, status, duration in [
            (1, "failed", None),
            (2, "completed", 30),
            (3, "completed", 300),
            (4, "busy", 0),
        ]
    ]
    await seed(db, account.tenant_id, calls)
    for sort, expected in (("-duration", [300, 30, 0, None]), ("duration", [0, 30, 300, None])):
        body = (await account.get("/api/call-records", params={"sort": sort})).json()
        assert [r["duration"] for r in body["data"]] == expected, sort
        assert body["meta"]["total"] == 4
