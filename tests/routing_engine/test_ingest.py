"""Session updates and CDRs through the engine: dedupe, slots freed exactly once, bad input refused
with a reason and audited, the safety TTL, and the engine heartbeat. Helpers here are shared with
tests/contract/test_session_cdr_contract.py."""

from __future__ import annotations

import asyncio
import copy
import os
import uuid
from typing import Any

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue
from prometheus_client import REGISTRY

from routing_engine import metrics
from routing_engine.app import EngineApp
from routing_engine.ingest import (
    Cdr,
    SessionUpdate,
    mask_secrets,
    parse_cdr,
    parse_session_update,
)
from shared.enums import Disposition, EventKind, Strategy
from shared.events import HEARTBEAT_DECODER, CallEvent, decode_events
from tests.routing_engine.harness import (
    TenantConfig,
    asgi_client,
    demo_tenant,
    engine_settings,
    load_fixture,
    new_session,
    publish,
    running_engine,
)

INBOUND = load_fixture("application-inbound.json")
UPDATES: list[dict[str, Any]] = load_fixture("session-updates-answered.json")  # type: ignore[assignment]
SEED_UPDATE = load_fixture("session-update-seed-short.json")
CDR = load_fixture("cdr-answered.json")
SEED_CDR = load_fixture("cdr-seed-flat.json")
JSON = {"Content-Type": "application/json"}


# --- helpers (also used by the contract tests) ----------------------------------------------------


def update_url(config: TenantConfig | None = None) -> str:
    return "/api/voice/session/update" + (f"/{config.domain}" if config else "")


def cdr_url(config: TenantConfig | None = None) -> str:
    return "/api/voice/session/cdr" + (f"/{config.domain}" if config else "")


def session_updates(config: TenantConfig, token: str) -> list[dict[str, Any]]:
    """The fixture's five updates (new … answer) for ``token`` on the tenant's domain, fresh event ids."""
    out = []
    for update in UPDATES:
        body = copy.deepcopy(update)
        body.update(token=token, domain=config.domain, eventId=f"{token}-{body['status']}")
        out.append(body)
    return out


def cdr_body(config: TenantConfig, token: str, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(CDR)
    body["domain"] = config.domain
    body["owner"]["domain"]["name"] = config.domain
    body["session"].update(token=token, domain=config.domain)
    body.update(changes)
    return body


def agent_ids(config: TenantConfig) -> list[int]:
    return [a.id for a in config.snapshot.agents]


async def active_total(engine: EngineApp, config: TenantConfig) -> int:
    counts = await engine.balancer.active_calls(config.tenant_id, agent_ids(config))
    return sum(counts.values())


async def route_call(client: httpx.AsyncClient, config: TenantConfig, session: str) -> str:
    """Route an inbound call through the voice-application webhook; its CXML (an agent is dialled)."""
    body = dict(INBOUND, Session=session, CallSid=session, Domain=config.domain)
    response = await client.post(f"/api/voice/application/{config.domain}", json=body, headers=config.auth)
    assert response.status_code == 200
    assert "<Dial" in response.text, response.text
    return response.text


async def tenant_events(
    nc: NATS, engine: EngineApp, tenant_id: int, kind: EventKind | None = None
) -> list[tuple[CallEvent, str]]:
    """Every stored event of the tenant (optionally of one kind) with its event id, in order."""
    for _ in range(250):
        if engine.events.pending == 0:
            break
        await asyncio.sleep(0.02)
    assert engine.events.pending == 0, "events did not reach JetStream"
    prefix = os.environ["VLB_EVENTS_SUBJECT_PREFIX"]
    subject = f"{prefix}.{tenant_id}.{kind.value if kind else '>'}"
    sub = await nc.jetstream().subscribe(subject, ordered_consumer=True)
    out: list[tuple[CallEvent, str]] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.3)
            except nats.errors.TimeoutError:
                break
            out += [(e, e.event_id) for e in decode_events(msg.data)]
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return out


def requests_count(path: str, outcome: str) -> float:
    metrics.flush()  # the engine folds its webhook counts in once a second
    value = REGISTRY.get_sample_value("vlb_engine_requests_total", {"path": path, "outcome": outcome})
    return value or 0.0


def releases_count() -> float:
    metrics.flush()
    return sum(
        REGISTRY.get_sample_value("vlb_engine_slot_releases_total", {"source": source}) or 0.0
        for source in ("session_update", "cdr")
    )


# --- parsing (no services) ------------------------------------------------------------------------


