"""Voice agents (SPEC §2.2): CRUD, per-provider validation, write-only encrypted credentials,
pagination and filters, delete guarded by inbound rules, tenant isolation."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.control_plane.conftest import Account

PASSWORD = "s3cret-Pa55word-value"
USERNAME = "api-user-name-xyz"


def fields(response: Any) -> set[str]:
    return {e["field"] for e in response.json().get("errors", [])}


async def make_agent(account: Account, **overrides: Any) -> dict[str, Any]:
    body = {"name": "Support", "provider": "vapi", "service_value": "+14155550100", **overrides}
    response = await account.post("/api/voice-agents", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
def db(database_url: str) -> Any:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


async def test_create_returns_the_original_shape(account: Account) -> None:
    agent = await make_agent(account, metadata={"region": "us-east"})
    assert agent["name"] == "Support"
    assert agent["provider"] == "vapi"
    assert agent["service_value"] == "+14155550100"
    assert agent["enabled"] is True
    assert agent["metadata"] == {"region": "us-east"}
    assert agent["tenant_id"] == account.tenant_id
    assert agent["has_credentials"] is False
    assert agent["created_at"].endswith("Z") or "+00:00" in agent["created_at"]
    got = await account.get(f"/api/voice-agents/{agent['id']}")
    assert got.status_code == 200
    assert got.json() == agent


@pytest.mark.parametrize(
    ("provider", "value"),
    [
        ("vapi", "+14155550100"),
        ("vapi", "asst_12345-abc"),
        ("dasha", "https://dasha.example/agent/1"),
        ("retell-tls", "+442071234567"),
        ("sip", "sip:agent@sip.example.com"),
        ("stream", "wss://stream.example.com/ws"),
        ("telnyx-udp", "+15550001111"),
    ],
)
async def test_valid_service_values_per_provider(account: Account, provider: str, value: str) -> None:
    response = await account.post(
        "/api/voice-agents",
        json={"name": f"{provider}-{value}", "provider": provider, "service_value": value},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("provider", "value"),
    [
        ("vapi", "not a valid id!"),
        ("dasha", "12345"),
        ("synthflow", "https://evil.example.com/agent"),
        ("elevenlabs", "not-a-uuid"),
        ("sip", "agent@host"),
        ("stream", "https://not-a-websocket.example"),
    ],
)
async def test_bad_service_values_answer_422_naming_service_value(
    account: Account, provider: str, value: str
) -> None:
    response = await account.post(
        "/api/voice-agents",
        json={"name": "x", "provider": provider, "service_value": value, "username": "u", "password": "p"},
    )
    assert response.status_code == 422, response.text
    assert fields(response) == {"service_value"}


async def test_provider_specific_ids_accepted_with_credentials(account: Account) -> None:
    await make_agent(
        account,
        name="sf",
        provider="synthflow",
        service_value="https://fine.synthflow.ai/agent/123",
        username="u",
        password="p",
    )
    await make_agent(
        account,
        name="el",
        provider="elevenlabs",
        service_value="123e4567-e89b-12d3-a456-426614174000",
        username="u",
    )


async def test_unknown_provider_is_422(account: Account) -> None:
    response = await account.post(
        "/api/voice-agents", json={"name": "x", "provider": "nope", "service_value": "+14155550100"}
    )
    assert response.status_code == 422
    assert fields(response) == {"provider"}


@pytest.mark.parametrize(
    ("provider", "given", "missing"),
    [
        ("synthflow", {}, {"username", "password"}),
        ("synthflow", {"username": "u"}, {"password"}),
        ("superdash.ai", {"password": "p"}, {"username"}),
        ("elevenlabs", {}, {"username"}),
    ],
)
async def test_providers_requiring_credentials_reject_create_without_them(
    account: Account, provider: str, given: dict[str, str], missing: set[str]
) -> None:
    response = await account.post(
        "/api/voice-agents",
        json={"name": "x", "provider": provider, "service_value": "+14155550100", **given},
    )
    assert response.status_code == 422, response.text
    assert fields(response) == missing


async def test_credentials_are_write_only_and_encrypted_at_rest(account: Account, db: Any) -> None:
    create = await account.post(
        "/api/voice-agents",
        json={
            "name": "Sales",
            "provider": "synthflow",
            "service_value": "+14155550100",
            "username": USERNAME,
            "password": PASSWORD,
        },
    )
    assert create.status_code == 201
    agent_id = create.json()["id"]
    assert create.json()["has_credentials"] is True
    responses = [
        create,
        await account.get(f"/api/voice-agents/{agent_id}"),
        await account.get("/api/voice-agents"),
        await account.put(f"/api/voice-agents/{agent_id}", json={"name": "Sales 2"}),
        await account.patch(f"/api/voice-agents/{agent_id}/toggle"),
        await account.post(f"/api/voice-agents/{agent_id}/validate"),
    ]
    for response in responses:
        assert response.status_code in (200, 201)
        assert PASSWORD not in response.text
        assert USERNAME not in response.text
        assert "password_enc" not in response.text
    with db.connect() as conn:
        row = conn.execute(
            text("SELECT username_enc, password_enc FROM voice_agents WHERE id = :id"), {"id": agent_id}
        ).one()
    assert row.username_enc
    assert row.password_enc
    assert USERNAME not in row.username_enc
    assert PASSWORD not in row.password_enc
    from control_plane.crypto import decrypt
    from control_plane.settings import get_settings

    assert decrypt(get_settings().secret_key, row.password_enc) == PASSWORD


async def test_update_is_partial_and_revalidates_the_result(account: Account) -> None:
    agent = await make_agent(account)
    url = f"/api/voice-agents/{agent['id']}"
    renamed = await account.put(url, json={"name": "Renamed"})
    assert renamed.status_code == 200
    assert renamed.json()["service_value"] == "+14155550100"
    assert renamed.json()["name"] == "Renamed"
    # Switching to a provider that needs credentials without giving them fails...
    bad = await account.patch(url, json={"provider": "synthflow"})
    assert bad.status_code == 422
    assert fields(bad) == {"username", "password"}
    # ...and a value the provider does not accept fails naming service_value.
    bad = await account.patch(url, json={"provider": "sip"})
    assert bad.status_code == 422
    assert fields(bad) == {"service_value"}
    ok = await account.patch(url, json={"provider": "synthflow", "username": "u", "password": "p"})
    assert ok.status_code == 200
    assert ok.json()["has_credentials"] is True
    # An empty password keeps the stored one; null clears it (and synthflow then refuses).
    assert (await account.patch(url, json={"password": ""})).status_code == 200
    cleared = await account.patch(url, json={"password": None})
    assert cleared.status_code == 422
    assert fields(cleared) == {"password"}
    back = await account.patch(
        url, json={"provider": "vapi", "username": None, "password": None, "enabled": False}
    )
    assert back.status_code == 200
    assert back.json()["has_credentials"] is False
    assert back.json()["enabled"] is False
    assert (await account.get(url)).json()["name"] == "Renamed"


async def test_unique_name_per_tenant(account: Account, other_account: Account) -> None:
    await make_agent(account, name="Dup")
    second = await account.post(
        "/api/voice-agents", json={"name": "Dup", "provider": "vapi", "service_value": "+14155550101"}
    )
    assert second.status_code == 422
    assert fields(second) == {"name"}
    other = await make_agent(account, name="Other")
    rename = await account.put(f"/api/voice-agents/{other['id']}", json={"name": "Dup"})
    assert rename.status_code == 422
    assert fields(rename) == {"name"}
    # Another tenant may use the same name.
    await make_agent(other_account, name="Dup")


async def test_metadata_limit_and_unknown_fields(account: Account) -> None:
    big = await account.post(
        "/api/voice-agents",
        json={
            "name": "m",
            "provider": "vapi",
            "service_value": "+14155550100",
            "metadata": {"x": "a" * 17000},
        },
    )
    assert big.status_code == 422
    assert fields(big) == {"metadata"}
    not_object = await account.post(
        "/api/voice-agents",
        json={"name": "m", "provider": "vapi", "service_value": "+14155550100", "metadata": [1]},
    )
    assert not_object.status_code == 422
    unknown = await account.post(
        "/api/voice-agents",
        json={"name": "m", "provider": "vapi", "service_value": "+14155550100", "colour": "red"},
    )
    assert unknown.status_code == 422
    long_name = await account.post(
        "/api/voice-agents", json={"name": "n" * 256, "provider": "vapi", "service_value": "+14155550100"}
    )
    assert long_name.status_code == 422
    assert fields(long_name) == {"name"}


async def test_list_paginates_searches_and_filters(account: Account, other_account: Account) -> None:
    for i in range(5):
        await make_agent(account, name=f"Support {i}", service_value=f"+1415555010{i}")
    await make_agent(account, name="Sales desk", provider="dasha", enabled=False)
    await make_agent(other_account, name="Support elsewhere")

    page = (await account.get("/api/voice-agents", params={"per_page": 2, "page": 2})).json()
    assert page["meta"] == {"current_page": 2, "per_page": 2, "total": 6, "last_page": 3, "from": 3, "to": 4}
    assert [a["name"] for a in page["data"]] == ["Support 2", "Support 3"]

    found = (await account.get("/api/voice-agents", params={"search": "support"})).json()
    assert found["meta"]["total"] == 5
    assert all(a["tenant_id"] == account.tenant_id for a in found["data"])
    disabled = (await account.get("/api/voice-agents", params={"enabled": "false"})).json()
    assert [a["name"] for a in disabled["data"]] == ["Sales desk"]
    dasha = (await account.get("/api/voice-agents", params={"provider": "dasha"})).json()
    assert [a["name"] for a in dasha["data"]] == ["Sales desk"]
    assert (await account.get("/api/voice-agents", params={"per_page": 101})).status_code in (400, 422)
    default = (await account.get("/api/voice-agents")).json()
    assert default["meta"]["per_page"] == 20


async def test_toggle_flips_enabled(account: Account) -> None:
    agent = await make_agent(account)
    url = f"/api/voice-agents/{agent['id']}/toggle"
    first = await account.patch(url)
    assert first.status_code == 200
    assert first.json()["enabled"] is False
    assert (await account.patch(url)).json()["enabled"] is True


async def test_validate_reports_problems_of_the_stored_config(account: Account, db: Any) -> None:
    agent = await make_agent(account)
    ok = await account.post(f"/api/voice-agents/{agent['id']}/validate")
    assert ok.status_code == 200
    assert ok.json() == {"valid": True, "problems": []}
    # A config that became invalid (e.g. imported): the route says what is wrong.
    with db.begin() as conn:
        conn.execute(
            text("UPDATE voice_agents SET provider = 'synthflow', service_value = 'nope' WHERE id = :id"),
            {"id": agent["id"]},
        )
    bad = (await account.post(f"/api/voice-agents/{agent['id']}/validate")).json()
    assert bad["valid"] is False
    assert {p["field"] for p in bad["problems"]} == {"service_value", "username", "password"}


async def test_writes_bump_the_config_version(account: Account, db: Any) -> None:
    def version() -> int:
        with db.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT config_version FROM tenants WHERE id = :id"), {"id": account.tenant_id}
                ).scalar_one()
            )

    before = version()
    agent = await make_agent(account)
    await account.patch(f"/api/voice-agents/{agent['id']}/toggle")
    await account.put(f"/api/voice-agents/{agent['id']}", json={"name": "Z"})
    await account.delete(f"/api/voice-agents/{agent['id']}")
    assert version() == before + 4


async def test_delete_refused_while_a_rule_targets_the_agent(account: Account, db: Any) -> None:
    agent = await make_agent(account)
    with db.begin() as conn:
        rule_id = conn.execute(
            text(
                "INSERT INTO inbound_routing_rules (tenant_id, name, pattern, target_type, target_id, "
                "priority, enabled, created_at, updated_at) VALUES (:t, 'Main line', '+1555*', 'agent', "
                ":a, 1, true, now(), now()) RETURNING id"
            ),
            {"t": account.tenant_id, "a": agent["id"]},
        ).scalar_one()
    refused = await account.delete(f"/api/voice-agents/{agent['id']}")
    assert refused.status_code == 409
    assert f"#{rule_id}" in refused.json()["detail"]
    assert "Main line" in refused.json()["detail"]
    assert (await account.get(f"/api/voice-agents/{agent['id']}")).status_code == 200
    with db.begin() as conn:
        conn.execute(text("DELETE FROM inbound_routing_rules WHERE id = :id"), {"id": rule_id})
    assert (await account.delete(f"/api/voice-agents/{agent['id']}")).status_code == 204
    assert (await account.get(f"/api/voice-agents/{agent['id']}")).status_code == 404


async def test_other_tenants_agents_answer_404_on_every_route(
    account: Account, other_account: Account
) -> None:
    agent = await make_agent(account, provider="synthflow", username=USERNAME, password=PASSWORD)
    url = f"/api/voice-agents/{agent['id']}"
    calls = [
        await other_account.get(url),
        await other_account.put(url, json={"name": "stolen"}),
        await other_account.patch(url, json={"name": "stolen"}),
        await other_account.patch(f"{url}/toggle"),
        await other_account.post(f"{url}/validate"),
        await other_account.delete(url),
    ]
    for response in calls:
        assert response.status_code == 404, response.text
        assert "Support" not in response.text
    listing = (await other_account.get("/api/voice-agents")).json()
    assert listing["data"] == []
    assert (await account.get(url)).json()["name"] == "Support"


async def test_viewer_cannot_write(account: Account) -> None:
    agent = await make_agent(account)
    created = await account.post(
        "/api/users", json={"name": "V", "email": "viewer-agents@example.com", "password": "viewer-pass-1"}
    )
    assert created.status_code == 201
    login = await account.client.post(
        "/api/login", json={"email": "viewer-agents@example.com", "password": "viewer-pass-1"}
    )
    headers = {"Authorization": f"Bearer {login.json()['token']}"}
    client = account.client
    assert (await client.get("/api/voice-agents", headers=headers)).status_code == 200
    assert (
        await client.post(
            "/api/voice-agents",
            json={"name": "v", "provider": "vapi", "service_value": "+14155550100"},
            headers=headers,
        )
    ).status_code == 403
    assert (await client.patch(f"/api/voice-agents/{agent['id']}/toggle", headers=headers)).status_code == 403
    assert (await client.delete(f"/api/voice-agents/{agent['id']}", headers=headers)).status_code == 403
