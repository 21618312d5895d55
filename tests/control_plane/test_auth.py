"""Registration, login, tokens, roles and users."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.control_plane.conftest import Account, register_account


async def test_register_returns_admin_user_and_token(client: AsyncTestClient[Litestar]) -> None:
    account = await register_account(client, name="Jane")
    assert account.user["role"] == "admin"
    assert "|" in account.token
    me = await account.get("/api/user")
    assert me.status_code == 200
    assert me.json()["email"] == account.email


async def test_register_rejects_duplicate_email_with_field_error(account: Account) -> None:
    response = await account.client.post(
        "/api/register",
        json={
            "name": "Again",
            "email": account.email.upper(),
            "password": "12345678",
            "password_confirmation": "12345678",
        },
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == "email"


async def test_register_validates_password_length_and_confirmation(client: AsyncTestClient[Litestar]) -> None:
    short = await client.post(
        "/api/register",
        json={"name": "A", "email": "short@example.com", "password": "1234", "password_confirmation": "1234"},
    )
    assert short.status_code == 422
    assert short.json()["errors"][0]["field"] == "password"
    mismatch = await client.post(
        "/api/register",
        json={
            "name": "A",
            "email": "mm@example.com",
            "password": "12345678",
            "password_confirmation": "87654321",
        },
    )
    assert mismatch.status_code == 422
    assert mismatch.json()["errors"][0]["field"] == "password_confirmation"


async def test_login_and_logout_revokes_token(account: Account) -> None:
    response = await account.client.post(
        "/api/login", json={"email": account.email, "password": account.password}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body["user"]) >= {"id", "name", "email", "tenant_id", "role"}
    token = body["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert (await account.client.post("/api/logout", headers=headers)).status_code == 200
    assert (await account.client.get("/api/user", headers=headers)).status_code == 401
    # The registration token still works.
    assert (await account.get("/api/user")).status_code == 200


async def test_wrong_password_is_401_and_repeated_failures_are_throttled(account: Account) -> None:
    statuses = []
    for _ in range(7):
        r = await account.client.post(
            "/api/login", json={"email": account.email, "password": "wrong-password"}
        )
        statuses.append(r.status_code)
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429, 429]
    # Even the right password waits until the window passes.
    r = await account.client.post("/api/login", json={"email": account.email, "password": account.password})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0


async def test_bad_tokens_are_401(client: AsyncTestClient[Litestar], account: Account) -> None:
    for value in ["", "Bearer", "Bearer nonsense", "Bearer 1|wrong", f"Bearer {account.token}x", "Basic abc"]:
        r = await client.get("/api/user", headers={"Authorization": value})
        assert r.status_code == 401, value
        assert r.json()["status"] == 401


async def test_password_change_revokes_other_tokens(account: Account) -> None:
    login = await account.client.post(
        "/api/login", json={"email": account.email, "password": account.password}
    )
    other = {"Authorization": f"Bearer {login.json()['token']}"}
    wrong = await account.put(
        "/api/user/password",
        json={
            "current_password": "nope-nope",
            "password": "new password 1",
            "password_confirmation": "new password 1",
        },
    )
    assert wrong.status_code == 422
    ok = await account.put(
        "/api/profile/password",
        json={
            "current_password": account.password,
            "password": "new password 1",
            "password_confirmation": "new password 1",
        },
    )
    assert ok.status_code == 200
    assert (await account.client.get("/api/user", headers=other)).status_code == 401
    assert (await account.get("/api/profile")).status_code == 200
    relog = await account.client.post(
        "/api/login", json={"email": account.email, "password": "new password 1"}
    )
    assert relog.status_code == 200


async def test_profile_alias_updates_name(account: Account) -> None:
    r = await account.put("/api/profile", json={"name": "New Name"})
    assert r.status_code == 200
    assert (await account.get("/api/user")).json()["name"] == "New Name"


async def test_viewer_reads_but_cannot_write(account: Account) -> None:
    created = await account.post(
        "/api/users",
        json={"name": "Vera", "email": f"v{account.email}", "password": "viewer pass 1", "role": "viewer"},
    )
    assert created.status_code == 201, created.text
    login = await account.client.post(
        "/api/login", json={"email": f"v{account.email}", "password": "viewer pass 1"}
    )
    viewer = Account(
        client=account.client,
        token=login.json()["token"],
        user=login.json()["user"],
        email=f"v{account.email}",
        password="viewer pass 1",
    )
    assert (await viewer.get("/api/users")).status_code == 200
    denied = await viewer.post(
        "/api/users", json={"name": "X", "email": "x@example.com", "password": "12345678", "role": "viewer"}
    )
    assert denied.status_code == 403
    assert (await viewer.put("/api/profile", json={"name": "Vera V"})).status_code == 200


async def test_users_crud_and_last_admin_is_kept(account: Account) -> None:
    listed = await account.get("/api/users")
    assert listed.json()["meta"]["total"] == 1
    me = account.user["id"]
    r = await account.put(f"/api/users/{me}", json={"role": "viewer"})
    assert r.status_code == 422
    created = await account.post(
        "/api/users",
        json={"name": "Bob", "email": f"b{account.email}", "password": "bob password", "role": "admin"},
    )
    bob = created.json()["id"]
    assert (await account.get(f"/api/users/{bob}")).json()["role"] == "admin"
    assert (await account.delete(f"/api/users/{bob}")).status_code == 204
    assert (await account.get(f"/api/users/{bob}")).status_code == 404
    assert (await account.delete(f"/api/users/{me}")).status_code == 403
