"""OpenAPI 3.1 (SPEC §2): served at /schema, committed as schemas/control-plane.openapi.json, and the
committed file is current (regenerate with ``python -m control_plane.openapi_export``)."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

from control_plane.openapi_export import OPENAPI_FILE, main, render


def test_committed_openapi_is_current() -> None:
    assert OPENAPI_FILE.is_file(), "missing: run python -m control_plane.openapi_export"
    assert OPENAPI_FILE.read_text(encoding="utf-8") == render(), (
        "schemas/control-plane.openapi.json is stale: run python -m control_plane.openapi_export"
    )
    assert main(["--check"]) == 0


def test_render_is_deterministic() -> None:
    first = render()
    assert first == render()
    assert first.endswith("}\n")


async def test_schema_is_served(client: AsyncTestClient[Litestar]) -> None:
    page = await client.get("/schema")
    assert page.status_code == 200
    document = await client.get("/schema/openapi.json")
    assert document.status_code == 200
    body = document.json()
    assert body["openapi"].startswith("3.1")
    for path in ("/api/tenant", "/api/settings", "/api/domains", "/api/domains/{domain_id}/rotate-key"):
        assert path in body["paths"], path
