"""Outbound routing rules (SPEC §2.5): CRUD, pattern and trunk validation, isolation."""

from __future__ import annotations

from typing import Any

from tests.control_plane.conftest import Account
from tests.control_plane.test_inbound_rules import fields, make_viewer
from tests.control_plane.test_trunks import make_trunk

RULES = "/api/outbound-routing-rules"


async def make_rule(account: Account, **body: Any) -> dict[str, Any]:
    r = await account.post(RULES, json={"name": "rule", "destination_pattern": "*", **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_crud_and_order(account: Account) -> None:
    a = await make_trunk(account, "a")
    b = await make_trunk(account, "b")
    uk = await make_rule(
        account,
        name="UK",
        caller_id="1*",
        destination_pattern="0044*",
        trunk_ids=[b["id"], a["id"]],
        caller_id_override="+12125550100",
        strip_prefix="00",
        add_prefix="+",
        priority=10,
    )
    assert uk["trunk_ids"] == [b["id"], a["id"]]  # order kept
    assert uk["caller_id_override"] == "+12125550100"
    rest = await make_rule(account, name="rest", priority=1000)
    listed = (await account.get(RULES)).json()
    assert [r["id"] for r in listed["data"]] == [uk["id"], rest["id"]]
    assert (await account.get(RULES, params={"trunk_id": a["id"]})).json()["meta"]["total"] == 1
    assert (await account.get(RULES, params={"search": "UK"})).json()["meta"]["total"] == 1
    r = await account.put(f"{RULES}/{uk['id']}", json={"trunk_ids": [a["id"]], "strip_prefix": None})
    assert r.status_code == 200, r.text
    assert r.json()["trunk_ids"] == [a["id"]]
    assert r.json()["strip_prefix"] is None
    assert r.json()["destination_pattern"] == "0044*"
    assert (await account.delete(f"{RULES}/{uk['id']}")).status_code == 204
    assert (await account.get(f"{RULES}/{uk['id']}")).status_code == 404
    # b is free now.
    assert (await account.delete(f"/api/trunks/{b['id']}")).status_code == 204


async def test_validation(account: Account) -> None:
    trunk = await make_trunk(account)
    base = {"name": "r", "destination_pattern": "+1*", "trunk_ids": [trunk["id"]]}
    for body, field in [
        ({**base, "destination_pattern": "re:(a+)+"}, "destination_pattern"),
        ({**base, "destination_pattern": " "}, "destination_pattern"),
        ({**base, "caller_id": "re:["}, "caller_id"),
        ({**base, "trunk_ids": [999999999]}, "trunk_ids"),
        ({**base, "trunk_ids": [trunk["id"], trunk["id"]]}, "trunk_ids"),
        ({**base, "caller_id_override": "<x>"}, "caller_id_override"),
        ({**base, "name": ""}, "name"),
        ({**base, "priority": -1}, "priority"),
    ]:
        r = await account.post(RULES, json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in fields(r), (body, r.json())
    rule = await make_rule(account, **base)
    r = await account.put(f"{RULES}/{rule['id']}", json={"destination_pattern": "re:(\\d*)*"})
    assert r.status_code == 422
    assert "destination_pattern" in fields(r)


async def test_isolation_and_viewer(account: Account, other_account: Account) -> None:
    mine = await make_trunk(account)
    theirs = await make_trunk(other_account)
    r = await account.post(RULES, json={"name": "x", "destination_pattern": "*", "trunk_ids": [theirs["id"]]})
    assert r.status_code == 422
    assert "trunk_ids" in fields(r)
    rule = await make_rule(account, trunk_ids=[mine["id"]])
    r = await account.put(f"{RULES}/{rule['id']}", json={"trunk_ids": [mine["id"], theirs["id"]]})
    assert r.status_code == 422
    assert (await other_account.get(RULES)).json()["meta"]["total"] == 0
    assert (await other_account.get(f"{RULES}/{rule['id']}")).status_code == 404
    assert (await other_account.put(f"{RULES}/{rule['id']}", json={"name": "y"})).status_code == 404
    assert (await other_account.delete(f"{RULES}/{rule['id']}")).status_code == 404
    viewer = await make_viewer(account)
    assert (await viewer.get(RULES)).status_code == 200
    assert (await viewer.put(f"{RULES}/{rule['id']}", json={"name": "y"})).status_code == 403
    assert (await account.get(f"{RULES}/{rule['id']}")).json()["trunk_ids"] == [mine["id"]]
