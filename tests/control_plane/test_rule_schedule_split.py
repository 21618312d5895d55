"""Inbound rules with a schedule or a traffic split (issue 15, parts 4 and 5): the API's shape and
its 422s, tenant isolation, the dry run at a given instant, the snapshot, and the split report read
from call records the event writer made."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from control_plane.events.writer import write_events
from control_plane.settings import ControlPlaneSettings
from shared.enums import EventKind
from shared.events import CallEvent
from tests.control_plane.conftest import Account
from tests.control_plane.test_inbound_rules import RULES, fields, make_agent, make_group, make_rule

BUSINESS = {
    "timezone": "America/New_York",
    "days": ["mon", "tue", "wed", "thu", "fri"],
    "ranges": [["09:00", "17:30"]],
    "holidays": ["2026-12-25"],
}


@pytest.fixture(scope="module")
async def db(cp_settings: ControlPlaneSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(cp_settings.database_url, pool_size=2)
    yield engine
    await engine.dispose()


async def test_split_and_schedule_round_trip(account: Account) -> None:
    a = await make_group(account, "Provider A")
    b = await make_group(account, "Provider B")
    agent = await make_agent(account)
    targets = [
        {"target_type": "group", "target_id": a["id"], "percent": 60},
        {"target_type": "group", "target_id": b["id"], "percent": 30},
        {"target_type": "agent", "target_id": agent["id"], "percent": 10},
    ]
    rule = await make_rule(account, pattern="+1555*", targets=targets, schedule=BUSINESS)
    assert rule["targets"] == targets
    # target_type/target_id repeat the first branch.
    assert (rule["target_type"], rule["target_id"]) == ("group", a["id"])
    assert rule["schedule"] == BUSINESS
    assert (await account.get(f"{RULES}/{rule['id']}")).json() == rule

    plain = await make_rule(account, pattern="*", target_type="agent", target_id=agent["id"], priority=900)
    assert plain["targets"] == []
    assert plain["schedule"] is None

    # Days are stored lower-cased; a schedule can be removed.
    r = await account.put(f"{RULES}/{plain['id']}", json={"schedule": {"days": ["SAT"], "timezone": "UTC"}})
    assert r.status_code == 200, r.text
    assert r.json()["schedule"] == {"timezone": "UTC", "days": ["sat"], "ranges": [], "holidays": []}
    r = await account.put(f"{RULES}/{plain['id']}", json={"schedule": None})
    assert r.json()["schedule"] is None

    # One target on a split rule: refused until the split ends.
    r = await account.put(f"{RULES}/{rule['id']}", json={"target_type": "group", "target_id": b["id"]})
    assert r.status_code == 422
    assert fields(r) == {"targets"}
    r = await account.put(f"{RULES}/{rule['id']}", json={"percent": 3})
    assert r.status_code == 422
    # A new split replaces the old one.
    r = await account.put(
        f"{RULES}/{rule['id']}",
        json={"targets": [{"target_type": "group", "target_id": b["id"], "percent": 100}]},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["target_type"], r.json()["target_id"]) == ("group", b["id"])
    # Ending the split: the one target given, or the first branch's when none is.
    r = await account.put(
        f"{RULES}/{rule['id']}", json={"targets": None, "target_type": "agent", "target_id": agent["id"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["targets"] == []
    assert (r.json()["target_type"], r.json()["target_id"]) == ("agent", agent["id"])

    # A group that is a split branch cannot be deleted.
    await make_rule(account, pattern="+1666*", targets=targets)
    r = await account.delete(f"/api/agent-groups/{b['id']}")
    assert r.status_code == 409
    assert "inbound routing rule" in r.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"targets": "SPLIT_SUM_90"}, "targets"),
        ({"targets": "SPLIT_UNKNOWN"}, "targets[1].target_id"),
        ({"targets": "SPLIT_DUPLICATE"}, "targets[1]"),
        ({"targets": "SPLIT", "target_type": "group", "target_id": "A"}, "targets"),
        ({}, "target_type"),
        ({"target_type": "group"}, "target_id"),
        (
            {"target_type": "group", "target_id": "A", "schedule": {"timezone": "Mars/Base"}},
            "schedule.timezone",
        ),
        (
            {"target_type": "group", "target_id": "A", "schedule": {"days": ["mon", "xyz"]}},
            "schedule.days[1]",
        ),
        (
            {"target_type": "group", "target_id": "A", "schedule": {"ranges": [["09:00", "9:30"]]}},
            "schedule.ranges[0]",
        ),
        (
            {"target_type": "group", "target_id": "A", "schedule": {"ranges": [["10:00", "10:00"]]}},
            "schedule.ranges[0]",
        ),
        (
            {"target_type": "group", "target_id": "A", "schedule": {"holidays": ["2026-13-01"]}},
            "schedule.holidays[0]",
        ),
        ({"target_type": "group", "target_id": "A", "schedule": {"weekdays": ["mon"]}}, "schedule"),
    ],
)
async def test_bad_schedules_and_splits_are_422_naming_the_field(
    account: Account, body: dict[str, Any], field: str
) -> None:
    a = await make_group(account, "A")
    b = await make_group(account, "B")
    split = {
        "SPLIT": [
            {"target_type": "group", "target_id": a["id"], "percent": 50},
            {"target_type": "group", "target_id": b["id"], "percent": 50},
        ],
        "SPLIT_SUM_90": [
            {"target_type": "group", "target_id": a["id"], "percent": 50},
            {"target_type": "group", "target_id": b["id"], "percent": 40},
        ],
        "SPLIT_UNKNOWN": [
            {"target_type": "group", "target_id": a["id"], "percent": 50},
            {"target_type": "agent", "target_id": 987654321, "percent": 50},
        ],
        "SPLIT_DUPLICATE": [
            {"target_type": "group", "target_id": a["id"], "percent": 50},
            {"target_type": "group", "target_id": a["id"], "percent": 50},
        ],
    }
    body = dict(body, pattern="*")
    if "targets" in body:
        body["targets"] = split[body["targets"]]
    if body.get("target_id") == "A":
        body["target_id"] = a["id"]
    r = await account.post(RULES, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in fields(r), r.json()


async def test_percent_out_of_range_is_422(account: Account) -> None:
    a = await make_group(account, "A")
    r = await account.post(
        RULES,
        json={"pattern": "*", "targets": [{"target_type": "group", "target_id": a["id"], "percent": 0}]},
    )
    assert r.status_code == 422
    assert any("percent" in f for f in fields(r)), r.json()


async def test_another_tenants_targets_are_refused_and_its_rules_unseen(
    account: Account, other_account: Account
) -> None:
    mine = await make_group(account, "Mine")
    theirs = await make_group(other_account, "Theirs")
    r = await account.post(
        RULES,
        json={
            "pattern": "*",
            "targets": [
                {"target_type": "group", "target_id": mine["id"], "percent": 50},
                {"target_type": "group", "target_id": theirs["id"], "percent": 50},
            ],
        },
    )
    assert r.status_code == 422
    assert fields(r) == {"targets[1].target_id"}
    their_rule = await make_rule(
        other_account,
        pattern="*",
        targets=[{"target_type": "group", "target_id": theirs["id"], "percent": 100}],
    )
    assert (await account.get(f"{RULES}/{their_rule['id']}")).status_code == 404
    r = await account.get("/api/analytics/splits", params={"rule_id": their_rule["id"]})
    assert r.status_code == 422
    assert fields(r) == {"rule_id"}


async def test_dry_run_honours_schedules_and_shows_the_split(account: Account) -> None:
    day = await make_group(account, "Day")
    night = await make_group(account, "Night")
    business = await make_rule(
        account, pattern="+1555*", target_type="group", target_id=day["id"], priority=10, schedule=BUSINESS
    )
    split = await make_rule(
        account,
        pattern="+1555*",
        priority=20,
        targets=[
            {"target_type": "group", "target_id": night["id"], "percent": 70},
            {"target_type": "group", "target_id": day["id"], "percent": 30},
        ],
    )

    async def dry(at: str) -> dict[str, Any]:
        r = await account.post(f"{RULES}/test", json={"to": "+15551234567", "at": at})
        assert r.status_code == 200, r.text
        return dict(r.json())

    # Tuesday 2026-12-01, New York: 09:00 EST is 14:00 UTC.
    assert (await dry("2026-12-01T14:00:00Z"))["rule"]["id"] == business["id"]
    assert (await dry("2026-12-01T09:00:00-05:00"))["target"]["name"] == "Day"
    after = await dry("2026-12-01T22:30:00Z")  # 17:30 in New York: closed
    assert after["rule"]["id"] == split["id"]
    assert after["target"] is None
    assert after["split"] == [
        {"type": "group", "id": night["id"], "name": "Night", "percent": 70},
        {"type": "group", "id": day["id"], "name": "Day", "percent": 30},
    ]
    assert after["at"] == "2026-12-01T22:30:00Z"
    assert (await dry("2026-12-25T15:00:00Z"))["rule"]["id"] == split["id"]  # a holiday
    # Summer time: 09:00 EDT is 13:00 UTC.
    assert (await dry("2026-07-01T13:00:00Z"))["rule"]["id"] == business["id"]
    assert (await dry("2026-07-01T12:59:00Z"))["rule"]["id"] == split["id"]
    r = await account.post(f"{RULES}/test", json={"to": "+15551234567", "at": "yesterday"})
    assert r.status_code == 422
    assert fields(r) == {"at"}


async def test_the_snapshot_carries_schedule_and_split(account: Account) -> None:
    a = await make_group(account, "A")
    b = await make_group(account, "B")
    rule = await make_rule(
        account,
        pattern="+1555*",
        schedule=BUSINESS,
        targets=[
            {"target_type": "group", "target_id": a["id"], "percent": 25},
            {"target_type": "group", "target_id": b["id"], "percent": 75},
        ],
    )
    from control_plane.db.models import InboundRoutingRule
    from control_plane.snapshots.compile import inbound_rule_snap
    from shared.snapshot import RuleSchedule, SplitTarget

    stored = InboundRoutingRule(
        id=rule["id"],
        pattern=rule["pattern"],
        target_type=rule["target_type"],
        target_id=rule["target_id"],
        priority=rule["priority"],
        enabled=True,
        schedule=rule["schedule"],
        targets=rule["targets"],
    )
    snap = inbound_rule_snap(stored)
    assert snap.schedule == RuleSchedule(**BUSINESS)  # type: ignore[arg-type]
    assert [t.percent for t in snap.targets] == [25, 75]
    assert isinstance(snap.targets[0], SplitTarget)


def _call(tenant_id: int, rule_id: int, branch: str, *, answered: bool, billsec: int) -> list[CallEvent]:
    token = uuid.uuid4().hex
    now = time.time() - 60
    start_ms = int(now * 1000)

    def ev(kind: EventKind, suffix: str, **kw: Any) -> CallEvent:
        return CallEvent(
            event_id=f"{tenant_id}:{token}:{suffix}",
            kind=kind,
            tenant_id=tenant_id,
            domain="acme.cloudonix.net",
            session_token=token,
            occurred_at=now,
            **kw,
        )

    group_id = int(branch.split(":")[1])
    return [
        ev(
            EventKind.ROUTED,
            "app",
            rule_id=rule_id,
            group_id=group_id,
            agent_id=7,
            attempt=1,
            outcome="routed",
            split_target=branch,
            direction="inbound",
            call_start_ms=start_ms,
        ),
        ev(
            EventKind.CDR,
            "cdr",
            disposition="ANSWER" if answered else "BUSY",
            duration=billsec + 5,
            billsec=billsec if answered else 0,
            call_start_ms=start_ms,
            call_answer_ms=start_ms + 5000 if answered else None,
            call_end_ms=start_ms + (billsec + 5) * 1000,
        ),
    ]


async def test_split_report_per_branch_from_call_records(account: Account, db: AsyncEngine) -> None:
    a = await make_group(account, "A")
    b = await make_group(account, "B")
    rule = await make_rule(
        account,
        pattern="+1555*",
        targets=[
            {"target_type": "group", "target_id": a["id"], "percent": 50},
            {"target_type": "group", "target_id": b["id"], "percent": 50},
        ],
    )
    branch_a, branch_b = f"group:{a['id']}", f"group:{b['id']}"
    events: list[CallEvent] = []
    for i in range(4):
        events += _call(account.tenant_id, rule["id"], branch_a, answered=i < 3, billsec=60)
    for i in range(4):
        events += _call(account.tenant_id, rule["id"], branch_b, answered=i < 1, billsec=30)
    async with db.begin() as conn, AsyncSession(bind=conn) as session:
        await write_events(session, events)
    records = (await account.get("/api/analytics/call-records", params={"per_page": 50})).json()["data"]
    assert sorted(r.get("split_target") for r in records) == [branch_a] * 4 + [branch_b] * 4

    r = await account.get("/api/analytics/splits", params={"rule_id": rule["id"]})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["rule_id"] == rule["id"]
    rows = {row["split_target"]: row for row in report["data"]}
    assert list(rows) == [branch_a, branch_b]
    assert rows[branch_a]["name"] == "A"
    assert rows[branch_a]["percent"] == 50
    assert (rows[branch_a]["calls"], rows[branch_a]["answered"]) == (4, 3)
    assert rows[branch_a]["success_rate"] == 0.75
    assert rows[branch_a]["avg_talk_time"] == 60.0
    assert (rows[branch_b]["calls"], rows[branch_b]["answered"]) == (4, 1)
    assert rows[branch_b]["share"] == 0.5
    assert rows[branch_b]["avg_talk_time"] == 30.0

    # Without rule_id: every split rule of the tenant.
    r = await account.get("/api/analytics/splits")
    assert r.status_code == 200, r.text
    every = r.json()
    assert every["rule_id"] is None
    assert [(row["rule_id"], row["split_target"], row["calls"]) for row in every["data"]] == [
        (rule["id"], branch_a, 4),
        (rule["id"], branch_b, 4),
    ]


async def test_end_to_end_split_through_engine_consumer_and_report(account: Account) -> None:
    """API rule (split 75/25, schedule open today) → snapshot → engine → events → consumer → records →
    GET /api/analytics/splits; a closed schedule sends the next call to the later rule."""
    import asyncio
    import datetime
    import xml.etree.ElementTree as ET

    from tests.control_plane.test_e2e_engine import applied_within, engine_post, tenant_version
    from tests.routing_engine.harness import running_engine

    today = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[datetime.datetime.now(datetime.UTC).weekday()]
    async with running_engine() as engine:
        domain_name = f"split-{uuid.uuid4().hex[:8]}.cloudonix.net"
        key = (await account.post("/api/domains", json={"domain": domain_name})).json()["webhook_key"]
        groups = []
        for n in (1, 2):
            agent = await make_agent(account, f"Agent {n}")
            await account.put(f"/api/voice-agents/{agent['id']}", json={"service_value": f"+1212555012{n}"})
            group = await make_group(account, f"Provider {n}")
            r = await account.post(f"/api/agent-groups/{group['id']}/members", json={"agent_id": agent["id"]})
            assert r.status_code == 201, r.text
            groups.append(group)
        rule = await make_rule(
            account,
            pattern="*",
            priority=10,
            schedule={"timezone": "UTC", "days": [today]},
            targets=[
                {"target_type": "group", "target_id": groups[0]["id"], "percent": 75},
                {"target_type": "group", "target_id": groups[1]["id"], "percent": 25},
            ],
        )
        await applied_within(engine, account.tenant_id, await tenant_version(account))
        sessions = [uuid.uuid4().hex for _ in range(20)]
        dialled = []
        for session in sessions:
            body = {"Session": session, "CallSid": session, "From": "+14155550100", "To": "+15550001111"}
            r = await engine_post(
                engine, f"/api/voice/application/{domain_name}", dict(body, Direction="inbound"), key
            )
            dialled.append(ET.fromstring(r.content).findtext("./Dial/Service"))
        assert dialled.count("+12125550121") == 15
        assert dialled.count("+12125550122") == 5

        report: dict[str, Any] = {}
        for _ in range(200):
            report = (await account.get("/api/analytics/splits", params={"rule_id": rule["id"]})).json()
            if sum(row["calls"] for row in report["data"]) == 20:
                break
            await asyncio.sleep(0.05)
        rows = {row["split_target"]: row for row in report["data"]}
        assert rows[f"group:{groups[0]['id']}"]["calls"] == 15
        assert rows[f"group:{groups[1]['id']}"]["calls"] == 5
        assert rows[f"group:{groups[1]['id']}"]["percent"] == 25
        detail = (await account.get(f"/api/calls/{sessions[0]}")).json()
        assert detail["split_target"] in rows
        assert detail["rule_id"] == rule["id"]

        # Closed today: the later catch-all rule takes the call.
        other_days = [d for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun") if d != today]
        later = await make_rule(
            account, pattern="*", priority=20, target_type="group", target_id=groups[1]["id"]
        )
        r = await account.put(
            f"{RULES}/{rule['id']}", json={"schedule": {"timezone": "UTC", "days": other_days}}
        )
        assert r.status_code == 200, r.text
        await applied_within(engine, account.tenant_id, await tenant_version(account))
        session = uuid.uuid4().hex
        body = {
            "Session": session,
            "CallSid": session,
            "From": "+1415",
            "To": "+1555",
            "Direction": "inbound",
        }
        r = await engine_post(engine, f"/api/voice/application/{domain_name}", body, key)
        assert ET.fromstring(r.content).findtext("./Dial/Service") == "+12125550122"
        for _ in range(200):
            got = await account.get(f"/api/calls/{session}")
            if got.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert got.json()["rule_id"] == later["id"]
        assert got.json()["split_target"] is None
