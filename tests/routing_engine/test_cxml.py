"""Every provider's CXML, parsed back with an XML parser, and the fixed answers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from routing_engine import cxml
from shared.enums import NoAgentAction
from shared.providers import PROVIDERS

ACTION = cxml.escape("https://lb.example/api/voice/application/acme.net/dial-status?attempt=1&agent=7")


def answer_for(provider: str, value: str, creds: cxml.Credentials = cxml.Credentials()) -> ET.Element:
    fragment = cxml.agent_fragment(provider, value, creds)
    return ET.fromstring(cxml.agent_answer(fragment, ACTION, 30, cxml.escape("+14155550100")).encode())


@pytest.mark.parametrize("provider", sorted(k for k, p in PROVIDERS.items() if p.cxml == "service"))
def test_service_providers_render_a_service_element(provider: str) -> None:
    creds = (
        cxml.Credentials(username="u<1>", password='p"&w')
        if PROVIDERS[provider].requires_username
        else cxml.Credentials()
    )
    root = answer_for(provider, "+12125550123", creds)
    dial = root.find("Dial")
    assert dial is not None
    assert (
        dial.get("action")
        == "https://lb.example/api/voice/application/acme.net/dial-status?attempt=1&agent=7"
    )
    assert dial.get("method") == "POST"
    assert dial.get("timeout") == "30"
    assert dial.get("callerId") == "+14155550100"
    (service,) = list(dial)
    assert service.tag == "Service"
    assert service.get("provider") == provider
    assert service.text == "+12125550123"
    if PROVIDERS[provider].requires_username:
        assert service.get("username") == "u<1>"
        assert service.get("password") == 'p"&w'
    else:
        assert "username" not in service.attrib


def test_sip_agent_renders_sip_element_with_credentials() -> None:
    root = answer_for(
        "sip", "sip:agent@pbx.example;transport=tls", cxml.Credentials(username="a", password="b")
    )
    (sip,) = list(root.find("Dial"))  # type: ignore[arg-type]
    assert sip.tag == "Sip"
    assert sip.text == "sip:agent@pbx.example;transport=tls"
    assert sip.attrib == {"username": "a", "password": "b"}


def test_stream_agent_renders_connect_stream() -> None:
    root = answer_for("stream", "wss://ai.example/stream?x=1&y=2")
    assert root.find("Dial") is None
    stream = root.find("Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://ai.example/stream?x=1&y=2"


def test_every_catalogue_provider_renders_valid_cxml() -> None:
    for key, info in PROVIDERS.items():
        value = (
            "wss://x.example/s" if info.cxml == "stream" else "sip:a@b" if info.cxml == "sip" else "+15550001"
        )
        root = answer_for(key, value)
        assert root.tag == "Response"


@pytest.mark.parametrize(
    ("action", "tags", "reason"),
    [
        (NoAgentAction.SAY_AND_HANGUP, ["Say", "Hangup"], None),
        (NoAgentAction.REJECT_BUSY, ["Reject"], "busy"),
        (NoAgentAction.REJECT_CONGESTION, ["Reject"], "congestion"),
    ],
)
def test_no_agent_answers(action: NoAgentAction, tags: list[str], reason: str | None) -> None:
    root = ET.fromstring(cxml.no_agent_answer(action, "Sorry & goodbye <3").encode())
    assert [e.tag for e in root] == tags
    if reason:
        assert root[0].get("reason") == reason
    else:
        assert root[0].text == "Sorry & goodbye <3"


def test_outbound_answer_escapes_and_lists_trunks() -> None:
    root = ET.fromstring(cxml.outbound_answer('"1004"', ["carrier-out", "b&b"], "+442071234567").encode())
    dial = root.find("Dial")
    assert dial is not None
    assert dial.get("callerId") == '"1004"'
    assert dial.get("trunks") == "carrier-out,b&b"
    assert dial.findtext("Number") == "+442071234567"


def test_fallback_defaults_to_apology_and_hangup() -> None:
    root = ET.fromstring(cxml.fallback_answer(None).encode())
    assert [e.tag for e in root] == ["Say", "Hangup"]
    custom = cxml.fallback_answer("<Response><Reject/></Response>")
    assert custom.startswith("<?xml")
    assert ET.fromstring(custom.encode())[0].tag == "Reject"


def test_escape_drops_control_characters() -> None:
    assert cxml.escape("a\x00b\x1fc\td") == "abc\td"
    ET.fromstring(f'<a b="{cxml.escape(chr(0) + "<&>")}"/>')
