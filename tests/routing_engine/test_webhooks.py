"""The webhook parser: every request shape, header fallbacks, and garbage in (hypothesis)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from routing_engine.webhooks import ParseError, VoiceRequest, parse_voice_request
from tests.routing_engine.harness import load_fixture

INBOUND = load_fixture("application-inbound.json")
SESSION = INBOUND["Session"]


def test_json_body_is_parsed() -> None:
    req = parse_voice_request("POST", "application/json", b"", json.dumps(INBOUND).encode(), {})
    assert isinstance(req, VoiceRequest)
    assert req.session == SESSION
    assert req.from_number == "+14155550100"
    assert req.to_number == "+12125550199"
    assert req.direction == "inbound"
    assert req.domain == "acme.cloudonix.net"
    assert req.has_session_data


def test_form_body_and_query_string_are_parsed() -> None:
    flat = {k: v for k, v in INBOUND.items() if isinstance(v, str)}
    form = parse_voice_request(
        "POST", "application/x-www-form-urlencoded", b"attempt=2&agent=9", urlencode(flat).encode(), {}
    )
    get = parse_voice_request("GET", "", urlencode(flat).encode(), b"", {})
    assert isinstance(form, VoiceRequest)
    assert isinstance(get, VoiceRequest)
    assert form.session == get.session == SESSION
    assert (form.attempt, form.agent_id) == (2, 9)
    assert not get.has_session_data


def test_header_fallbacks_fill_missing_fields() -> None:
    headers = {"x-cx-session": SESSION, "x-cx-from": "+1", "x-cx-to": "+2", "x-cx-domain": "d.example"}
    req = parse_voice_request("POST", "application/json", b"", b"{}", headers)
    assert isinstance(req, VoiceRequest)
    assert (req.session, req.from_number, req.to_number, req.domain) == (SESSION, "+1", "+2", "d.example")


def test_call_sid_is_the_second_choice_for_the_session() -> None:
    req = parse_voice_request("GET", "", b"CallSid=abc123", b"", {})
    assert isinstance(req, VoiceRequest)
    assert req.session == "abc123"


def test_statuses_are_lower_cased() -> None:
    req = parse_voice_request(
        "POST",
        "application/json",
        b"",
        b'{"Session":"s1","DialCallStatus":"NO-ANSWER","CallStatus":"NEW"}',
        {},
    )
    assert isinstance(req, VoiceRequest)
    assert (req.dial_call_status, req.call_status) == ("no-answer", "new")


def test_numbers_sent_as_json_numbers_are_accepted() -> None:
    req = parse_voice_request("POST", "application/json", b"", b'{"Session":"s1","From":14155550100}', {})
    assert isinstance(req, VoiceRequest)
    assert req.from_number == "14155550100"


def test_bad_inputs_give_one_line_reasons() -> None:
    cases = [
        (b'{"Session": "s1", ', "malformed JSON"),
        (b'{"Session": ["s1"]}', "invalid field"),
        (b'{"From": {"a": 1}, "Session": "s"}', "invalid field"),
        (b"[1, 2]", "invalid field"),
        (b'{"To": "+1"}', "missing Session"),
        (b'{"Session": "bad token with spaces"}', "invalid Session"),
    ]
    for body, reason in cases:
        out = parse_voice_request("POST", "application/json", b"", body, {})
        assert isinstance(out, ParseError), body
        assert out.status == 400
        assert reason in out.reason
        assert "\n" not in out.reason


def test_broken_body_keeps_the_session_from_headers() -> None:
    out = parse_voice_request("POST", "application/json", b"", b"{nope", {"x-cx-session": SESSION})
    assert isinstance(out, ParseError)
    assert out.session == SESSION


def test_bad_attempt_is_refused() -> None:
    for query in (b"attempt=x", b"attempt=0", b"attempt=1000", b"agent=-1"):
        out = parse_voice_request("GET", "", query + b"&Session=s1", b"", {})
        assert isinstance(out, ParseError), query


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "Session",
        "CallSid",
        "From",
        "To",
        "Direction",
        "CallStatus",
        "DialCallStatus",
        "SessionData",
        "Domain",
        "CallerName",
    ]
) | st.text(max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST"]),
    ctype=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""]),
    query=st.binary(max_size=200),
    body=st.one_of(
        st.binary(max_size=300),
        st.dictionaries(field_names, json_values, max_size=8).map(lambda d: json.dumps(d).encode()),
    ),
    headers=st.dictionaries(
        st.sampled_from(["x-cx-session", "x-cx-from", "x-cx-to", "x-cx-domain"]),
        st.text(max_size=40),
        max_size=4,
    ),
)
def test_parser_never_raises(
    method: str, ctype: str, query: bytes, body: bytes, headers: dict[str, str]
) -> None:
    out = parse_voice_request(method, ctype, query, body, headers)
    assert isinstance(out, VoiceRequest | ParseError)
    if isinstance(out, ParseError):
        assert 400 <= out.status < 500
        assert "\n" not in out.reason
    else:
        assert out.session
        assert 1 <= out.attempt <= 100
