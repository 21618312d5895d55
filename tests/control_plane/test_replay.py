"""POST /api/routing/replay (issue 15 part 8): a seeded set whose diff is known exactly, drafts that
change, add and delete items, 422s naming the field, tenant isolation, viewers, and no write anywhere
(no row changed, no Redis key made)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from control_plane.db.models import CallRecord
from control_plane.settings import ControlPlaneSettings
from tests.control_plane.conftest import Account
from tests.control_plane.test_inbound_rules import RULES, fields, make_agent, make_rule, make_viewer

REPLAY = "/api/routing/replay"
T0 = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
async def db(cp_settings: ControlPlaneSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(cp_settings.database_url, pool_size=2)
    yield engine
    await engine.dispose()


async def seed_calls(db: AsyncEngine, tenant_id: int, numbers: list[str], direction: str = "inbound") -> None:
    """One minute apart, 30 s each, in this order."""
    async with db.begin() as conn, AsyncSession(bind=conn) as session:
        for i, to in enumerate(numbers):
            start = T0 + datetime.timedelta(minutes=i)
            session.add(
                CallRecord(
                    tenant_id=tenant_id,
                    session_token=f"{direction[:2]}{i:04d}-{uuid.uuid4().hex[:8]}",
                    direction=direction,
                    from_number=f"+1415555{i:04d}",
                    to_number=to,
                    status="completed",
                    attempts=1,
                    start_time=start,
                    end_time=start + datetime.timedelta(seconds=30),
                    duration=30,
                    created_at=start,
                    updated_at=start,
                )
            )
        await session.flush()


async def group(
    account: Account, name: str, agent_ids: list[int], strategy: str = "round_robin"
) -> dict[str, Any]:
    r = await account.post("/api/agent-groups", json={"name": name, "strategy": strategy})
    assert r.status_code == 201, r.text
    g = dict(r.json())
    r = await account.put(
        f"/api/agent-groups/{g['id']}/members", json={"members": [{"agent_id": a} for a in agent_ids]}
    )
    assert r.status_code == 200, r.text
    return g


async def setup(account: Account, db: AsyncEngine) -> dict[str, Any]:
    a1, a2, a3 = [await make_agent(account, n) for n in ("A1", "A2", "A3")]
    sales = await group(account, "Sales", [a1["id"], a2["id"]])
    support = await group(account, "Support", [a3["id"]])
    r_sales = await make_rule(
        account, pattern="+1555*", target_type="group", target_id=sales["id"], priority=10
    )
    r_rest = await make_rule(account, pattern="*", target_type="group", target_id=support["id"], priority=20)
    # 6 sales calls, 4 others, interleaved; 2 outbound calls that the replay leaves out
    numbers = [
        "+15551",
        "+16661",
        "+15552",
        "+15553",
        "+16662",
        "+15554",
        "+16663",
        "+15555",
        "+15556",
        "+16664",
    ]
    await seed_calls(db, account.tenant_id, numbers)
    await seed_calls(db, account.tenant_id, ["+15557", "+15558"], direction="outbound-api")
    return {
        "a": [a1["id"], a2["id"], a3["id"]],
        "sales": sales,
        "support": support,
        "r_sales": r_sales,
        "r_rest": r_rest,
    }


def by(rows: list[dict[str, Any]], key: str) -> dict[int, tuple[int, int, int]]:
    return {r[key]: (r["before"], r["after"], r["change"]) for r in rows}


async def test_moving_a_rule_moves_exactly_its_calls(
    account: Account, db: AsyncEngine, cp_settings: ControlPlaneSettings
) -> None:
    s = await setup(account, db)
    a1, a2, a3 = s["a"]
    sales, support = s["sales"]["id"], s["support"]["id"]

    # No draft: nothing changes.
    r = await account.post(REPLAY, json={})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["calls"] == 10
    assert body["changed"] == 0
    assert by(body["groups"], "group_id") == {sales: (6, 6, 0), support: (4, 4, 0)}
    # round robin over A1, A2: 3 each
    assert by(body["agents"], "agent_id") == {a1: (3, 3, 0), a2: (3, 3, 0), a3: (4, 4, 0)}
    assert body["no_agent"] == {"before": 0, "after": 0, "change": 0}
    assert body["sample"] == []
    assert body["notes"]

    # The sales rule sends to Support: exactly its 6 calls move.
    draft = {"inbound_rules": [{"id": s["r_sales"]["id"], "target_id": support}]}
    r = await account.post(REPLAY, json={"config": draft})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["changed"] == 6
    assert by(body["groups"], "group_id") == {sales: (6, 0, -6), support: (4, 10, 6)}
    assert by(body["agents"], "agent_id") == {a1: (3, 0, -3), a2: (3, 0, -3), a3: (4, 10, 6)}
    assert by(body["rules"], "rule_id") == {s["r_sales"]["id"]: (6, 6, 0), s["r_rest"]["id"]: (4, 4, 0)}
    assert len(body["sample"]) == 6
    for c in body["sample"]:
        assert c["before"]["group_id"] == sales
        assert c["after"]["group_id"] == support
        assert c["after"]["agent_id"] == a3
    assert [c["start_time"] for c in body["sample"]] == sorted(c["start_time"] for c in body["sample"])

    # Nothing was written: the rule still sends to Sales, and no Redis key of the tenant exists.
    assert (await account.get(f"{RULES}/{s['r_sales']['id']}")).json()["target_id"] == sales
    redis = Redis.from_url(cp_settings.redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"*{{t{account.tenant_id}}}*", count=1000)]
    finally:
        await redis.aclose()
    assert keys == []

    # Deleting a group a rule still sends to is refused (the API answers 409), unless the rule goes too.
    r = await account.post(REPLAY, json={"config": {"groups": [{"id": sales, "delete": True}]}})
    assert r.status_code == 422, r.text
    assert fields(r) == {"config.groups[0].delete"}
    both = {
        "groups": [{"id": sales, "delete": True}],
        "inbound_rules": [{"id": s["r_sales"]["id"], "delete": True}],
    }
    r = await account.post(REPLAY, json={"config": both})
    assert r.status_code == 200, r.text
    assert by(r.json()["groups"], "group_id") == {sales: (6, 0, -6), support: (4, 10, 6)}

    # Deleting the sales rule: its calls fall to the catch-all.
    r = await account.post(
        REPLAY, json={"config": {"inbound_rules": [{"id": s["r_sales"]["id"], "delete": True}]}}
    )
    body = r.json()
    assert by(body["rules"], "rule_id") == {s["r_sales"]["id"]: (6, 0, -6), s["r_rest"]["id"]: (4, 10, 6)}
    assert body["changed"] == 6

    # A new group (with members) and a new rule before the others sending every call to it; Support
    # disabled; last_calls limits to the most recent 4.
    draft = {
        "groups": [
            {"name": "New", "strategy": "priority", "members": [{"agent_id": a2, "capacity": 1}]},
            {"id": support, "enabled": False},
        ],
        "inbound_rules": [{"pattern": "+1666*", "target_type": "group", "target_id": -1, "priority": 1}],
    }
    r = await account.post(REPLAY, json={"config": draft, "last_calls": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["calls"] == 4  # +16663, +15555, +15556, +16664
    assert by(body["groups"], "group_id") == {sales: (2, 2, 0), support: (2, 0, -2), -1: (0, 2, 2)}
    assert {g["group_id"]: g["name"] for g in body["groups"]}[-1] == "New"
    assert by(body["rules"], "rule_id")[-1] == (0, 2, 2)
    # Support disabled leaves nothing unrouted here (its calls moved to the new group)
    assert body["no_agent"] == {"before": 0, "after": 0, "change": 0}

    # Disabling the sales group: its calls get no agent.
    r = await account.post(REPLAY, json={"config": {"groups": [{"id": sales, "enabled": False}]}})
    assert r.json()["no_agent"] == {"before": 0, "after": 6, "change": 6}
    # Members replaced with one capacity-1 agent: calls do not overlap, so all 6 go to it.
    r = await account.post(
        REPLAY, json={"config": {"groups": [{"id": sales, "members": [{"agent_id": a1, "capacity": 1}]}]}}
    )
    assert by(r.json()["agents"], "agent_id")[a1] == (3, 6, 3)


async def test_validation_names_the_field(account: Account, other_account: Account, db: AsyncEngine) -> None:
    s = await setup(account, db)
    foreign_agent = await make_agent(other_account, "Theirs")
    foreign = await group(other_account, "Theirs", [foreign_agent["id"]])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"last_calls": 0}, "last_calls"),
        ({"last_calls": 10001}, "last_calls"),
        (
            {"config": {"groups": [{"id": s["sales"]["id"], "settings": {"window_hours": 0}}]}},
            "config.groups[0].settings.window_hours",
        ),
        (
            {"config": {"groups": [{"id": s["sales"]["id"], "strategy": "random"}]}},
            "config.groups[0].strategy",
        ),
        ({"config": {"groups": [{"name": "X", "bogus": 1}]}}, "config.groups[0].bogus"),
        ({"config": {"groups": [{"id": foreign["id"], "enabled": False}]}}, "config.groups[0].id"),
        (
            {
                "config": {
                    "groups": [{"id": s["sales"]["id"], "members": [{"agent_id": foreign_agent["id"]}]}]
                }
            },
            "config.groups[0].members[0].agent_id",
        ),
        (
            {
                "config": {
                    "groups": [{"id": s["sales"]["id"], "members": [{"agent_id": s["a"][0], "capacity": -1}]}]
                }
            },
            "config.groups[0].members[0].capacity",
        ),
        ({"config": {"groups": [{"delete": True}]}}, "config.groups[0].delete"),
        (
            {"config": {"inbound_rules": [{"id": s["r_sales"]["id"], "pattern": "re:(a+)+"}]}},
            "config.inbound_rules[0].pattern",
        ),
        (
            {"config": {"inbound_rules": [{"id": s["r_sales"]["id"], "target_id": foreign["id"]}]}},
            "config.inbound_rules[0].target_id",
        ),
        (
            {"config": {"inbound_rules": [{"pattern": "*", "target_type": "group", "target_id": -1}]}},
            "config.inbound_rules[0].target_id",
        ),
        ({"config": {"inbound_rules": [{"pattern": "*"}]}}, "config.inbound_rules[0].target_type"),
        (
            {"config": {"inbound_rules": [{"id": s["r_sales"]["id"], "schedule": {"days": ["xyz"]}}]}},
            "config.inbound_rules[0].schedule.days",
        ),
        ({"config": {"inbound_rules": [{"id": 999999999, "enabled": False}]}}, "config.inbound_rules[0].id"),
    ]
    for body, field in cases:
        r = await account.post(REPLAY, json=body)
        assert r.status_code == 422, (body, r.text)
        assert any(f.startswith(field) for f in fields(r)), (body, fields(r))


async def test_tenants_and_viewers(account: Account, other_account: Account, db: AsyncEngine) -> None:
    await setup(account, db)
    r = await other_account.post(REPLAY, json={})
    assert r.status_code == 200, r.text
    assert r.json()["calls"] == 0
    assert r.json()["agents"] == []
    viewer = await make_viewer(account)
    r = await viewer.post(REPLAY, json={"last_calls": 5})
    assert r.status_code == 200, r.text
    assert r.json()["calls"] == 5
    assert (await account.client.post(REPLAY, json={})).status_code == 401
