"""Call events reach the JetStream stream, once per webhook delivery, without waiting on the hot path."""

from __future__ import annotations

import asyncio
import os

import httpx
from nats.aio.client import Client as NATS

from routing_engine.app import EngineApp
from shared.enums import EventKind
from shared.events import EVENT_DECODER
from tests.routing_engine.harness import TenantConfig, load_fixture, new_session

INBOUND = load_fixture("application-inbound.json")


async def test_routed_and_dial_status_events_are_published_once(
    client: httpx.AsyncClient, engine: EngineApp, tenant: TenantConfig, nats_client: NATS
) -> None:
    session = new_session()
    body = dict(INBOUND, Session=session, Domain=tenant.domain)
    url = f"/api/voice/application/{tenant.domain}"
    await client.post(url, json=body, headers=tenant.auth)
    await client.post(url, json=body, headers=tenant.auth)  # a repeat: same event id
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
            event = EVENT_DECODER.decode(msg.data)
            if event.session_token == session:
                events.append(event)
                assert msg.headers is not None
                assert msg.headers["Nats-Msg-Id"] == event.event_id
    except Exception:
        pass
    finally:
        await sub.unsubscribe()
    kinds = [(e.kind, e.outcome) for e in events]
    assert kinds == [(EventKind.ROUTED, "routed"), (EventKind.DIAL_STATUS, "routed")]
    assert events[0].agent_id == tenant.tenant_id * 100 + 1
    assert events[1].attempt == 2
    assert events[0].snapshot_version == 1
    assert engine.events.dropped == 0
