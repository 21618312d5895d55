"""Hypothesis fuzzing of every engine webhook route through the in-process app, on real Redis and NATS:
voice application (GET query, POST JSON, POST form), dial-status follow-ups, session updates and CDRs
(with the domain in the path and in the body), fed huge, truncated, wrongly typed, wrongly encoded
(bad UTF-8, NULs) and deeply nested bodies built from the recorded Cloudonix fixtures.

Whatever arrives: never a 5xx, never an exception out of the app, a voice answer of 200 is always CXML,
and the agents' active sets move only when they should: a refused session update or CDR frees nothing
(a live call is kept on the tenant, and the fuzzed bodies often name it), a voice request takes a slot
only when its answer dials one.

Bounded (``FUZZ_EXAMPLES`` per route family, no shrinking database) so the file stays within seconds
of CI; ``VLB_FUZZ_EXAMPLES`` raises it for a longer local run.
"""

from __future__ import annotations

import copy
import os
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from routing_engine.app import EngineApp
from shared.enums import EventKind
from tests.routing_engine.harness import TenantConfig, load_fixture, new_session
from tests.routing_engine.test_ingest import active_total, cdr_body, route_call, session_updates

FUZZ_EXAMPLES = int(os.environ.get("VLB_FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

INBOUND = load_fixture("application-inbound.json")
DIAL = load_fixture("application-dial-status-noanswer.json")
SEED_UPDATE = load_fixture("session-update-seed-short.json")
SEED_CDR = load_fixture("cdr-seed-flat.json")
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"
CONTENT_TYPES = st.sampled_from(
    [JSON_TYPE, FORM_TYPE, "text/plain", "", "application/json; charset=latin-1", "application/x+json", "*/*"]
)

# --- values and bodies ------------------------------------------------------------------------------

nasty_text = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.sampled_from(["\x00", "\ud7ff", "\ufffe", "<", "&", '"', "]]>", "%", "\n", "é"]), max_size=20
    ).map("".join),
    st.integers(min_value=300, max_value=300_000).map(lambda n: "a" * n),  # huge (some beyond the body limit)
    st.just("\x00"),
)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
)
json_values = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _deep(depth: int, opener: str) -> bytes:
    if opener == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


deep_value = st.tuples(st.integers(min_value=200, max_value=60_000), st.sampled_from(["[", "{"])).map(
    lambda t: _deep(*t)
)


def _encode(value: Any) -> bytes:
    # Floats such as NaN are not JSON: then a stand-in the encoder takes (the point is the shape).
    try:
        return msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError):
        return b'"?"'


