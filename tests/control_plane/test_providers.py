"""The provider catalogue route (SPEC §4) and its /voice-agents alias."""

from __future__ import annotations

from tests.control_plane.conftest import Account

SEED = [
    "vapi", "synthflow", "dasha", "superdash.ai", "elevenlabs", "deepvox", "relayhawk", "voicehub",
    "retell-udp", "retell-tcp", "retell-tls", "retell", "fonio", "sigmamind", "modon", "puretalk",
    "millis-us", "millis-eu",
]  # fmt: skip
EXTRA = [
    "ultravox", "vapi-udp", "vapi-noproxy", "deepvox-sandbox", "modon-sandbox", "puretalk-tcp", "rapida",
    "smallest", "call2me", "call2me-tcp", "call2me-tls", "revring", "openai", "vogent", "omnidim.im",
    "ringg", "ringg-tcp", "ringg-tls", "vomyra", "telnyx", "telnyx-udp", "telnyx-tcp", "telnyx-tls",
    "sip", "stream",
]  # fmt: skip


async def test_catalogue_lists_every_provider(account: Account) -> None:
    response = await account.get("/api/providers")
    assert response.status_code == 200
    providers = {p["key"]: p for p in response.json()["data"]}
    assert set(SEED) | set(EXTRA) <= set(providers)
    assert all(providers[k]["seed"] for k in SEED)
    for p in providers.values():
        assert p["name"]
        assert p["service_value"]
        assert p["cxml"] in {"service", "sip", "stream"}


async def test_credential_rules(account: Account) -> None:
    providers = {p["key"]: p for p in (await account.get("/api/providers")).json()["data"]}
    needs = {k: (p["requires_username"], p["requires_password"]) for k, p in providers.items()}
    assert needs["synthflow"] == (True, True)
    assert needs["superdash.ai"] == (True, True)
    assert needs["elevenlabs"] == (True, False)
    assert needs["vapi"] == (False, False)


async def test_alias_answers_the_same(account: Account) -> None:
    a = await account.get("/api/providers")
    b = await account.get("/api/voice-agents/providers")
    assert b.status_code == 200
    assert a.json() == b.json()


async def test_needs_a_token(account: Account) -> None:
    assert (await account.client.get("/api/providers")).status_code == 401
