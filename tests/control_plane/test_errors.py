"""Problem+json bodies name the offending field, whatever layer caught the error."""

from __future__ import annotations

from tests.control_plane.conftest import Account


async def test_missing_and_unknown_body_fields_are_named(account: Account) -> None:
    missing = await account.post(
        "/api/voice-agents", json={"provider": "vapi", "service_value": "+14155550100"}
    )
    assert missing.status_code == 422
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in missing.json()["errors"]] == ["name"]
    unknown = await account.post(
        "/api/voice-agents", json={"name": "a", "provider": "vapi", "service_value": "+14155550100", "zzz": 1}
    )
    assert unknown.status_code == 422
    assert [e["field"] for e in unknown.json()["errors"]] == ["zzz"]


async def test_wrong_types_and_nested_paths_are_named(account: Account) -> None:
    wrong = await account.post(
        "/api/voice-agents", json={"name": 5, "provider": "vapi", "service_value": "x"}
    )
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["field"] == "name"
    nested = await account.post("/api/agent-groups", json={"name": "g", "settings": {"window_hours": 0}})
    assert nested.status_code == 422
    assert nested.json()["errors"][0]["field"] == "settings.window_hours"


async def test_broken_json_is_a_clean_4xx(account: Account) -> None:
    response = await account.client.post(
        "/api/voice-agents",
        content=b"{not json",
        headers={**account.headers, "Content-Type": "application/json"},
    )
    assert response.status_code in (400, 422)
    assert response.json()["status"] == response.status_code


async def test_unknown_route_and_method_are_problems(account: Account) -> None:
    missing = await account.get("/api/nope")
    assert missing.status_code == 404
    assert missing.json()["title"] == "Not Found"
    not_allowed = await account.delete("/api/providers")
    assert not_allowed.status_code == 405
