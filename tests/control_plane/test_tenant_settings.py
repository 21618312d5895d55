"""Tenant settings (SPEC §2.1, §2.7a, §2.9): GET/PUT /api/tenant and its /api/settings alias, partial
merge, validation of ranges, time zone and fallback CXML, config-version bumps, roles and isolation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.control_plane.conftest import Account

DEFAULTS = {
    "timezone": "UTC",
    "no_agent_action": "say_and_hangup",
    "no_agent_message": "We are sorry, no agent is available to take your call. Please try again later.",
    "fallback_cxml": None,
    "retention_days": {"call_records": 365, "cdrs": 365, "webhook_audit": 90},
}
GOOD_CXML = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Sorry.</Say><Hangup/></Response>'


def fields(response: Any) -> set[str]:
    return {e["field"] for e in response.json().get("errors", [])}


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def config_state(db: Engine, tenant_id: int) -> tuple[int, int]:
    """(config_version, outbox rows) of a tenant."""
    with db.connect() as conn:
        version = conn.execute(text("SELECT config_version FROM tenants WHERE id = :t"), {"t": tenant_id})
        outbox = conn.execute(
            text("SELECT count(*) FROM snapshot_outbox WHERE tenant_id = :t"), {"t": tenant_id}
        )
        return int(version.scalar_one()), int(outbox.scalar_one())


async def viewer_of(account: Account) -> Account:
    email = f"viewer-{uuid.uuid4().hex[:8]}@example.com"
    created = await account.post(
        "/api/users", json={"name": "V", "email": email, "password": "viewer-pass-1", "role": "viewer"}
    )
    assert created.status_code == 201, created.text
    login = await account.client.post("/api/login", json={"email": email, "password": "viewer-pass-1"})
    body = login.json()
    return Account(account.client, body["token"], body["user"], email, "viewer-pass-1")


async def test_new_tenant_has_the_default_settings(account: Account) -> None:
    response = await account.get("/api/tenant")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == account.tenant_id
    assert body["name"] == "Admin tenant"
    assert body["settings"] == DEFAULTS
    assert set(body) == {"id", "name", "settings", "created_at", "updated_at"}
    assert (await account.get("/api/settings")).json() == body


async def test_partial_update_merges_onto_current(account: Account, db: Engine) -> None:
    before = config_state(db, account.tenant_id)
    first = await account.put(
        "/api/tenant",
        json={"settings": {"timezone": "Europe/Berlin", "retention_days": {"cdrs": 400}}},
    )
    assert first.status_code == 200, first.text
    settings = first.json()["settings"]
    assert settings["timezone"] == "Europe/Berlin"
    assert settings["retention_days"] == {"call_records": 365, "cdrs": 400, "webhook_audit": 90}
    assert settings["no_agent_action"] == "say_and_hangup"
    after = config_state(db, account.tenant_id)
    assert after == (before[0] + 1, before[1] + 1)

    second = await account.put(
        "/api/settings",
        json={"name": "Acme", "settings": {"no_agent_action": "reject_busy", "fallback_cxml": GOOD_CXML}},
    )
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["name"] == "Acme"
    assert body["settings"]["timezone"] == "Europe/Berlin"  # kept from the first update
    assert body["settings"]["retention_days"]["cdrs"] == 400
    assert body["settings"]["no_agent_action"] == "reject_busy"
    assert body["settings"]["fallback_cxml"] == GOOD_CXML
    assert (await account.get("/api/tenant")).json() == body

    cleared = await account.put("/api/tenant", json={"settings": {"fallback_cxml": None}})
    assert cleared.json()["settings"]["fallback_cxml"] is None


async def test_name_only_change_does_not_bump_the_config(account: Account, db: Engine) -> None:
    before = config_state(db, account.tenant_id)
    response = await account.put("/api/tenant", json={"name": "  Renamed  "})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Renamed"
    assert config_state(db, account.tenant_id) == before
    blank = await account.put("/api/tenant", json={"name": "   "})
    assert blank.status_code == 422
    assert fields(blank) == {"name"}


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"retention_days": {"cdrs": 10}}, "settings.retention_days.cdrs"),
        ({"retention_days": {"call_records": 4000}}, "settings.retention_days.call_records"),
        ({"retention_days": {"webhook_audit": 29}}, "settings.retention_days.webhook_audit"),
        ({"timezone": "Mars/Olympus_Mons"}, "settings.timezone"),
        ({"timezone": "../../etc/passwd"}, "settings.timezone"),
        ({"timezone": "America"}, "settings.timezone"),
        ({"timezone": ""}, "settings.timezone"),
        ({"no_agent_action": "dance"}, "settings.no_agent_action"),
        ({"no_agent_message": "x" * 501}, "settings.no_agent_message"),
        ({"fallback_cxml": "<Response><Say>unclosed</Response>"}, "settings.fallback_cxml"),
        ({"fallback_cxml": "<Hangup/>"}, "settings.fallback_cxml"),
        ({"fallback_cxml": "not xml at all"}, "settings.fallback_cxml"),
        ({"fallback_cxml": "<Response>&undefined;</Response>"}, "settings.fallback_cxml"),
        (
            {"fallback_cxml": '<!DOCTYPE r [<!ENTITY a "aaaa">]><Response>&a;</Response>'},
            "settings.fallback_cxml",
        ),
        ({"fallback_cxml": "<!DOCTYPE Response><Response/>"}, "settings.fallback_cxml"),
        ({"unknown_key": 1}, "settings"),  # msgspec names the object holding it
        ({"retention_days": {"cdrs": "many"}}, "settings.retention_days.cdrs"),
    ],
)
async def test_invalid_settings_answer_422_naming_the_field(
    account: Account, db: Engine, settings: dict[str, Any], field: str
) -> None:
    before = config_state(db, account.tenant_id)
    response = await account.put("/api/tenant", json={"settings": settings})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in fields(response), response.json()
    assert (await account.get("/api/tenant")).json()["settings"] == DEFAULTS
    assert config_state(db, account.tenant_id) == before


async def test_range_edges_are_accepted(account: Account) -> None:
    response = await account.put(
        "/api/tenant",
        json={"settings": {"retention_days": {"call_records": 30, "cdrs": 3650, "webhook_audit": 30}}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["settings"]["retention_days"] == {
        "call_records": 30,
        "cdrs": 3650,
        "webhook_audit": 30,
    }


async def test_unchanged_settings_do_not_bump_the_config(account: Account, db: Engine) -> None:
    before = config_state(db, account.tenant_id)
    response = await account.put("/api/tenant", json={"settings": {"timezone": "UTC"}})
    assert response.status_code == 200
    assert config_state(db, account.tenant_id) == before


async def test_each_tenant_sees_and_changes_only_its_own(account: Account, other_account: Account) -> None:
    await account.put("/api/tenant", json={"name": "Mine", "settings": {"timezone": "Asia/Tokyo"}})
    theirs = (await other_account.get("/api/tenant")).json()
    assert theirs["id"] == other_account.tenant_id
    assert theirs["name"] == "Other tenant"
    assert theirs["settings"]["timezone"] == "UTC"
    await other_account.put("/api/settings", json={"settings": {"timezone": "America/New_York"}})
    assert (await account.get("/api/tenant")).json()["settings"]["timezone"] == "Asia/Tokyo"


async def test_viewer_reads_but_cannot_change(account: Account) -> None:
    viewer = await viewer_of(account)
    assert (await viewer.get("/api/tenant")).status_code == 200
    assert (await viewer.get("/api/settings")).status_code == 200
    for url in ("/api/tenant", "/api/settings"):
        denied = await viewer.put(url, json={"name": "Hijacked"})
        assert denied.status_code == 403
    assert (await account.get("/api/tenant")).json()["name"] == "Admin tenant"


async def test_needs_a_token(account: Account) -> None:
    assert (await account.client.get("/api/tenant")).status_code == 401
    assert (await account.client.put("/api/settings", json={"name": "x"})).status_code == 401
