"""settings.overflow through the API: each step's fields, the group it names (in the tenant, not the
group itself), the number format and cycles are 422s naming the field; a valid chain round-trips and
reaches the snapshot."""

from __future__ import annotations

from typing import Any

import pytest

from tests.control_plane.conftest import Account
from tests.control_plane.test_groups import make_group


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        ([{"type": "queue"}], "settings.overflow[0].type"),
        ([{"type": "group"}], "settings.overflow[0].group_id"),
        ([{"type": "group", "group_id": 999999}], "settings.overflow[0].group_id"),
        ([{"type": "number"}], "settings.overflow[0].number"),
        ([{"type": "number", "number": "call me"}], "settings.overflow[0].number"),
        ([{"type": "number", "number": "+15551234567", "message": "hi"}], "settings.overflow[0].message"),
        ([{"type": "announcement"}], "settings.overflow[0].message"),
        ([{"type": "announcement", "play_url": "ftp://x/y.mp3"}], "settings.overflow[0].play_url"),
        ([{"type": "announcement", "message": "x", "number": "+15551234567"}], "settings.overflow[0].number"),
        ([{"type": "announcement", "message": "x", "extra": 1}], "settings.overflow[0].extra"),
        ([{"type": "announcement", "message": "x"}] * 11, "settings.overflow"),
    ],
)
async def test_bad_overflow_steps_are_422_naming_the_field(
    account: Account, steps: list[dict[str, Any]], field: str
) -> None:
    r = await account.post("/api/agent-groups", json={"name": "G", "settings": {"overflow": steps}})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]


async def test_a_chain_round_trips_and_refuses_itself_and_cycles(account: Account) -> None:
    b = await make_group(account, "B")
    c = await make_group(account, "C", settings={"overflow": [{"type": "group", "group_id": b["id"]}]})
    steps = [
        {"type": "group", "group_id": c["id"]},
        {"type": "number", "number": "+1 (555) 000-1111"},
        {"type": "announcement", "message": "Nobody is free.", "play_url": "https://x.example/a.mp3"},
    ]
    a = await make_group(account, "A", settings={"overflow": steps, "max_attempts": 5})
    assert [s["type"] for s in a["settings"]["overflow"]] == ["group", "number", "announcement"]
    assert a["settings"]["overflow"][0]["group_id"] == c["id"]
    # itself
    r = await account.put(
        f"/api/agent-groups/{a['id']}",
        json={"settings": {"overflow": [{"type": "group", "group_id": a["id"]}]}},
    )
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["settings.overflow[0].group_id"]
    # B -> A closes A -> C -> B -> A
    r = await account.put(
        f"/api/agent-groups/{b['id']}",
        json={
            "settings": {
                "overflow": [{"type": "announcement", "message": "x"}, {"type": "group", "group_id": a["id"]}]
            }
        },
    )
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["settings.overflow[1].group_id"]
    # a chain without a cycle is fine
    r = await account.put(
        f"/api/agent-groups/{b['id']}",
        json={"settings": {"overflow": [{"type": "announcement", "message": "x"}]}},
    )
    assert r.status_code == 200, r.text


async def test_another_tenants_group_is_not_a_step(account: Account, other_account: Account) -> None:
    theirs = await make_group(other_account, "Theirs")
    r = await account.post(
        "/api/agent-groups",
        json={"name": "Mine", "settings": {"overflow": [{"type": "group", "group_id": theirs["id"]}]}},
    )
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["settings.overflow[0].group_id"]
