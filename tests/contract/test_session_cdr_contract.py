"""Replays Cloudonix's session updates and CDRs (SPEC §3, ../shared/fixtures/cloudonix) and their
variants through the engine: array-wrapped, domain as an object or only in the body, missing or null
session, upper-case statuses, the original's short shapes; and checks that, whatever the order and
however often they arrive, every routed call's slot is freed exactly once."""

from __future__ import annotations

import asyncio
import html
import random
import re
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from routing_engine.app import EngineApp
from shared.enums import EventKind, Strategy
from tests.routing_engine.harness import TenantConfig, demo_tenant, load_fixture, new_session, publish
from tests.routing_engine.test_ingest import (
    active_total,
    cdr_body,
    cdr_url,
    releases_count,
    route_call,
    session_updates,
    tenant_events,
    update_url,
)

SEED_UPDATE = load_fixture("session-update-seed-short.json")
SEED_CDR = load_fixture("cdr-seed-flat.json")


@pytest.mark.parametrize("wrapped", [False, True], ids=["object", "array"])
async def test_answered_call_updates_free_the_slot_at_answer(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig, nats_client: NATS, wrapped: bool
) -> None:
    session = new_session()
    await route_call(client, tenant, session)
    updates = session_updates(tenant, session)
    actives = []
    for update in updates:
        response = await client.post(
            update_url(tenant), json=[update] if wrapped else update, headers=tenant.auth
        )
        assert response.status_code == 204
        actives.append(await active_total(engine, tenant))
    assert actives == [1, 1, 1, 1, 0]

    events = await tenant_events(nats_client, engine, tenant.tenant_id, EventKind.SESSION_UPDATE)
    assert [(e.status, e.outcome) for e, _ in events] == [
        ("new", "recorded"),
        ("processing", "recorded"),
        ("ringing", "recorded"),
        ("connected", "recorded"),
        ("answer", "released"),
    ]
    assert [msg_id for _, msg_id in events] == [
        f"{tenant.tenant_id}:{session}:su:{u['eventId']}" for u in updates
    ]
    last, _ = events[-1]
    assert last.event_id == events[-1][1]
    assert last.session_token == session
    assert last.domain == tenant.domain
    assert (last.call_start_ms, last.call_answer_ms, last.call_end_ms) == (
        1768089515449,
        1768089523120,
        1768089611301,
    )
    assert last.from_number == "+14155550100"
    assert last.to_number == "+12125550199"
    assert last.direction == "incoming"
    assert last.call_id == "4f1e2d3c@carrier.example"
    assert last.snapshot_version == tenant.snapshot.version
    assert last.payload is not None
    assert last.payload["vappServer"] == "172.24.40.152"


async def test_domain_in_body_as_object_and_upper_case_statuses(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig, nats_client: NATS
) -> None:
    session = new_session()
    await route_call(client, tenant, session)
    for update in session_updates(tenant, session):
        update.pop("eventId")
        update.update(domain={"name": tenant.domain.upper()}, status=update["status"].upper())
        assert (await client.post(update_url(), json=[update], headers=tenant.auth)).status_code == 204
    assert await active_total(engine, tenant) == 0
    events = await tenant_events(nats_client, engine, tenant.tenant_id, EventKind.SESSION_UPDATE)
    assert [e.status for e, _ in events] == ["new", "processing", "ringing", "connected", "answer"]
    # Without eventId the delivery is known by token + status + modifiedAt.
    assert events[0][1] == f"{tenant.tenant_id}:{session}:su:new:2026-01-10T23:58:35.000Z"


@pytest.mark.parametrize("shape", ["json", "form", "body-domain"])
async def test_seed_short_update(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig, nats_client: NATS, shape: str
) -> None:
    session = new_session()
    await route_call(client, tenant, session)
    body = dict(SEED_UPDATE, Session=session)
    if shape == "json":
        response = await client.post(update_url(tenant), json=body, headers=tenant.auth)
    elif shape == "form":
        response = await client.post(
            update_url(tenant), data={k: str(v) for k, v in body.items()}, headers=tenant.auth
        )
    else:
        # No domain in the short shape: X-CX-Domain names it on the domain-less route.
        response = await client.post(
            update_url(), content=urlencode(body), headers={**tenant.auth, "X-CX-Domain": tenant.domain}
        )
    assert response.status_code == 204
    assert await active_total(engine, tenant) == 0
    [(event, msg_id)] = await tenant_events(nats_client, engine, tenant.tenant_id, EventKind.SESSION_UPDATE)
    assert (event.status, event.outcome, event.duration) == ("completed", "released", 150)
    assert event.call_id == "CA1234567890"
    assert msg_id == f"{tenant.tenant_id}:{session}:su:completed:"