def test_answer_is_the_only_terminal_update_of_an_answered_call() -> None:
    parsed = [parse_session_update("application/json", msgspec.json.encode(u)) for u in UPDATES]
    assert all(isinstance(p, SessionUpdate) for p in parsed)
    updates = [p for p in parsed if isinstance(p, SessionUpdate)]
    assert [(u.status, u.terminal) for u in updates] == [
        ("new", False),
        ("processing", False),
        ("ringing", False),
        ("connected", False),
        ("answer", True),
    ]
    last = updates[-1]
    assert last.call_end_ms == 1768089611301
    assert last.call_answer_ms == 1768089523120
    assert last.call_id == "4f1e2d3c@carrier.example"
    assert last.dedupe_id == f"{last.token}:su:{UPDATES[-1]['eventId']}"


@pytest.mark.parametrize(
    ("status", "end", "terminal"),
    [
        ("NOANSWER", None, True),
        ("Busy", None, True),
        ("cancel", None, True),
        ("nocredit", None, True),
        ("error", None, True),
        ("failed", None, True),
        ("completed", None, True),
        ("answered", None, False),
        ("answered", 1768089611301, True),
        ("external", None, False),
        ("CONNECTED", None, False),
    ],
)
def test_terminal_statuses(status: str, end: int | None, terminal: bool) -> None:
    body = {"token": new_session(), "status": status, "callEndTime": end}
    parsed = parse_session_update("application/json", msgspec.json.encode(body))
    assert isinstance(parsed, SessionUpdate)
    assert parsed.status == status.lower()
    assert parsed.terminal is terminal


def test_update_without_event_id_dedupes_on_token_status_and_modified_at() -> None:
    body = {"token": "t1", "status": "Ringing", "modifiedAt": "2026-01-10T23:58:39.000Z"}
    parsed = parse_session_update("application/json", msgspec.json.encode([body]))
    assert isinstance(parsed, SessionUpdate)
    assert parsed.dedupe_id == "t1:su:ringing:2026-01-10T23:58:39.000Z"


def test_seed_short_update_as_json_and_form() -> None:
    as_json = parse_session_update("application/json", msgspec.json.encode(SEED_UPDATE))
    as_form = parse_session_update(
        "application/x-www-form-urlencoded",
        b"CallSid=CA1234567890&Session=session_123&CallStatus=COMPLETED&Duration=150",
    )
    for parsed in (as_json, as_form):
        assert isinstance(parsed, SessionUpdate)
        assert (parsed.token, parsed.status, parsed.terminal) == ("session_123", "completed", True)
        assert parsed.duration == 150
        assert parsed.call_id == "CA1234567890"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ANSWER", Disposition.ANSWER),
        ("ANSWERED", Disposition.ANSWER),
        ("answered", Disposition.ANSWER),
        ("NO ANSWER", Disposition.NOANSWER),
        ("no  answer", Disposition.NOANSWER),
        ("NOANSWER", Disposition.NOANSWER),
        ("Busy", Disposition.BUSY),
        ("CANCEL", Disposition.CANCEL),
        ("FAILED", Disposition.FAILED),
        ("CONGESTION", Disposition.CONGESTION),
    ],
)
def test_dispositions_are_normalised(raw: str, expected: Disposition) -> None:
    parsed = parse_cdr("application/json", msgspec.json.encode(dict(SEED_CDR, disposition=raw)))
    assert isinstance(parsed, Cdr)
    assert parsed.disposition is expected


def test_cdr_shapes_and_token_fallbacks() -> None:
    full = parse_cdr("application/json", msgspec.json.encode(CDR))
    assert isinstance(full, Cdr)
    assert (full.token, full.domain, full.billsec, full.duration) == (
        CDR["session"]["token"],
        "acme.cloudonix.net",
        88,
        96,
    )
    assert (full.call_start_ms, full.call_answer_ms, full.call_end_ms) == (
        1768089515449,
        1768089523120,
        1768089611301,
    )

    flat = parse_cdr("application/json", msgspec.json.encode(SEED_CDR))
    assert isinstance(flat, Cdr)
    assert (flat.token, flat.call_id) == ("session_123", "CA1234567890")
    assert flat.call_start_ms == 1704103200000
    assert flat.call_end_ms == 1704103200000 + 150_000

    for session in (None, "drop"):
        body = {k: v for k, v in CDR.items() if not (session == "drop" and k == "session")}
        if session is None:
            body["session"] = None
        parsed = parse_cdr("application/json", msgspec.json.encode(body))
        assert isinstance(parsed, Cdr)
        assert parsed.token == CDR["call_id"]
        assert parsed.call_end_ms == CDR["timestamp"] * 1000

    owner_only = {k: v for k, v in CDR.items() if k != "domain"}
    parsed = parse_cdr("application/json", msgspec.json.encode(owner_only))
    assert isinstance(parsed, Cdr)
    assert parsed.domain == "acme.cloudonix.net"


