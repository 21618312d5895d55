"""Inbound routing rules (SPEC §2.4): CRUD, pattern validation, tenant isolation and the dry run."""

from __future__ import annotations

import uuid
from typing import Any

from tests.control_plane.conftest import Account

RULES = "/api/inbound-routing-rules"


def fields(response: Any) -> set[str]:
    return {e["field"] for e in response.json().get("errors", [])}


async def make_agent(account: Account, name: str = "Support") -> dict[str, Any]:
    r = await account.post(
        "/api/voice-agents", json={"name": name, "provider": "vapi", "service_value": "+14155550100"}
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def make_group(account: Account, name: str = "Sales") -> dict[str, Any]:
    r = await account.post("/api/agent-groups", json={"name": name, "strategy": "priority"})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def make_domain(account: Account) -> dict[str, Any]:
    r = await account.post("/api/domains", json={"domain": f"d{uuid.uuid4().hex[:10]}.cloudonix.net"})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def make_rule(account: Account, **body: Any) -> dict[str, Any]:
    r = await account.post(RULES, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def make_viewer(account: Account) -> Account:
    email = f"v{account.email}"
    created = await account.post(
        "/api/users", json={"name": "V", "email": email, "password": "viewer pass 1", "role": "viewer"}
    )
    assert created.status_code == 201, created.text
    login = await account.client.post("/api/login", json={"email": email, "password": "viewer pass 1"})
    body = login.json()
    return Account(
        client=account.client, token=body["token"], user=body["user"], email=email, password="viewer pass 1"
    )


async def test_crud_and_order(account: Account) -> None:
    agent = await make_agent(account)
    group = await make_group(account)
    late = await make_rule(account, pattern="*", target_type="group", target_id=group["id"], priority=500)
    first = await make_rule(
        account, name="US", pattern="+1 555*", target_type="agent", target_id=agent["id"], priority=10
    )
    same = await make_rule(
        account, pattern="+15551234567", target_type="agent", target_id=agent["id"], priority=10
    )
    assert first["pattern"] == "+1 555*"
    assert first["enabled"] is True
    assert first["domain_id"] is None
    assert first["tenant_id"] == account.tenant_id

    listed = (await account.get(RULES)).json()
    assert [r["id"] for r in listed["data"]] == [first["id"], same["id"], late["id"]]
    assert listed["meta"]["total"] == 3
    assert listed["meta"]["per_page"] == 100
    page2 = (await account.get(RULES, params={"per_page": 2, "page": 2})).json()
    assert [r["id"] for r in page2["data"]] == [late["id"]]
    assert (await account.get(RULES, params={"per_page": 101})).status_code in (400, 422)
    only_groups = (await account.get(RULES, params={"target_type": "group"})).json()
    assert [r["id"] for r in only_groups["data"]] == [late["id"]]
    found = (await account.get(RULES, params={"search": "US"})).json()
    assert [r["id"] for r in found["data"]] == [first["id"]]

    r = await account.put(f"{RULES}/{first['id']}", json={"enabled": False, "caller_pattern": "+44*"})
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is False
    assert r.json()["caller_pattern"] == "+44*"
    assert r.json()["pattern"] == "+1 555*"  # partial update keeps the rest
    assert (await account.get(RULES, params={"enabled": "false"})).json()["meta"]["total"] == 1

    assert (await account.delete(f"{RULES}/{first['id']}")).status_code == 204
    assert (await account.get(f"{RULES}/{first['id']}")).status_code == 404


async def test_validation_errors_name_the_field(account: Account) -> None:
    agent = await make_agent(account)
    base = {"pattern": "+1555*", "target_type": "agent", "target_id": agent["id"]}
    cases = [
        ({**base, "pattern": "re:(a+)+"}, "pattern"),
        ({**base, "pattern": "re:(\\d*)*"}, "pattern"),
        ({**base, "pattern": "re:[0-9"}, "pattern"),
        ({**base, "pattern": "1*2"}, "pattern"),
        ({**base, "pattern": "   "}, "pattern"),
        ({**base, "caller_pattern": "re:("}, "caller_pattern"),
        ({**base, "target_id": 999999999}, "target_id"),
        ({**base, "target_type": "group"}, "target_id"),  # the agent id is not a group
        ({**base, "target_type": "queue"}, "target_type"),
        ({**base, "priority": 0}, "priority"),
        ({**base, "priority": 100001}, "priority"),
        ({**base, "domain_id": 999999999}, "domain_id"),
    ]
    for body, field in cases:
        r = await account.post(RULES, json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in fields(r), (body, r.json())
    rule = await make_rule(account, **base)
    r = await account.put(f"{RULES}/{rule['id']}", json={"pattern": "re:(\\d|\\d\\d)+"})
    assert r.status_code == 422
    assert "pattern" in fields(r)
    r = await account.put(f"{RULES}/{rule['id']}", json={"target_type": "group"})
    assert r.status_code == 422
    assert "target_id" in fields(r)


async def test_other_tenants_ids_are_refused_and_invisible(account: Account, other_account: Account) -> None:
    mine_agent = await make_agent(account)
    mine_domain = await make_domain(account)
    theirs_agent = await make_agent(other_account)
    theirs_group = await make_group(other_account)
    theirs_domain = await make_domain(other_account)
    base = {"pattern": "*", "target_type": "agent", "target_id": mine_agent["id"]}
    for body, field in [
        ({**base, "target_id": theirs_agent["id"]}, "target_id"),
        ({**base, "target_type": "group", "target_id": theirs_group["id"]}, "target_id"),
        ({**base, "domain_id": theirs_domain["id"]}, "domain_id"),
    ]:
        r = await account.post(RULES, json=body)
        assert r.status_code == 422, r.text
        assert field in fields(r)
    rule = await make_rule(account, **base, domain_id=mine_domain["id"])
    r = await account.put(f"{RULES}/{rule['id']}", json={"target_id": theirs_agent["id"]})
    assert r.status_code == 422

    # The other tenant sees nothing of ours, and our ids answer 404 on every route.
    assert (await other_account.get(RULES)).json()["meta"]["total"] == 0
    assert (await other_account.get(f"{RULES}/{rule['id']}")).status_code == 404
    assert (await other_account.put(f"{RULES}/{rule['id']}", json={"enabled": False})).status_code == 404
    assert (await other_account.delete(f"{RULES}/{rule['id']}")).status_code == 404
    dry = await other_account.post(f"{RULES}/test", json={"to": "+15551234567"})
    assert dry.json()["matched"] is False
    r = await other_account.post(f"{RULES}/test", json={"to": "+1", "domain": mine_domain["domain"]})
    assert r.status_code == 422
    assert "domain" in fields(r)
    got = (await account.get(f"{RULES}/{rule['id']}")).json()
    assert got["enabled"] is True


async def test_viewer_reads_but_cannot_write(account: Account) -> None:
    agent = await make_agent(account)
    rule = await make_rule(account, pattern="*", target_type="agent", target_id=agent["id"])
    viewer = await make_viewer(account)
    assert (await viewer.get(RULES)).status_code == 200
    body = {"pattern": "*", "target_type": "agent", "target_id": agent["id"]}
    assert (await viewer.post(RULES, json=body)).status_code == 403
    assert (await viewer.put(f"{RULES}/{rule['id']}", json={"enabled": False})).status_code == 403
    assert (await viewer.delete(f"{RULES}/{rule['id']}")).status_code == 403


async def test_viewer_may_run_the_dry_run_which_changes_nothing(account: Account) -> None:
    agent = await make_agent(account, "Alice")
    rule = await make_rule(account, pattern="+1555*", target_type="agent", target_id=agent["id"])
    version = (await account.get(f"{RULES}/{rule['id']}")).json()
    viewer = await make_viewer(account)
    r = await viewer.post(f"{RULES}/test", json={"to": "+15551234567"})
    assert r.status_code == 200, r.text
    assert r.json()["rule"]["id"] == rule["id"]
    assert r.json()["target"] == {"type": "agent", "id": agent["id"], "name": "Alice"}
    # Still refused every write, and the dry run left the rule as it was.
    assert (
        await viewer.post(RULES, json={"pattern": "*", "target_type": "agent", "target_id": agent["id"]})
    ).status_code == 403
    assert (await viewer.put(f"{RULES}/{rule['id']}", json={"enabled": False})).status_code == 403
    assert (await account.get(f"{RULES}/{rule['id']}")).json() == version


async def test_dry_run_uses_the_engines_matching(account: Account) -> None:
    agent = await make_agent(account, "Alice")
    group = await make_group(account, "Night")
    domain = await make_domain(account)
    other_domain = await make_domain(account)
    exact = await make_rule(
        account, pattern="+1 (555) 123-4567", target_type="agent", target_id=agent["id"], priority=10
    )
    vip = await make_rule(
        account,
        pattern="+1555*",
        caller_pattern="+44*",
        target_type="group",
        target_id=group["id"],
        priority=5,
    )
    scoped = await make_rule(
        account, pattern="*", target_type="group", target_id=group["id"], priority=50, domain_id=domain["id"]
    )
    await make_rule(
        account, pattern="*", target_type="agent", target_id=agent["id"], priority=60, enabled=False
    )

    r = await account.post(f"{RULES}/test", json={"to": "001 555 123 4567", "from": "+1 212 555 0100"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matched"] is True
    assert body["rule"]["id"] == exact["id"]
    assert body["target"] == {"type": "agent", "id": agent["id"], "name": "Alice"}
    assert body["normalized_to"] == "+15551234567"
    assert body["normalized_from"] == "+12125550100"

    body = (await account.post(f"{RULES}/test", json={"to": "+15551234567", "from": "0044 20 7123"})).json()
    assert body["rule"]["id"] == vip["id"]
    assert body["target"]["name"] == "Night"

    none = (await account.post(f"{RULES}/test", json={"to": "+4420"})).json()
    assert none.pop("at")  # the instant schedules were checked at (now)
    assert none == {
        "matched": False,
        "rule": None,
        "target": None,
        "normalized_to": "+4420",
        "normalized_from": "",
        "split": None,
    }
    via = (await account.post(f"{RULES}/test", json={"to": "+4420", "domain": domain["domain"]})).json()
    assert via["rule"]["id"] == scoped["id"]
    elsewhere = (
        await account.post(f"{RULES}/test", json={"to": "+4420", "domain": other_domain["domain"]})
    ).json()
    assert elsewhere["matched"] is False
    r = await account.post(f"{RULES}/test", json={"to": "+4420", "domain": "nope.example"})
    assert r.status_code == 422
    assert "domain" in fields(r)
    assert (await account.post(f"{RULES}/test", json={})).status_code in (400, 422)


async def test_deleting_a_targeted_agent_is_refused(account: Account) -> None:
    agent = await make_agent(account)
    rule = await make_rule(account, name="main", pattern="*", target_type="agent", target_id=agent["id"])
    r = await account.delete(f"/api/voice-agents/{agent['id']}")
    assert r.status_code == 409
    assert f"#{rule['id']}" in r.json()["detail"]
