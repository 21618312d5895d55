"""Control-plane fixtures: the real app on the per-run database (migrated with Alembic), a client,
and helpers to register tenants."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import create_engine

import control_plane.db.models  # noqa: F401
from control_plane.app import create_app
from control_plane.db.base import Base
from control_plane.settings import ControlPlaneSettings
from shared.settings import load_settings


@pytest.fixture(scope="session")
def cp_settings(database_url: str, service_env: dict[str, str]) -> ControlPlaneSettings:
    create_schema(database_url)
    return load_settings(ControlPlaneSettings, env=service_env)


def create_schema(database_url: str) -> None:
    """Build the schema from the models (test_migrations checks Alembic builds the same one)."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
    engine.dispose()


@pytest.fixture(scope="session")
def cp_app(cp_settings: ControlPlaneSettings) -> Litestar:
    return create_app(cp_settings)


@pytest.fixture(scope="session")
async def client(cp_app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=cp_app) as c:
        yield c


@dataclass
class Account:
    """A registered tenant admin and a way to call the API as them."""

    client: AsyncTestClient[Litestar]
    token: str
    user: dict[str, Any]
    email: str
    password: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def tenant_id(self) -> int:
        return int(self.user["tenant_id"])

    async def get(self, url: str, **kw: Any) -> Any:
        return await self.client.get(url, headers=self.headers, **kw)

    async def post(self, url: str, json: Any = None, **kw: Any) -> Any:
        return await self.client.post(url, json=json, headers=self.headers, **kw)

    async def put(self, url: str, json: Any = None, **kw: Any) -> Any:
        return await self.client.put(url, json=json, headers=self.headers, **kw)

    async def patch(self, url: str, json: Any = None, **kw: Any) -> Any:
        return await self.client.patch(url, json=json, headers=self.headers, **kw)

    async def delete(self, url: str, **kw: Any) -> Any:
        return await self.client.delete(url, headers=self.headers, **kw)


async def register_account(client: AsyncTestClient[Litestar], name: str = "Admin") -> Account:
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    password = "correct horse battery"
    response = await client.post(
        "/api/register",
        json={
            "name": name,
            "email": email,
            "password": password,
            "password_confirmation": password,
            "tenant_name": f"{name} tenant",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return Account(client=client, token=body["token"], user=body["user"], email=email, password=password)


@pytest.fixture
async def account(client: AsyncTestClient[Litestar]) -> Account:
    """A fresh tenant with its admin, per test."""
    return await register_account(client)


@pytest.fixture
async def other_account(client: AsyncTestClient[Litestar]) -> Account:
    """A second, unrelated tenant."""
    return await register_account(client, name="Other")