def test_secrets_are_masked_in_the_payload() -> None:
    body = {
        "a": {"password": "p", "X-CX-APIKey": "k", "api_key": "k2", "list": [{"secret": "s"}]},
        "token": "t",
    }
    assert mask_secrets(body) == {
        "a": {"password": "***", "X-CX-APIKey": "***", "api_key": "***", "list": [{"secret": "***"}]},
        "token": "t",  # the session token is the call's key, not a secret
    }


# --- through the engine ---------------------------------------------------------------------------


async def test_terminal_update_frees_the_slot_once_and_duplicates_do_nothing(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig, nats_client: NATS
) -> None:
    session = new_session()
    await route_call(client, tenant, session)
    assert await active_total(engine, tenant) == 1
    before = releases_count()
    busy = {"token": session, "eventId": f"{session}-busy", "status": "busy", "domain": tenant.domain}
    for _ in range(3):
        response = await client.post(update_url(tenant), json=busy, headers=tenant.auth)
        assert response.status_code == 204
        assert response.content == b""
    assert await active_total(engine, tenant) == 0
    # Another terminal status and the CDR reach a call already freed: recorded, nothing freed again.
    completed = dict(busy, eventId=f"{session}-completed", status="completed")
    assert (await client.post(update_url(tenant), json=completed, headers=tenant.auth)).status_code == 204
    assert (
        await client.post(cdr_url(tenant), json=cdr_body(tenant, session), headers=tenant.auth)
    ).status_code == 204
    assert releases_count() - before == 1

    events = [
        (e, i)
        for e, i in await tenant_events(nats_client, engine, tenant.tenant_id)
        if e.kind != EventKind.ROUTED
    ]
    assert [(e.kind, e.status, e.outcome) for e, _ in events] == [
        (EventKind.SESSION_UPDATE, "busy", "released"),
        (EventKind.SESSION_UPDATE, "completed", "recorded"),
        (EventKind.CDR, "answer", "recorded"),
    ]
    assert [i for _, i in events] == [
        f"{tenant.tenant_id}:{session}:su:{session}-busy",
        f"{tenant.tenant_id}:{session}:su:{session}-completed",
        f"{tenant.tenant_id}:{session}:cdr",
    ]


async def test_release_is_idempotent_even_when_the_dedupe_key_is_gone(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig
) -> None:
    session = new_session()
    await route_call(client, tenant, session)
    assert await engine.balancer.release(tenant.tenant_id, session, reason="test") is True
    assert await engine.balancer.release(tenant.tenant_id, session, reason="test") is False

    other = new_session()
    await route_call(client, tenant, other)
    update = {"token": other, "eventId": "e1", "status": "noanswer", "domain": tenant.domain}
    before = releases_count()
    assert (await client.post(update_url(tenant), json=update, headers=tenant.auth)).status_code == 204
    # Redis forgot the delivery (evicted, flushed): the repeat is applied again, and frees nothing.
    await engine.redis.delete(engine.balancer.keys(tenant.tenant_id).seen(f"{other}:su:e1"))
    assert (await client.post(update_url(tenant), json=update, headers=tenant.auth)).status_code == 204
    assert releases_count() - before == 1
    assert await active_total(engine, tenant) == 0


async def test_dedupe_key_is_tenant_tagged_and_kept_a_day(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig
) -> None:
    session = new_session()
    body = {"token": session, "eventId": "e-ttl", "status": "ringing"}
    assert (await client.post(update_url(tenant), json=body, headers=tenant.auth)).status_code == 204
    key = engine.balancer.keys(tenant.tenant_id).seen(f"{session}:su:e-ttl")
    assert key.startswith(f"{os.environ['VLB_REDIS_PREFIX']}:{{t{tenant.tenant_id}}}:")
    assert await engine.redis.ttl(key) >= 86400 - 5


