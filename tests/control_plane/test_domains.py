"""Cloudonix domains (SPEC §2.1, §3 Auth): webhook keys shown once and stored as sha256 hashes, webhook
URLs, one owner per name, hostname/CIDR/rate/alias validation, rotate-key, delete (with the inbound rules
limited to the domain), config-version bumps, roles and tenant isolation."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.control_plane.conftest import Account
from tests.control_plane.test_tenant_settings import config_state, fields, viewer_of

ENGINE = "http://127.0.0.1:8080"


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def unique_name(prefix: str = "acme") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}.cloudonix.net"


async def make_domain(account: Account, **overrides: Any) -> dict[str, Any]:
    response = await account.post("/api/domains", json={"domain": unique_name(), **overrides})
    assert response.status_code == 201, response.text
    return dict(response.json())


def stored(db: Engine, domain_id: int) -> dict[str, Any]:
    with db.connect() as conn:
        row = conn.execute(text("SELECT * FROM domains WHERE id = :i"), {"i": domain_id}).mappings().one()
    return dict(row)


async def test_create_shows_the_key_once_and_stores_only_its_hash(account: Account, db: Engine) -> None:
    name = unique_name("Upper")
    before = config_state(db, account.tenant_id)
    response = await account.post("/api/domains", json={"domain": f"  {name.upper()}. "})
    assert response.status_code == 201, response.text
    body = response.json()
    key = body["webhook_key"]
    assert len(key) >= 40
    assert body["domain"] == name.lower()
    assert body["key_hint"] == key[-4:]
    assert body["tenant_id"] == account.tenant_id
    assert body["allowed_networks"] == []
    assert body["aliases"] == []
    assert body["max_requests_per_second"] is None
    assert body["webhook_urls"] == {
        "voice_application": f"{ENGINE}/api/voice/application/{name.lower()}",
        "dial_status": f"{ENGINE}/api/voice/application/{name.lower()}/dial-status",
        "session_update": f"{ENGINE}/api/voice/session/update/{name.lower()}",
        "cdr": f"{ENGINE}/api/voice/session/cdr/{name.lower()}",
    }
    row = stored(db, body["id"])
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in {str(v) for v in row.values()}
    assert config_state(db, account.tenant_id) == (before[0] + 1, before[1] + 1)

    got = await account.get(f"/api/domains/{body['id']}")
    assert got.status_code == 200
    assert "webhook_key" not in got.json()
    assert key not in got.text
    assert got.json() == {k: v for k, v in body.items() if k != "webhook_key"}
    listing = await account.get("/api/domains")
    assert listing.status_code == 200
    assert key not in listing.text
    assert [d["id"] for d in listing.json()["data"]] == [body["id"]]
    assert listing.json()["meta"]["total"] == 1


async def test_create_with_options(account: Account) -> None:
    body = await make_domain(
        account,
        allowed_networks=["10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "10.1.2.3/8"],
        max_requests_per_second=50,
        aliases=["App-123", "my_app.v2"],
    )
    assert body["allowed_networks"] == ["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"]
    assert body["max_requests_per_second"] == 50
    assert body["aliases"] == ["app-123", "my_app.v2"]


async def test_list_is_paginated(account: Account) -> None:
    ids = [(await make_domain(account))["id"] for _ in range(3)]
    page = (await account.get("/api/domains", params={"per_page": 2, "page": 2})).json()
    assert [d["id"] for d in page["data"]] == ids[2:]
    assert page["meta"] == {"current_page": 2, "per_page": 2, "total": 3, "last_page": 2, "from": 3, "to": 3}
    assert (await account.get("/api/domains", params={"per_page": 101})).status_code in (400, 422)


async def test_a_name_belongs_to_one_tenant(account: Account, other_account: Account) -> None:
    name = unique_name()
    assert (await account.post("/api/domains", json={"domain": name})).status_code == 201
    theirs = await other_account.post("/api/domains", json={"domain": name.upper()})
    assert theirs.status_code == 409
    assert "already registered" in theirs.json()["detail"]
    assert str(account.tenant_id) not in theirs.json()["detail"]
    again = await account.post("/api/domains", json={"domain": name})
    assert again.status_code == 409
    assert (await other_account.get("/api/domains")).json()["data"] == []


INVALID_NAMES = [
    "",
    "   ",
    "-bad.example.com",
    "bad-.example.com",
    "a..b.com",
    "under_score.com",
    "sp ace.com",
    "x" * 64 + ".com",
    "a.b/c",
    "http://x.com",
    "1.2.3.4",
    "ünïcode.com",
    ("a" * 60 + ".") * 5 + "com",
]
INVALID_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"allowed_networks": ["10.0.0.0/33"]}, "allowed_networks.0"),
    ({"allowed_networks": ["10.0.0.0/8", "not-a-network"]}, "allowed_networks.1"),
    ({"allowed_networks": "10.0.0.0/8"}, "allowed_networks"),
    ({"max_requests_per_second": 0}, "max_requests_per_second"),
    ({"max_requests_per_second": 100001}, "max_requests_per_second"),
    ({"aliases": ["has/slash"]}, "aliases.0"),
    ({"aliases": ["ok", "OK"]}, "aliases.1"),
    ({"webhook_key": "mine"}, ""),
]


async def test_invalid_host_names_answer_422(account: Account) -> None:
    for name in INVALID_NAMES:
        response = await account.post("/api/domains", json={"domain": name})
        assert response.status_code == 422, (name, response.text)
        assert fields(response) == {"domain"}, name


async def test_invalid_domain_fields_answer_422(account: Account) -> None:
    for body, field in INVALID_FIELDS:
        response = await account.post("/api/domains", json={"domain": unique_name(), **body})
        assert response.status_code == 422, (body, response.text)
        if field:
            assert field in fields(response), response.json()
    assert (await account.get("/api/domains")).json()["meta"]["total"] == 0


async def test_update_networks_rate_and_aliases(account: Account, db: Engine) -> None:
    domain = await make_domain(account)
    url = f"/api/domains/{domain['id']}"
    before = config_state(db, account.tenant_id)
    response = await account.put(
        url, json={"allowed_networks": ["203.0.113.0/24"], "max_requests_per_second": 1}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["allowed_networks"] == ["203.0.113.0/24"]
    assert body["max_requests_per_second"] == 1
    assert "webhook_key" not in body
    assert config_state(db, account.tenant_id)[0] == before[0] + 1

    response = await account.put(url, json={"max_requests_per_second": None, "aliases": ["app-1"]})
    body = response.json()
    assert body["max_requests_per_second"] is None
    assert body["allowed_networks"] == ["203.0.113.0/24"]  # untouched
    assert body["aliases"] == ["app-1"]
    assert (await account.get(url)).json() == body

    bad = await account.put(url, json={"allowed_networks": ["300.1.1.1/24"]})
    assert bad.status_code == 422
    assert fields(bad) == {"allowed_networks.0"}
    assert (await account.put(url, json={"max_requests_per_second": 100000})).status_code == 200
    assert (await account.put(url, json={"domain": "renamed.example.com"})).status_code == 422


async def test_aliases_are_unique_across_all_domains(account: Account, other_account: Account) -> None:
    alias = f"app-{uuid.uuid4().hex[:8]}"
    mine = await make_domain(account, aliases=[alias])
    # Another tenant, another domain of the same tenant: both refused, without saying whose.
    clash = await other_account.post(
        "/api/domains", json={"domain": unique_name(), "aliases": [alias.upper()]}
    )
    assert clash.status_code == 409
    assert "already registered" in clash.json()["detail"]
    second = await make_domain(account)
    clash = await account.put(f"/api/domains/{second['id']}", json={"aliases": [alias]})
    assert clash.status_code == 409
    # An alias may not be another domain's name, nor a domain take an existing alias as its name.
    clash = await account.put(f"/api/domains/{second['id']}", json={"aliases": [mine["domain"]]})
    assert clash.status_code == 409
    own = await account.put(f"/api/domains/{second['id']}", json={"aliases": [second["domain"]]})
    assert own.status_code == 422
    assert fields(own) == {"aliases.0"}
    taken_name = await other_account.post("/api/domains", json={"domain": alias})
    assert taken_name.status_code == 409
    # Saving a domain's own aliases again is fine.
    same = await account.put(f"/api/domains/{mine['id']}", json={"aliases": [alias, "extra-one"]})
    assert same.status_code == 200, same.text


async def test_rotate_key_replaces_the_hash(account: Account, db: Engine) -> None:
    domain = await make_domain(account)
    old_key = domain["webhook_key"]
    before = config_state(db, account.tenant_id)
    response = await account.post(f"/api/domains/{domain['id']}/rotate-key")
    assert response.status_code == 200, response.text
    body = response.json()
    new_key = body["webhook_key"]
    assert new_key != old_key
    assert body["key_hint"] == new_key[-4:]
    assert body["id"] == domain["id"]
    assert body["domain"] == domain["domain"]
    row = stored(db, domain["id"])
    assert row["key_hash"] == hashlib.sha256(new_key.encode()).hexdigest()
    assert row["key_hash"] != hashlib.sha256(old_key.encode()).hexdigest()
    assert config_state(db, account.tenant_id) == (before[0] + 1, before[1] + 1)
    got = await account.get(f"/api/domains/{domain['id']}")
    assert new_key not in got.text
    assert got.json()["key_hint"] == new_key[-4:]


async def test_delete_takes_its_inbound_rules(account: Account, db: Engine) -> None:
    domain = await make_domain(account)
    keep = await make_domain(account)
    with db.begin() as conn:
        for domain_id in (domain["id"], keep["id"], None):
            conn.execute(
                text(
                    "INSERT INTO inbound_routing_rules (tenant_id, pattern, target_type, target_id, priority,"
                    " enabled, domain_id, created_at, updated_at)"
                    " VALUES (:t, '*', 'agent', 1, 100, true, :d, now(), now())"
                ),
                {"t": account.tenant_id, "d": domain_id},
            )
    before = config_state(db, account.tenant_id)
    response = await account.delete(f"/api/domains/{domain['id']}")
    assert response.status_code == 204, response.text
    assert (await account.get(f"/api/domains/{domain['id']}")).status_code == 404
    assert config_state(db, account.tenant_id) == (before[0] + 1, before[1] + 1)
    with db.connect() as conn:
        left = (
            conn.execute(
                text("SELECT domain_id FROM inbound_routing_rules WHERE tenant_id = :t ORDER BY id"),
                {"t": account.tenant_id},
            )
            .scalars()
            .all()
        )
    assert left == [keep["id"], None]
    # The name is free again.
    again = await account.post("/api/domains", json={"domain": domain["domain"]})
    assert again.status_code == 201


async def test_other_tenants_get_404_on_every_route(
    account: Account, other_account: Account, db: Engine
) -> None:
    domain = await make_domain(account, aliases=[f"app-{uuid.uuid4().hex[:8]}"])
    url = f"/api/domains/{domain['id']}"
    before = stored(db, domain["id"])
    calls = [
        other_account.get(url),
        other_account.put(url, json={"allowed_networks": ["0.0.0.0/0"]}),
        other_account.post(f"{url}/rotate-key"),
        other_account.delete(url),
    ]
    for call in calls:
        response = await call
        assert response.status_code == 404, response.text
        assert domain["domain"] not in response.text
    assert (await other_account.get("/api/domains")).json()["data"] == []
    assert stored(db, domain["id"]) == before
    assert (await account.get(url)).json()["allowed_networks"] == []
    assert (await account.get("/api/domains/999999999")).status_code == 404


async def test_viewer_reads_but_cannot_write(account: Account) -> None:
    domain = await make_domain(account)
    viewer = await viewer_of(account)
    url = f"/api/domains/{domain['id']}"
    assert (await viewer.get("/api/domains")).status_code == 200
    assert (await viewer.get(url)).status_code == 200
    assert (await viewer.post("/api/domains", json={"domain": unique_name()})).status_code == 403
    assert (await viewer.put(url, json={"aliases": ["x1"]})).status_code == 403
    assert (await viewer.post(f"{url}/rotate-key")).status_code == 403
    assert (await viewer.delete(url)).status_code == 403
    assert (await account.get(url)).json() == {k: v for k, v in domain.items() if k != "webhook_key"}
