"""Group members (SPEC §2.3, §2.9): add/change/remove, whole-list replace (all or nothing), reorder,
bulk-update, available agents, the /memberships aliases, and agents leaving groups when deleted."""

from __future__ import annotations

from typing import Any

from tests.control_plane.conftest import Account
from tests.control_plane.test_groups import fields, make_agent, make_group


async def setup_group(account: Account, n: int = 3) -> tuple[str, list[int]]:
    agents = [(await make_agent(account, f"Agent {i}"))["id"] for i in range(n)]
    group = await make_group(account)
    return f"/api/agent-groups/{group['id']}", agents


async def members_of(account: Account, url: str) -> list[dict[str, Any]]:
    response = await account.get(f"{url}/members")
    assert response.status_code == 200
    return list(response.json()["data"])


def summary(members: list[dict[str, Any]]) -> list[tuple[int, int, int, int]]:
    return [(m["agent_id"], m["priority"], m["capacity"], m["weight"]) for m in members]


async def test_add_member_defaults_and_read_shape(account: Account) -> None:
    url, (a, _b, _c) = await setup_group(account)
    added = await account.post(f"{url}/members", json={"agent_id": a})
    assert added.status_code == 201, added.text
    body = added.json()
    assert body["agent_id"] == a
    assert body["name"] == "Agent 0"
    assert body["provider"] == "vapi"
    assert body["enabled"] is True
    assert (body["priority"], body["capacity"], body["weight"]) == (1, 0, 100)
    group = (await account.get(url)).json()
    assert group["members"] == [body]
    assert group["agents"][0]["pivot"] == {"priority": 1, "capacity": 0, "weight": 100}


async def test_members_are_ordered_by_priority_then_agent(account: Account) -> None:
    url, (a, b, c) = await setup_group(account)
    await account.post(f"{url}/members", json={"agent_id": c, "priority": 1})
    await account.post(f"{url}/members", json={"agent_id": a, "priority": 5, "capacity": 2, "weight": 7})
    await account.post(f"{url}/members", json={"agent_id": b, "priority": 1})
    assert summary(await members_of(account, url)) == [(b, 1, 0, 100), (c, 1, 0, 100), (a, 5, 2, 7)]
    assert [m["agent_id"] for m in (await account.get(url)).json()["members"]] == [b, c, a]


async def test_add_member_validation(account: Account, other_account: Account) -> None:
    url, (a, _b, _c) = await setup_group(account)
    theirs = await make_agent(other_account, "Theirs")
    foreign = await account.post(f"{url}/members", json={"agent_id": theirs["id"]})
    assert foreign.status_code == 422
    assert fields(foreign) == {"agent_id"}
    missing = await account.post(f"{url}/members", json={"agent_id": 999_999_999})
    assert missing.status_code == 422
    assert fields(missing) == {"agent_id"}
    for body, field in [
        ({"agent_id": a, "priority": 0}, "priority"),
        ({"agent_id": a, "priority": 1001}, "priority"),
        ({"agent_id": a, "capacity": -1}, "capacity"),
        ({"agent_id": a, "capacity": 10001}, "capacity"),
        ({"agent_id": a, "weight": 0}, "weight"),
    ]:
        response = await account.post(f"{url}/members", json=body)
        assert response.status_code == 422, body
        assert fields(response) == {field}
    assert (await account.post(f"{url}/members", json={"agent_id": a})).status_code == 201
    duplicate = await account.post(f"{url}/members", json={"agent_id": a})
    assert duplicate.status_code == 409


async def test_update_and_remove_one_member(account: Account) -> None:
    url, (a, b, _c) = await setup_group(account)
    await account.post(f"{url}/members", json={"agent_id": a})
    changed = await account.put(f"{url}/members/{a}", json={"capacity": 4})
    assert changed.status_code == 200
    assert (changed.json()["priority"], changed.json()["capacity"]) == (1, 4)
    patched = await account.patch(f"{url}/memberships/{a}", json={"priority": 9, "weight": 50})
    assert summary([patched.json()]) == [(a, 9, 4, 50)]
    assert (await account.get(f"{url}/members/{a}")).json()["capacity"] == 4
    assert (await account.put(f"{url}/members/{b}", json={"capacity": 4})).status_code == 404
    assert (await account.get(f"{url}/members/{b}")).status_code == 404
    bad = await account.put(f"{url}/members/{a}", json={"capacity": 20000})
    assert bad.status_code == 422
    assert fields(bad) == {"capacity"}
    assert (await account.delete(f"{url}/members/{a}")).status_code == 204
    assert await members_of(account, url) == []
    assert (await account.delete(f"{url}/members/{a}")).status_code == 404


async def test_replace_sets_exactly_the_list(account: Account) -> None:
    url, (a, b, c) = await setup_group(account)
    await account.post(f"{url}/members", json={"agent_id": a, "capacity": 3})
    await account.post(f"{url}/members", json={"agent_id": b})
    replaced = await account.put(
        f"{url}/members",
        json={"members": [{"agent_id": c, "priority": 1}, {"agent_id": a, "priority": 2, "capacity": 1}]},
    )
    assert replaced.status_code == 200, replaced.text
    assert summary(replaced.json()["data"]) == [(c, 1, 0, 100), (a, 2, 1, 100)]
    assert summary(await members_of(account, url)) == [(c, 1, 0, 100), (a, 2, 1, 100)]
    emptied = await account.put(f"{url}/members", json={"members": []})
    assert emptied.json()["data"] == []


