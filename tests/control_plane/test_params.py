"""Path and query parameters are bounded at the edge (control_plane/params.py): nothing the database
cannot hold reaches it, and a value outside the documented limits is a 422 naming the parameter."""

from __future__ import annotations

import pytest

from control_plane.params import MAX_ID, MAX_PAGE
from tests.control_plane.conftest import Account

TOO_BIG = str(2**63)
HUGE = "9" * 40


@pytest.mark.parametrize(
    "url",
    [
        f"/api/voice-agents/{TOO_BIG}",
        f"/api/voice-agents/{HUGE}",
        f"/api/agent-groups/{TOO_BIG}",
        f"/api/agent-groups/{TOO_BIG}/members",
        f"/api/inbound-routing-rules/{TOO_BIG}",
        f"/api/trunks/{TOO_BIG}",
        f"/api/outbound-routing-rules/{TOO_BIG}",
        f"/api/users/{TOO_BIG}",
        f"/api/cdr/{TOO_BIG}",
    ],
)
async def test_ids_beyond_bigint_are_422_naming_the_field(account: Account, url: str) -> None:
    response = await account.get(url)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"].endswith("_id")


async def test_the_largest_id_is_a_plain_404(account: Account) -> None:
    response = await account.get(f"/api/voice-agents/{MAX_ID}")
    assert response.status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/api/voice-agents",
        "/api/agent-groups",
        "/api/inbound-routing-rules",
        "/api/trunks",
        "/api/outbound-routing-rules",
        "/api/users",
        "/api/cdr",
        "/api/webhook-audit",
    ],
)
async def test_page_search_and_per_page_are_bounded(account: Account, url: str) -> None:
    for params, field in (
        ({"page": str(MAX_PAGE + 1)}, "page"),
        ({"page": TOO_BIG}, "page"),
        ({"page": "0"}, "page"),
        ({"per_page": "1000"}, "per_page"),
    ):
        response = await account.get(url, params=params)
        assert response.status_code == 422, (url, params, response.text)
        assert [e["field"] for e in response.json()["errors"]] == [field]
    last = await account.get(url, params={"page": str(MAX_PAGE)})
    assert last.status_code == 200
    assert last.json()["data"] == []


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/api/voice-agents", "search"),
        ("/api/agent-groups", "search"),
        ("/api/inbound-routing-rules", "search"),
        ("/api/trunks", "search"),
        ("/api/outbound-routing-rules", "search"),
        ("/api/users", "search"),
        ("/api/cdr", "token"),
        ("/api/cdr", "from"),
        ("/api/webhook-audit", "session_token"),
    ],
)
async def test_text_filters_refuse_nul(account: Account, url: str, name: str) -> None:
    response = await account.get(url, params={name: "a\x00b"})
    assert response.status_code == 422, response.text
    # (Litestar names an aliased parameter by its Python name: ``from`` is reported as from_number.)
    assert [e["field"] for e in response.json()["errors"]] == [{"from": "from_number"}.get(name, name)]
    assert (await account.get(url, params={name: "ab"})).status_code == 200


async def test_a_value_the_database_refuses_is_422_not_500(account: Account) -> None:
    """The last resort (control_plane/errors.py: handle_data_error) for what no edge check caught: a
    NUL inside a body's text reaches PostgreSQL, which refuses it."""
    response = await account.post(
        "/api/voice-agents", json={"name": "a\x00b", "provider": "vapi", "service_value": "+14155550100"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
