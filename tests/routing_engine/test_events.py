"""Call events reach the JetStream stream, once per webhook delivery, without waiting on the hot path."""

from __future__ import annotations

import asyncio
import os

import httpx
import nats.errors
from nats.aio.client import Client as NATS

from routing_engine.app import EngineApp
from shared.enums import EventKind
from shared.events import decode_events
from tests.routing_engine.harness import TenantConfig, load_fixture, new_session

INBOUND = load_fixture("application-inbound.json")


async def test_routed_and_dial_status_events_are_published_once(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig, nats_client: NATS
) -> None:
    session = new_session()
    body = dict(INBOUND, Session=session, Domain=tenant.domain)
    url = f"/api/voice/application/{tenant.domain}"
    await client.post(url, json=body, headers=tenant.auth)
    await client.post(url, json=body, headers=tenant.auth)  # a replay: the same event id
    await client.post(
        url + "/dial-status?attempt=1", json=dict(body, DialCallStatus="busy"), headers=tenant.auth
    )
    prefix = os.environ["VLB_EVENTS_SUBJECT_PREFIX"]
    js = nats_client.jetstream()
    for _ in range(100):
        if engine.events.pending == 0:
            break
        await asyncio.sleep(0.02)
    sub = await js.subscribe(f"{prefix}.{tenant.tenant_id}.>", ordered_consumer=True)
    events = []
    try:
        while True:
            msg = await sub.next_msg(timeout=0.5)
            assert msg.headers is not None
            assert msg.headers["Nats-Msg-Id"].startswith(engine.engine_id + ":")
            events += [e for e in decode_events(msg.data) if e.session_token == session]
    except nats.errors.TimeoutError:
        pass  # nothing more
    finally:
        await sub.unsubscribe()
    # A replay's event repeats the first one's id: the consumer stores it once.
    assert [e.event_id for e in events].count(events[0].event_id) == 2
    events = [e for i, e in enumerate(events) if e.event_id not in {x.event_id for x in events[:i]}]
    kinds = [(e.kind, e.outcome) for e in events]
    assert kinds == [(EventKind.ROUTED, "routed"), (EventKind.DIAL_STATUS, "routed")]
    assert events[0].agent_id == tenant.tenant_id * 100 + 1
    assert events[1].attempt == 2
    assert events[0].snapshot_version == 1
    assert engine.events.dropped == 0