async def test_replace_is_all_or_nothing(account: Account, other_account: Account) -> None:
    url, (a, b, c) = await setup_group(account)
    await account.post(f"{url}/members", json={"agent_id": a, "capacity": 3})
    await account.post(f"{url}/members", json={"agent_id": b, "priority": 2})
    before = await members_of(account, url)
    theirs = await make_agent(other_account, "Theirs")
    attempts = [
        ([{"agent_id": c}, {"agent_id": theirs["id"]}], "members[1].agent_id"),
        ([{"agent_id": c}, {"agent_id": 999_999_999}], "members[1].agent_id"),
        ([{"agent_id": c}, {"agent_id": a}, {"agent_id": c}], "members[2].agent_id"),
        ([{"agent_id": c}, {"agent_id": a, "priority": 0}], "members[1].priority"),
    ]
    for items, field in attempts:
        response = await account.put(f"{url}/members", json={"members": items})
        assert response.status_code == 422, items
        assert fields(response) == {field}
        assert await members_of(account, url) == before


async def test_reorder_sets_priorities_in_order(account: Account) -> None:
    url, (a, b, c) = await setup_group(account)
    for agent in (a, b, c):
        await account.post(f"{url}/memberships", json={"agent_id": agent, "capacity": 2})
    reordered = await account.patch(f"{url}/memberships/reorder", json={"agent_ids": [c, a, b]})
    assert reordered.status_code == 200, reordered.text
    assert summary(reordered.json()["data"]) == [(c, 1, 2, 100), (a, 2, 2, 100), (b, 3, 2, 100)]
    before = await members_of(account, url)
    for agent_ids, field in [
        ([c, a], "agent_ids"),
        ([c, a, b, b], "agent_ids[3]"),
        ([c, a, b, 999_999], "agent_ids"),
    ]:
        response = await account.patch(f"{url}/memberships/reorder", json={"agent_ids": agent_ids})
        assert response.status_code == 422, agent_ids
        assert fields(response) == {field}
    assert await members_of(account, url) == before
    # The /members spelling works too.
    again = await account.patch(f"{url}/members/reorder", json={"agent_ids": [a, b, c]})
    assert [m["agent_id"] for m in again.json()["data"]] == [a, b, c]


async def test_bulk_update_changes_only_given_fields(account: Account) -> None:
    url, (a, b, c) = await setup_group(account)
    await account.post(f"{url}/members", json={"agent_id": a, "priority": 1, "capacity": 5})
    await account.post(f"{url}/members", json={"agent_id": b, "priority": 2})
    updated = await account.patch(
        f"{url}/memberships/bulk-update",
        json={"members": [{"agent_id": a, "weight": 10}, {"agent_id": b, "priority": 1, "capacity": 3}]},
    )
    assert updated.status_code == 200, updated.text
    assert summary(updated.json()["data"]) == [(a, 1, 5, 10), (b, 1, 3, 100)]
    before = await members_of(account, url)
    not_member = await account.patch(
        f"{url}/memberships/bulk-update", json={"members": [{"agent_id": a, "weight": 1}, {"agent_id": c}]}
    )
    assert not_member.status_code == 422
    assert fields(not_member) == {"members[1].agent_id"}
    duplicate = await account.patch(
        f"{url}/memberships/bulk-update", json={"members": [{"agent_id": a}, {"agent_id": a, "weight": 1}]}
    )
    assert duplicate.status_code == 422
    assert fields(duplicate) == {"members[1].agent_id"}
    assert await members_of(account, url) == before


async def test_available_agents_lists_non_members(account: Account, other_account: Account) -> None:
    url, (a, b, c) = await setup_group(account)
    await make_agent(other_account, "Theirs")
    await account.post(f"{url}/members", json={"agent_id": b})
    available = await account.get(f"{url}/available-agents")
    assert available.status_code == 200
    assert [x["id"] for x in available.json()["data"]] == [a, c]
    assert all("password" not in x for x in available.json()["data"])


async def test_deleted_agent_leaves_its_groups(account: Account) -> None:
    url, (a, b, _c) = await setup_group(account)
    await account.post(f"{url}/members", json={"agent_id": a})
    await account.post(f"{url}/members", json={"agent_id": b})
    assert (await account.delete(f"/api/voice-agents/{a}")).status_code == 204
    assert [m["agent_id"] for m in await members_of(account, url)] == [b]


async def test_member_reads_follow_agent_changes(account: Account) -> None:
    url, (a, _b, _c) = await setup_group(account)
    await account.post(f"{url}/members", json={"agent_id": a})
    await account.patch(f"/api/voice-agents/{a}/toggle")
    await account.put(f"/api/voice-agents/{a}", json={"name": "Renamed"})
    (member,) = await members_of(account, url)
    assert member["enabled"] is False
    assert member["name"] == "Renamed"
