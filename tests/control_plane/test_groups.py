"""Agent groups (SPEC §2.3): CRUD, settings validation, the read shapes, deletes guarded by inbound
rules, toggle, tenant isolation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.control_plane.conftest import Account

DEFAULT_SETTINGS = {
    "window_hours": 24,
    "fallback_enabled": True,
    "max_attempts": 3,
    "ring_timeout_s": 30,
    "no_agent_action": "say_and_hangup",
    "no_agent_message": None,
    "sticky_hours": 0,
    "rotate_same_priority": True,
    "outlier": None,
    "overflow": [],
}


def fields(response: Any) -> set[str]:
    return {e["field"] for e in response.json().get("errors", [])}


async def make_agent(account: Account, name: str, **overrides: Any) -> dict[str, Any]:
    body = {"name": name, "provider": "vapi", "service_value": "+14155550100", **overrides}
    response = await account.post("/api/voice-agents", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def make_group(account: Account, name: str = "Support", **overrides: Any) -> dict[str, Any]:
    response = await account.post("/api/agent-groups", json={"name": name, **overrides})
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def insert_rule(db: Engine, tenant_id: int, target_type: str, target_id: int, name: str | None) -> int:
    with db.begin() as conn:
        return int(
            conn.execute(
                text(
                    "INSERT INTO inbound_routing_rules (tenant_id, name, pattern, target_type, target_id, "
                    "priority, enabled, created_at, updated_at) VALUES (:t, :n, '*', :tt, :id, 1, true, "
                    "now(), now()) RETURNING id"
                ),
                {"t": tenant_id, "n": name, "tt": target_type, "id": target_id},
            ).scalar_one()
        )


async def test_create_with_defaults(account: Account) -> None:
    group = await make_group(account)
    assert group["name"] == "Support"
    assert group["strategy"] == "load_balanced"
    assert group["settings"] == DEFAULT_SETTINGS
    assert group["enabled"] is True
    assert group["members"] == []
    assert group["agents"] == []
    assert group["tenant_id"] == account.tenant_id
    assert (await account.get(f"/api/agent-groups/{group['id']}")).json() == group


async def test_create_with_strategy_and_settings(account: Account) -> None:
    group = await make_group(
        account,
        strategy="priority",
        settings={"fallback_enabled": False, "max_attempts": 5, "no_agent_action": "reject_busy"},
        enabled=False,
    )
    assert group["strategy"] == "priority"
    assert group["settings"] == {
        **DEFAULT_SETTINGS,
        "fallback_enabled": False,
        "max_attempts": 5,
        "no_agent_action": "reject_busy",
    }
    assert group["enabled"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"settings": {"window_hours": 0}}, "settings.window_hours"),
        ({"settings": {"window_hours": 169}}, "settings.window_hours"),
        ({"settings": {"max_attempts": 11}}, "settings.max_attempts"),
        ({"settings": {"ring_timeout_s": 4}}, "settings.ring_timeout_s"),
        ({"settings": {"no_agent_action": "explode"}}, "settings.no_agent_action"),
        ({"strategy": "random"}, "strategy"),
        ({"settings": {"sticky_hours": -1}}, "settings.sticky_hours"),
        ({"settings": {"sticky_hours": 721}}, "settings.sticky_hours"),
        ({"settings": {"sticky_hours": "2"}}, "settings.sticky_hours"),
        ({"settings": {"rotate_same_priority": "no"}}, "settings.rotate_same_priority"),
        ({"name": ""}, "name"),
    ],
)
async def test_invalid_groups_answer_422_naming_the_field(
    account: Account, body: dict[str, Any], field: str
) -> None:
    response = await account.post("/api/agent-groups", json={"name": "G", **body})
    assert response.status_code == 422, response.text
    assert fields(response) == {field}


async def test_unknown_setting_is_refused(account: Account) -> None:
    response = await account.post("/api/agent-groups", json={"name": "G", "settings": {"colour": "red"}})
    assert response.status_code == 422
    assert fields(response) == {"settings.colour"}
    group = await make_group(account)
    update = await account.put(f"/api/agent-groups/{group['id']}", json={"settings": {"colour": "red"}})
    assert update.status_code == 422
    assert fields(update) == {"settings.colour"}


@pytest.mark.parametrize("strategy", ["weighted", "least_active"])
async def test_strategies_beyond_the_original(account: Account, strategy: str) -> None:
    """SPEC §5: weighted and least_active, stickiness and the priority rotation switch round-trip."""
    group = await make_group(
        account, strategy=strategy, settings={"sticky_hours": 720, "rotate_same_priority": False}
    )
    assert group["strategy"] == strategy
    assert group["settings"]["sticky_hours"] == 720
    assert group["settings"]["rotate_same_priority"] is False
    listed = (await account.get("/api/agent-groups", params={"strategy": strategy})).json()
    assert [g["id"] for g in listed["data"]] == [group["id"]]
    url = f"/api/agent-groups/{group['id']}"
    off = await account.patch(url, json={"settings": {"sticky_hours": 0}, "strategy": "priority"})
    assert off.status_code == 200, off.text
    assert off.json()["settings"]["sticky_hours"] == 0
    assert off.json()["settings"]["rotate_same_priority"] is False


async def test_unique_name_per_tenant(account: Account, other_account: Account) -> None:
    await make_group(account, "Dup")
    again = await account.post("/api/agent-groups", json={"name": "Dup"})
    assert again.status_code == 422
    assert fields(again) == {"name"}
    other = await make_group(account, "Other")
    rename = await account.put(f"/api/agent-groups/{other['id']}", json={"name": "Dup"})
    assert rename.status_code == 422
    assert fields(rename) == {"name"}
    await make_group(other_account, "Dup")


async def test_update_is_partial_and_merges_settings(account: Account) -> None:
    group = await make_group(account, settings={"window_hours": 12})
    url = f"/api/agent-groups/{group['id']}"
    updated = await account.put(url, json={"settings": {"max_attempts": 2}, "strategy": "round_robin"})
    assert updated.status_code == 200
    body = updated.json()
    assert body["settings"]["window_hours"] == 12
    assert body["settings"]["max_attempts"] == 2
    assert body["strategy"] == "round_robin"
    assert body["name"] == "Support"
    bad = await account.patch(url, json={"settings": {"window_hours": 500}})
    assert bad.status_code == 422
    assert fields(bad) == {"settings.window_hours"}
    assert (await account.get(url)).json()["settings"]["window_hours"] == 12
    renamed = await account.patch(url, json={"name": "Renamed", "enabled": False})
    assert renamed.json()["name"] == "Renamed"
    assert renamed.json()["enabled"] is False


async def test_list_paginates_and_filters_by_strategy(account: Account, other_account: Account) -> None:
    agent = await make_agent(account, "A")
    first = await make_group(account, "G1", strategy="priority")
    await make_group(account, "G2", strategy="round_robin")
    await make_group(account, "G3", strategy="priority")
    await make_group(other_account, "Theirs", strategy="priority")
    await account.post(
        f"/api/agent-groups/{first['id']}/members", json={"agent_id": agent["id"], "capacity": 2}
    )

    listing = (await account.get("/api/agent-groups", params={"per_page": 2})).json()
    assert listing["meta"]["total"] == 3
    assert listing["meta"]["last_page"] == 2
    assert [g["name"] for g in listing["data"]] == ["G1", "G2"]
    assert listing["data"][0]["agents"] == [
        {
            "id": agent["id"],
            "name": "A",
            "provider": "vapi",
            "enabled": True,
            "pivot": {"priority": 1, "capacity": 2, "weight": 100},
        }
    ]
    priority = (await account.get("/api/agent-groups", params={"strategy": "priority"})).json()
    assert [g["name"] for g in priority["data"]] == ["G1", "G3"]
    assert (await account.get("/api/agent-groups", params={"strategy": "nope"})).status_code in (400, 422)


async def test_toggle(account: Account) -> None:
    group = await make_group(account)
    off = await account.patch(f"/api/agent-groups/{group['id']}/toggle")
    assert off.status_code == 200
    assert off.json()["enabled"] is False
    assert (await account.patch(f"/api/agent-groups/{group['id']}/toggle")).json()["enabled"] is True


async def test_delete_refused_while_a_rule_targets_the_group(account: Account, db: Engine) -> None:
    agent = await make_agent(account, "A")
    group = await make_group(account)
    await account.post(f"/api/agent-groups/{group['id']}/members", json={"agent_id": agent["id"]})
    rule_id = insert_rule(db, account.tenant_id, "group", group["id"], "Sales line")
    # A rule targeting an agent with the same id does not count.
    insert_rule(db, account.tenant_id, "agent", group["id"] + 10_000, None)
    refused = await account.delete(f"/api/agent-groups/{group['id']}")
    assert refused.status_code == 409
    assert f"#{rule_id}" in refused.json()["detail"]
    assert "Sales line" in refused.json()["detail"]
    with db.begin() as conn:
        conn.execute(text("DELETE FROM inbound_routing_rules WHERE id = :id"), {"id": rule_id})
    assert (await account.delete(f"/api/agent-groups/{group['id']}")).status_code == 204
    assert (await account.get(f"/api/agent-groups/{group['id']}")).status_code == 404
    with db.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM agent_group_members WHERE group_id = :g"), {"g": group["id"]}
        ).scalar_one()
    assert left == 0
    # The agent itself stays.
    assert (await account.get(f"/api/voice-agents/{agent['id']}")).status_code == 200


async def test_writes_bump_the_config_version(account: Account, db: Engine) -> None:
    def version() -> int:
        with db.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT config_version FROM tenants WHERE id = :id"), {"id": account.tenant_id}
                ).scalar_one()
            )

    agent = await make_agent(account, "A")
    before = version()
    group = await make_group(account)
    url = f"/api/agent-groups/{group['id']}"
    await account.put(url, json={"strategy": "priority"})
    await account.patch(f"{url}/toggle")
    await account.post(f"{url}/members", json={"agent_id": agent["id"]})
    await account.put(f"{url}/members/{agent['id']}", json={"capacity": 3})
    await account.delete(f"{url}/members/{agent['id']}")
    await account.delete(url)
    assert version() == before + 7


async def test_other_tenants_groups_answer_404_on_every_route(
    account: Account, other_account: Account
) -> None:
    agent = await make_agent(account, "Mine")
    group = await make_group(account, "Secret group")
    url = f"/api/agent-groups/{group['id']}"
    await account.post(f"{url}/members", json={"agent_id": agent["id"]})
    theirs = await make_agent(other_account, "Theirs")
    calls = [
        await other_account.get(url),
        await other_account.put(url, json={"name": "x"}),
        await other_account.patch(url, json={"name": "x"}),
        await other_account.patch(f"{url}/toggle"),
        await other_account.delete(url),
        await other_account.get(f"{url}/stats"),
        await other_account.post(f"{url}/reset-strategy"),
        await other_account.get(f"{url}/available-agents"),
        await other_account.get(f"{url}/members"),
        await other_account.get(f"{url}/memberships"),
        await other_account.post(f"{url}/members", json={"agent_id": theirs["id"]}),
        await other_account.put(f"{url}/members", json={"members": []}),
        await other_account.get(f"{url}/members/{agent['id']}"),
        await other_account.put(f"{url}/members/{agent['id']}", json={"priority": 2}),
        await other_account.patch(f"{url}/memberships/{agent['id']}", json={"priority": 2}),
        await other_account.delete(f"{url}/members/{agent['id']}"),
        await other_account.patch(f"{url}/memberships/reorder", json={"agent_ids": [agent["id"]]}),
        await other_account.patch(f"{url}/memberships/bulk-update", json={"members": []}),
    ]
    for response in calls:
        assert response.status_code == 404, (response.request.url, response.text)
        assert "Secret group" not in response.text
        assert "Mine" not in response.text
    assert (await other_account.get("/api/agent-groups")).json()["data"] == []
    still = (await account.get(url)).json()
    assert still["name"] == "Secret group"
    assert [m["agent_id"] for m in still["members"]] == [agent["id"]]


async def test_viewer_cannot_write(account: Account) -> None:
    group = await make_group(account)
    email = "viewer-groups@example.com"
    created = await account.post(
        "/api/users", json={"name": "V", "email": email, "password": "viewer-pass-1"}
    )
    assert created.status_code == 201
    login = await account.client.post("/api/login", json={"email": email, "password": "viewer-pass-1"})
    headers = {"Authorization": f"Bearer {login.json()['token']}"}
    client = account.client
    url = f"/api/agent-groups/{group['id']}"
    assert (await client.get(url, headers=headers)).status_code == 200
    assert (await client.get(f"{url}/members", headers=headers)).status_code == 200
    assert (await client.post("/api/agent-groups", json={"name": "v"}, headers=headers)).status_code == 403
    assert (await client.patch(f"{url}/toggle", headers=headers)).status_code == 403
    assert (await client.put(f"{url}/members", json={"members": []}, headers=headers)).status_code == 403
    assert (await client.post(f"{url}/reset-strategy", headers=headers)).status_code == 403