@st.composite
def mutated_json(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """The base object with some fields replaced (wrong types, huge, NULs, deep nesting), dropped or
    added, then maybe truncated or with bytes corrupted."""
    body = copy.deepcopy(base)
    keys = [*body, "SessionData", "session", "owner", "domain", "extra"]
    for key in draw(st.lists(st.sampled_from(keys), max_size=3)):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            body.pop(key, None)
        else:
            body[key] = draw(json_values)
    raw = _encode(body)
    if draw(st.booleans()) and draw(st.booleans()):  # a quarter: a deep value spliced into the object
        key = draw(st.sampled_from(keys))
        raw = b'{"' + key.encode() + b'":' + draw(deep_value) + b"," + raw[1:]
    if draw(st.integers(0, 4)) == 0:  # truncated
        raw = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    if draw(st.integers(0, 4)) == 0:  # corrupted: bad UTF-8 or a NUL at some byte
        at = draw(st.integers(0, len(raw)))
        raw = (
            raw[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\x00", b"\xed\xa0\x80", b"\\u0000"]))
            + raw[at:]
        )
    if draw(st.integers(0, 9)) == 0:  # a JSON array of it (one element is unwrapped, more are refused)
        raw = b"[" + raw + (b"," + raw if draw(st.booleans()) else b"") + b"]"
    return raw


def _form(fields: dict[str, Any]) -> bytes:
    return urlencode(
        {k: v if isinstance(v, str) else _encode(v).decode() for k, v in fields.items()}
    ).encode()


@st.composite
def mutated_form(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    fields: dict[str, Any] = {k: v for k, v in base.items() if not isinstance(v, dict | list)}
    for key in draw(st.lists(st.sampled_from([*fields, "x"]), max_size=3)):
        fields[key] = draw(nasty_text)
    raw = _form(fields)
    if draw(st.booleans()):
        extra = draw(st.sampled_from([b"&%ff%fe=%00", b"&a=%", b"&&&=", b"&" + b"f=1&" * 250, b"\xff\x00"]))
        raw += extra
    return raw


def bodies(base: dict[str, Any]) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(
        st.tuples(CONTENT_TYPES, mutated_json(base)),
        st.tuples(CONTENT_TYPES, mutated_form(base)),
        st.tuples(CONTENT_TYPES, st.binary(max_size=400)),
        st.tuples(CONTENT_TYPES, deep_value),
        st.tuples(CONTENT_TYPES, json_values.map(_encode)),
    )


# --- checks -------------------------------------------------------------------------------------------


def assert_not_5xx(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text


def assert_cxml(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.text)  # our own answer
    assert root.tag == "Response"


# tenant id -> the session token of its call in progress
_LIVE: dict[int, str] = {}


async def ensure_live_call(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig
) -> tuple[str, int]:
    """A call in progress on the tenant (routed afresh when a fuzzed body legitimately ended it): its
    token and the tenant's active count."""
    total = await active_total(engine, tenant)
    if total == 0:
        _LIVE[tenant.tenant_id] = new_session()
        await route_call(client, tenant, _LIVE[tenant.tenant_id])
        total = await active_total(engine, tenant)
        assert total == 1
    return _LIVE[tenant.tenant_id], total


# --- the voice application and dial-status ---------------------------------------------------------


@FUZZ
@given(
    data=st.data(),
    shape=st.sampled_from(["get", "json", "form", "raw"]),
    dial=st.booleans(),
    query_extra=st.dictionaries(
        st.sampled_from(["attempt", "agent", "Session", "x"]), nasty_text.map(lambda t: t[:2000]), max_size=2
    ),
)
async def test_voice_routes_never_fail(
    client: httpx.AsyncClient,
    engine: EngineApp,
    tenant: TenantConfig,
    data: st.DataObject,
    shape: str,
    dial: bool,
    query_extra: dict[str, str],
) -> None:
    session = new_session()
    base = dict(DIAL if dial else INBOUND, Session=session, CallSid=session, Domain=tenant.domain)
    url = f"/api/voice/application/{tenant.domain}" + ("/dial-status" if dial else "")
    params: dict[str, str] = {}
    content: bytes = b""
    headers = dict(tenant.auth)
    if shape == "get":
        fields = {k: v for k, v in base.items() if not isinstance(v, dict | list)}
        for key in data.draw(st.lists(st.sampled_from(list(fields)), max_size=3)):
            fields[key] = data.draw(nasty_text)[:2000]  # a URL stays within what a client sends
        params = {k: str(v) for k, v in fields.items()}
    elif shape == "raw":
        headers["content-type"], content = data.draw(bodies(base))
    else:
        content = data.draw(mutated_json(base) if shape == "json" else mutated_form(base))
        headers["content-type"] = JSON_TYPE if shape == "json" else FORM_TYPE
    params.update(query_extra)
    if data.draw(st.booleans()):
        headers["x-cx-session"] = data.draw(st.sampled_from([session, "bad token!", "\x7f"]))

    before = await active_total(engine, tenant)
    method = "GET" if shape == "get" else "POST"
    response = await client.request(method, url, params=params, content=content, headers=headers)
    after = await active_total(engine, tenant)

    assert_not_5xx(response)
    if response.status_code == 200:
        assert_cxml(response)
    assert after >= before
    if after > before:  # a slot is taken only by an answer that dials its agent
        assert response.status_code == 200
        assert "<Dial" in response.text


# --- session updates and CDRs ----------------------------------------------------------------------


@FUZZ
@given(
    data=st.data(),
    route=st.sampled_from(["update", "cdr"]),
    domain_in_path=st.booleans(),
    shape=st.sampled_from(["cloudonix", "seed", "raw"]),
)
async def test_ingest_routes_never_fail_and_refusals_free_nothing(
    client: httpx.AsyncClient,
    engine: EngineApp,
    tenant: TenantConfig,
    data: st.DataObject,
    route: str,
    domain_in_path: bool,
    shape: str,
) -> None:
    live, before = await ensure_live_call(client, engine, tenant)
    token = data.draw(st.sampled_from([live, new_session()]))
    if route == "update":
        if shape == "seed":
            base = dict(SEED_UPDATE, Session=token, CallSid=token, domain=tenant.domain)
        else:
            base = data.draw(st.sampled_from(session_updates(tenant, token)))
    elif shape == "seed":
        base = dict(SEED_CDR, session_token=token, call_id=token, domain=tenant.domain)
    else:
        base = cdr_body(tenant, token)
    if shape == "raw":
        ctype, content = data.draw(bodies(base))
    elif data.draw(st.integers(0, 3)) == 0:
        ctype, content = FORM_TYPE, data.draw(mutated_form(base))
    else:
        ctype, content = JSON_TYPE, data.draw(mutated_json(base))
    url = f"/api/voice/session/{route}" + (f"/{tenant.domain}" if domain_in_path else "")

    response = await client.post(url, content=content, headers={**tenant.auth, "content-type": ctype})
    after = await active_total(engine, tenant)

    assert_not_5xx(response)
    # 404: the body named a domain that does not exist (the routes without one in the path)
    assert response.status_code in (204, 400, 404, 413, 422), (response.status_code, response.text[:200])
    if response.status_code != 204:
        assert response.text.count("\n") == 1  # one line, the reason
        assert after == before, "a refused body changed the active calls"
    else:
        assert after in (before, before - 1)


# --- what the fuzzing found, kept as plain cases ----------------------------------------------------


async def test_deep_nesting_and_bad_utf8_are_bad_input(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig
) -> None:
    """Found by the fuzzing above: a body nested thousands deep made msgspec raise RecursionError and a
    string that is not UTF-8 UnicodeDecodeError, both out of the handler (a 500 and a bare traceback)."""
    from tests.routing_engine.test_ingest import requests_count

    live, before = await ensure_live_call(client, engine, tenant)
    deep = b'{"SessionData":' + b"[" * 5000 + b"]" * 5000 + b"}"
    bad_utf8 = b'{"Session":"\xff","token":"\xff"}'
    headers = {**tenant.auth, "content-type": JSON_TYPE}
    counted = {k: requests_count(k, "bad_input") for k in ("session_update", "cdr", "application")}
    for body, reason in ((deep, "JSON body nested too deeply"), (bad_utf8, "malformed JSON body: a string")):
        for route in ("update", "cdr"):
            response = await client.post(
                f"/api/voice/session/{route}/{tenant.domain}", content=body, headers=headers
            )
            assert response.status_code == 400
            assert response.text.startswith(reason)
        # The voice path answers a call it can name with valid CXML (the tenant's no-agent answer) ...
        voice = f"/api/voice/application/{tenant.domain}"
        response = await client.post(voice, params={"Session": new_session()}, content=body, headers=headers)
        assert response.status_code == 200
        assert_cxml(response)
        assert "<Dial" not in response.text
        # ... and refuses one it cannot.
        response = await client.post(voice, content=body, headers=headers)
        assert response.status_code == 400
        assert response.text.startswith(reason)
    assert requests_count("session_update", "bad_input") - counted["session_update"] == 2
    assert requests_count("cdr", "bad_input") - counted["cdr"] == 2
    assert requests_count("application", "bad_input") - counted["application"] == 4
    assert await active_total(engine, tenant) == before
    assert _LIVE[tenant.tenant_id] == live


async def test_huge_integers_never_stall_the_event_publisher(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig, nats_client: NATS
) -> None:
    """Found by the fuzzing above (in a whole-suite run: the fuzz tests themselves do not wait for the
    events): an integer beyond 64 bits in a body went into the event's payload, which msgpack cannot
    encode, and the publisher retried that message for ever, holding back every later event of the
    worker. Now a bounded field refuses it (422) and any other field keeps its digits as a string.
    Run after the fuzz tests, this also checks that nothing they sent stalled the publisher."""
    from tests.routing_engine.test_ingest import tenant_events

    token = new_session()
    huge = 2**70
    headers = {**tenant.auth, "content-type": JSON_TYPE}
    url = f"/api/voice/session/update/{tenant.domain}"
    base = {"token": token, "status": "ringing", "eventId": f"{token}-1"}
    response = await client.post(url, content=_encode({**base, "callStartTime": huge}), headers=headers)
    assert response.status_code == 422
    response = await client.post(url, content=_encode({**base, "extra": {"n": huge}}), headers=headers)
    assert response.status_code == 204
    events = await tenant_events(nats_client, engine, tenant.tenant_id, EventKind.SESSION_UPDATE)
    mine = [e for e, _ in events if e.session_token == token]
    assert len(mine) == 1
    assert mine[0].payload is not None
    assert mine[0].payload["extra"] == {"n": str(huge)}
    assert engine.events.pending == 0
