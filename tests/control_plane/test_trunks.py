"""Trunks (SPEC §2.5): CRUD, one default per tenant, deletes guarded by outbound rules, isolation."""

from __future__ import annotations

from typing import Any

from tests.control_plane.conftest import Account
from tests.control_plane.test_inbound_rules import fields, make_viewer

TRUNKS = "/api/trunks"


async def make_trunk(account: Account, name: str = "carrier", **body: Any) -> dict[str, Any]:
    r = await account.post(TRUNKS, json={"name": name, "cloudonix_trunk": f"{name}-out", **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_crud(account: Account) -> None:
    trunk = await make_trunk(account, description="main carrier", priority=5)
    assert trunk["cloudonix_trunk"] == "carrier-out"
    assert trunk["is_default"] is False
    assert trunk["enabled"] is True
    assert trunk["priority"] == 5
    second = await make_trunk(account, "backup")
    listed = (await account.get(TRUNKS)).json()
    assert [t["id"] for t in listed["data"]] == [trunk["id"], second["id"]]
    assert listed["meta"]["total"] == 2
    r = await account.put(f"{TRUNKS}/{trunk['id']}", json={"enabled": False, "description": None})
    assert r.status_code == 200
    assert r.json()["enabled"] is False
    assert r.json()["description"] is None
    assert r.json()["name"] == "carrier"
    assert (await account.get(TRUNKS, params={"enabled": "true"})).json()["meta"]["total"] == 1
    assert (await account.delete(f"{TRUNKS}/{second['id']}")).status_code == 204
    assert (await account.get(f"{TRUNKS}/{second['id']}")).status_code == 404


async def test_validation(account: Account) -> None:
    for body, field in [
        ({"cloudonix_trunk": "x"}, "name"),
        ({"name": "a"}, "cloudonix_trunk"),
        ({"name": " ", "cloudonix_trunk": "x"}, "name"),
        ({"name": "a", "cloudonix_trunk": "x", "priority": 0}, "priority"),
        ({"name": "a", "cloudonix_trunk": "x", "bogus": 1}, "bogus"),
    ]:
        r = await account.post(TRUNKS, json=body)
        assert r.status_code == 422, (body, r.text)
        # Missing/unknown keys are reported by the body decoder, which names them in the message.
        named = fields(r) | {e["message"] for e in r.json()["errors"]}
        assert any(field in n for n in named), (body, r.json())


async def test_one_default_per_tenant(account: Account, other_account: Account) -> None:
    a = await make_trunk(account, "a", is_default=True)
    theirs = await make_trunk(other_account, "x", is_default=True)
    b = await make_trunk(account, "b", is_default=True)
    defaults = [t["id"] for t in (await account.get(TRUNKS)).json()["data"] if t["is_default"]]
    assert defaults == [b["id"]]
    r = await account.put(f"{TRUNKS}/{a['id']}", json={"is_default": True})
    assert r.status_code == 200
    defaults = [t["id"] for t in (await account.get(TRUNKS)).json()["data"] if t["is_default"]]
    assert defaults == [a["id"]]
    # The other tenant's default is untouched.
    assert (await other_account.get(f"{TRUNKS}/{theirs['id']}")).json()["is_default"] is True


async def test_delete_in_use_is_409_naming_the_rules(account: Account) -> None:
    trunk = await make_trunk(account)
    rule = await account.post(
        "/api/outbound-routing-rules",
        json={"name": "UK calls", "destination_pattern": "+44*", "trunk_ids": [trunk["id"]]},
    )
    assert rule.status_code == 201, rule.text
    r = await account.delete(f"{TRUNKS}/{trunk['id']}")
    assert r.status_code == 409
    assert "UK calls" in r.json()["detail"]
    assert f"#{rule.json()['id']}" in r.json()["detail"]
    assert (await account.get(f"{TRUNKS}/{trunk['id']}")).status_code == 200


async def test_isolation_and_viewer(account: Account, other_account: Account) -> None:
    trunk = await make_trunk(account)
    assert (await other_account.get(TRUNKS)).json()["meta"]["total"] == 0
    assert (await other_account.get(f"{TRUNKS}/{trunk['id']}")).status_code == 404
    assert (await other_account.put(f"{TRUNKS}/{trunk['id']}", json={"name": "x"})).status_code == 404
    assert (await other_account.delete(f"{TRUNKS}/{trunk['id']}")).status_code == 404
    viewer = await make_viewer(account)
    assert (await viewer.get(TRUNKS)).status_code == 200
    assert (await viewer.post(TRUNKS, json={"name": "v", "cloudonix_trunk": "v"})).status_code == 403
    assert (await viewer.delete(f"{TRUNKS}/{trunk['id']}")).status_code == 403
    assert (await account.get(f"{TRUNKS}/{trunk['id']}")).json()["name"] == "carrier"