@pytest.mark.parametrize("route", ["path", "body-domain", "owner-domain"])
async def test_cdr_frees_the_slot_and_carries_the_record(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig, nats_client: NATS, route: str
) -> None:
    session = new_session()
    await route_call(client, tenant, session)
    body = cdr_body(tenant, session, password="hunter2")
    body["session"]["profile"] = {"apiKey": "sk-live"}
    url = cdr_url(tenant)
    if route != "path":
        url = cdr_url()
        if route == "owner-domain":
            del body["domain"]
    for _ in range(2):  # the repeat publishes nothing
        assert (await client.post(url, json=body, headers=tenant.auth)).status_code == 204
    assert await active_total(engine, tenant) == 0
    [(event, msg_id)] = await tenant_events(nats_client, engine, tenant.tenant_id, EventKind.CDR)
    assert msg_id == f"{tenant.tenant_id}:{session}:cdr"
    assert event.kind == EventKind.CDR
    assert (event.disposition, event.duration, event.billsec, event.outcome) == ("ANSWER", 96, 88, "released")
    assert event.call_id == "4f1e2d3c@carrier.example"
    assert (event.call_start_ms, event.call_answer_ms, event.call_end_ms) == (
        1768089515449,
        1768089523120,
        1768089611301,
    )
    assert event.payload is not None
    assert event.payload["password"] == "***"
    assert event.payload["session"]["profile"] == {"apiKey": "***"}
    assert event.payload["rated_cost"] == 0.0


@pytest.mark.parametrize("session_field", ["missing", "null"])
async def test_cdr_without_session_uses_session_token_or_call_id(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig, nats_client: NATS, session_field: str
) -> None:
    session = new_session()
    call_id = new_session()
    await route_call(client, tenant, session)
    await route_call(client, tenant, call_id)
    flat = dict(SEED_CDR, session_token=session, disposition="NO ANSWER")
    by_call_id = cdr_body(tenant, "unused", call_id=call_id, disposition="ANSWERED")
    if session_field == "missing":
        del by_call_id["session"]
    else:
        by_call_id["session"] = None
        flat["session"] = None
    for body in (flat, by_call_id):
        assert (await client.post(cdr_url(tenant), json=body, headers=tenant.auth)).status_code == 204
    assert await active_total(engine, tenant) == 0
    events = await tenant_events(nats_client, engine, tenant.tenant_id, EventKind.CDR)
    assert [(e.session_token, e.disposition) for e, _ in events] == [
        (session, "NOANSWER"),
        (call_id, "ANSWER"),
    ]
    assert events[0][0].call_start_ms == 1704103200000
    assert events[1][0].call_end_ms == by_call_id["timestamp"] * 1000


async def test_active_count_never_drifts(
    client: httpx.AsyncClient, kv: KeyValue, engine: EngineApp, nats_client: NATS
) -> None:
    """N routed calls (some after a failed first attempt), then every call's updates, CDR and repeats
    in random order and concurrently: every slot is freed, each exactly once."""
    config = demo_tenant(strategy=Strategy.ROUND_ROBIN, capacities=(50, 50, 50))
    await publish(kv, engine, config)
    rng = random.Random(20260110)
    app_url = f"/api/voice/application/{config.domain}"
    sessions = [new_session() for _ in range(24)]
    for i, session in enumerate(sessions):
        answer = await route_call(client, config, session)
        if i % 3 == 0:
            continue
        # The first agent was busy: the engine dials the next one. Cloudonix calls the action URL
        # (which names the agent); a callback without it must not leak the first slot either.
        action = re.search(r'action="([^"]+)"', answer)
        assert action is not None
        url = html.unescape(action.group(1)) if i % 3 == 1 else f"{app_url}/dial-status?attempt=1"
        response = await client.post(
            url,
            json={"Session": session, "DialCallStatus": "busy", "To": "+12125550199"},
            headers=config.auth,
        )
        assert "<Dial" in response.text
    assert await active_total(engine, config) == len(sessions)

    deliveries: list[tuple[str, Any]] = []
    for session in sessions:
        updates = session_updates(config, session)
        terminal = rng.choice(["answer", "busy", "noanswer", "cancel", "failed", "completed"])
        updates[-1]["status"] = terminal
        cdr = cdr_body(config, session)
        short = dict(SEED_UPDATE, Session=session, CallSid=session, domain=config.domain)
        batch = [(update_url(config), u) for u in updates]
        batch += [(update_url(config), updates[-1]), (update_url(), [updates[-1]])]  # repeats
        batch += [(cdr_url(config), cdr), (cdr_url(), cdr), (update_url(config), short)]
        deliveries.extend(batch)
    rng.shuffle(deliveries)
    before = releases_count()

    async def deliver(url: str, body: Any) -> int:
        return (await client.post(url, json=body, headers=config.auth)).status_code

    for i in range(0, len(deliveries), 32):
        codes = await asyncio.gather(*(deliver(u, b) for u, b in deliveries[i : i + 32]))
        assert set(codes) == {204}

    assert await active_total(engine, config) == 0
    assert releases_count() - before == len(sessions)
    events = await tenant_events(nats_client, engine, config.tenant_id)
    released = [e.session_token for e, _ in events if e.outcome == "released"]
    assert sorted(released) == sorted(sessions)
    # One event per distinct delivery: 5 updates + the short one + one CDR per call; repeats dropped.
    ingested = [e for e, _ in events if e.kind in (EventKind.SESSION_UPDATE, EventKind.CDR)]
    assert len(ingested) == len(sessions) * 7
    assert engine.events.dropped == 0