BAD_UPDATES: list[tuple[bytes, int, str]] = [
    (b'{"token": ', 400, "malformed JSON body"),
    (b"null", 400, "expected a JSON object, got null"),
    (b'"text"', 400, "expected a JSON object, got a string"),
    (b"[]", 400, "expected one object, got an array of 0"),
    (
        b'[{"token": "a", "status": "busy"}, {"token": "b", "status": "busy"}]',
        400,
        "expected one object, got an array of 2",
    ),
    (b'{"status": "busy"}', 400, "missing session token"),
    (b'{"token": null, "status": "busy"}', 400, "missing session token"),
    (b'{"token": "has space", "status": "busy"}', 400, "invalid session token"),
    (b'{"token": 123, "status": "busy"}', 422, "invalid field"),
    (b'{"token": "SESSION", "status": ["busy"]}', 422, "invalid field"),
    (b'{"token": "SESSION", "status": "busy", "callEndTime": "soon"}', 422, "invalid field"),
    (b'{"token": "SESSION", "status": "exploded"}', 422, "unknown status"),
    (b'{"token": "SESSION", "status": null}', 400, "missing status"),
    (b'{"token": "SESSION", "domain": {"name": 5}, "status": "busy"}', 422, "invalid field"),
]
BAD_CDRS: list[tuple[bytes, int, str]] = [
    (b'{"session": null, "disposition": "ANSWER"}', 400, "missing session token"),
    (b'{"session": {"token": null}}', 400, "missing session token"),
    (b'{"session_token": "SESSION", "disposition": "MAYBE"}', 422, "unknown disposition"),
    (b'{"session_token": "SESSION", "duration": "long"}', 422, "invalid field"),
    (b'{"session_token": "SESSION", "billsec": -1}', 422, "invalid field"),
    (b'{"session_token": "SESSION", "session": "SESSION"}', 422, "invalid field"),
    (b'{"session_token": "SESSION", "start_time": "yesterday"}', 422, "start_time is not an ISO 8601"),
    (b'[{"call_id": "a"}, {"call_id": "b"}]', 400, "expected one object, got an array of 2"),
]


async def test_bad_payloads_are_refused_audited_and_free_nothing(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig, nats_client: NATS
) -> None:
    session = new_session()
    await route_call(client, tenant, session)
    before = {kind: requests_count(kind, "bad_input") for kind in ("session_update", "cdr")}
    cases = [(update_url(tenant), *case) for case in BAD_UPDATES] + [
        (cdr_url(tenant), *case) for case in BAD_CDRS
    ]
    for url, body, status, reason in cases:
        response = await client.post(
            url, content=body.replace(b"SESSION", session.encode()), headers={**tenant.auth, **JSON}
        )
        assert response.status_code == status, (body, response.text)
        assert response.text.startswith(reason), (body, response.text)
        assert response.text.count("\n") == 1
        assert "Traceback" not in response.text
    assert requests_count("session_update", "bad_input") - before["session_update"] == len(BAD_UPDATES)
    assert requests_count("cdr", "bad_input") - before["cdr"] == len(BAD_CDRS)
    assert await active_total(engine, tenant) == 1

    events = await tenant_events(nats_client, engine, tenant.tenant_id, EventKind.REJECTED)
    assert len(events) == len(cases)
    assert sorted(e.payload["status"] for e, _ in events if e.payload) == sorted(c[2] for c in cases)
    for event, _ in events:
        assert event.payload is not None
        assert any(event.payload["reason"].startswith(c[3]) for c in cases)
    # Those that named the call carry its token.
    assert any(e.session_token == session for e, _ in events)
    assert all(e.outcome == "bad_input" for e, _ in events)


async def test_huge_body_is_413_and_audited(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig, nats_client: NATS
) -> None:
    body = b'{"token": "x", "status": "busy", "pad": "' + b"a" * (engine.settings.max_body_bytes + 10) + b'"}'
    response = await client.post(update_url(tenant), content=body, headers={**tenant.auth, **JSON})
    assert response.status_code == 413
    assert response.text.count("\n") == 1
    events = await tenant_events(nats_client, engine, tenant.tenant_id, EventKind.REJECTED)
    assert [e.payload["status"] for e, _ in events if e.payload] == [413]
    # Without a domain in the path nothing is known about the sender: refused, not audited.
    response = await client.post(update_url(), content=body, headers={**tenant.auth, **JSON})
    assert response.status_code == 413


