"""Out-of-order delivery: a dial-status that arrives after the call's terminal session update or its
CDR must not take a new agent slot (nothing would free it before the safety TTL)."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from nats.js.kv import KeyValue

from routing_engine.app import EngineApp
from shared.enums import Strategy
from tests.routing_engine.harness import demo_tenant, new_session, publish
from tests.routing_engine.test_ingest import active_total, cdr_body, cdr_url, route_call, update_url


@pytest.mark.parametrize("closed_by", ["session_update", "cdr"])
async def test_dial_status_after_the_call_ended_takes_no_slot(
    client: httpx.AsyncClient, engine: EngineApp, kv: KeyValue, closed_by: str
) -> None:
    config = demo_tenant(strategy=Strategy.ROUND_ROBIN, capacities=(50, 50, 50))
    await publish(kv, engine, config)
    ended, live = new_session(), new_session()
    answers = {s: await route_call(client, config, s) for s in (ended, live)}
    if closed_by == "cdr":
        response = await client.post(cdr_url(config), json=cdr_body(config, ended), headers=config.auth)
    else:
        update = {"token": ended, "eventId": f"{ended}-cancel", "status": "cancel"}
        response = await client.post(update_url(config), json=update, headers=config.auth)
    assert response.status_code == 204
    assert await active_total(engine, config) == 1

    texts = {}
    for session, answer in answers.items():
        action = re.search(r'action="([^"]+)"', answer)
        assert action is not None
        response = await client.post(
            html.unescape(action.group(1)),
            json={"Session": session, "DialCallStatus": "busy", "To": "+12125550199"},
            headers=config.auth,
        )
        assert response.status_code == 200
        texts[session] = response.text
    # The live call falls back to the next agent as usual; the ended one gets the no-agent answer.
    assert "<Dial" in texts[live]
    assert "<Dial" not in texts[ended]
    assert "<Hangup/>" in texts[ended]
    assert await active_total(engine, config) == 1