async def test_auth_is_the_voice_application_auth(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig, nats_client: NATS
) -> None:
    session = new_session()
    await route_call(client, tenant, session)
    update = {"token": session, "status": "busy", "domain": tenant.domain}
    assert (await client.post(update_url(tenant), json=update)).status_code == 401
    assert (
        await client.post(update_url(tenant), json=update, headers={"Authorization": "Bearer no"})
    ).status_code == 401
    assert (await client.post(update_url(), json=update, headers={"X-CX-APIKey": "no"})).status_code == 401
    assert (await client.post(cdr_url(tenant), json=cdr_body(tenant, session))).status_code == 401
    assert (
        await client.post("/api/voice/session/update/nobody.example", json=update, headers=tenant.auth)
    ).status_code == 404
    assert (
        await client.post(update_url(), json=dict(update, domain="nobody.example"), headers=tenant.auth)
    ).status_code == 404
    missing = await client.post(update_url(), json={"token": session, "status": "busy"}, headers=tenant.auth)
    assert (missing.status_code, missing.text) == (400, "missing domain\n")
    assert (await client.get(update_url(tenant), headers=tenant.auth)).status_code == 405
    assert (
        await client.post("/api/voice/session/other/x", json=update, headers=tenant.auth)
    ).status_code == 404
    assert await active_total(engine, tenant) == 1
    # Refused requests are not audited as the tenant's: anyone could send them.
    assert await tenant_events(nats_client, engine, tenant.tenant_id, EventKind.REJECTED) == []
    # The X-CX-APIKey header and the body domain work too.
    response = await client.post(update_url(), json=update, headers={"X-CX-APIKey": tenant.key})
    assert response.status_code == 204
    assert await active_total(engine, tenant) == 0


async def test_unclosed_slot_expires_after_the_safety_ttl(kv: KeyValue, nats_client: NATS) -> None:
    settings = engine_settings(active_slot_ttl_s="1")
    async with running_engine(settings) as app, asgi_client(app) as c:
        config = demo_tenant(capacities=(1, 1, 1))
        await publish(kv, app, config)
        sessions = [new_session() for _ in range(3)]
        for session in sessions:
            await route_call(c, config, session)
        assert await active_total(app, config) == 3
        body = dict(INBOUND, Session=new_session(), Domain=config.domain)
        full = await c.post(f"/api/voice/application/{config.domain}", json=body, headers=config.auth)
        assert "<Dial" not in full.text
        await asyncio.sleep(1.2)
        assert await active_total(app, config) == 0
        await route_call(c, config, new_session())
        # The CDR of an expired call is recorded and frees nothing.
        before = releases_count()
        response = await c.post(cdr_url(config), json=cdr_body(config, sessions[0]), headers=config.auth)
        assert response.status_code == 204
        assert releases_count() == before
        assert await active_total(app, config) == 1


async def test_heartbeat_carries_engine_and_versions(kv: KeyValue, nats_client: NATS) -> None:
    subject = f"vlbt{uuid.uuid4().hex[:8]}.engines.heartbeat"
    sub = await nats_client.subscribe(subject)
    try:
        settings = engine_settings(heartbeat_subject=subject, heartbeat_interval_s="0.05")
        async with running_engine(settings) as app:
            config = demo_tenant(strategy=Strategy.ROUND_ROBIN)
            await publish(kv, app, config)
            beat = None
            for _ in range(100):
                beat = HEARTBEAT_DECODER.decode((await sub.next_msg(timeout=2)).data)
                if beat.versions.get(config.tenant_id) == 1:
                    break
            assert beat is not None
            assert beat.versions[config.tenant_id] == 1
            assert beat.engine_id == app.engine_id
            assert beat.pid == os.getpid()
            assert beat.started_at <= beat.sent_at
        # Stopped with the app: nothing more arrives.
        await asyncio.sleep(0.1)
        while True:
            try:
                await sub.next_msg(timeout=0.01)
            except nats.errors.TimeoutError:
                break
        with pytest.raises(nats.errors.TimeoutError):
            await sub.next_msg(timeout=0.2)
    finally:
        await sub.unsubscribe()


def test_status_sets_agree_with_the_call_lifecycle() -> None:
    lifecycle = pytest.importorskip("shared.lifecycle")
    from routing_engine import ingest

    table = lifecycle.SESSION_STATUS
    assert set(table) == ingest.LIVE_STATUSES | ingest.TERMINAL_STATUSES | {ingest.ANSWERED}
    assert {s for s in table if lifecycle.is_terminal(table[s])} == ingest.TERMINAL_STATUSES
    assert lifecycle.DISPOSITION_ALIASES == ingest.DISPOSITIONS
