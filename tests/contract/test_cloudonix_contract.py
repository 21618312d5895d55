"""Replays Cloudonix's request shapes (SPEC §3, ../shared/fixtures/cloudonix) through the engine
and checks the CXML with an XML parser: GET query, POST JSON, POST form, header-only session,
upper-case statuses, missing SessionData, dial-status fallback chains and outbound calls."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from nats.js.kv import KeyValue

from routing_engine.app import EngineApp
from shared.enums import NoAgentAction
from shared.snapshot import GroupSettings
from tests.routing_engine.harness import TenantConfig, demo_tenant, load_fixture, new_session, publish

INBOUND = load_fixture("application-inbound.json")
SUBSCRIBER = load_fixture("application-subscriber-outbound.json")
DIAL_NOANSWER = load_fixture("application-dial-status-noanswer.json")
HEADERS = load_fixture("application-headers.json")


def payload(base: dict[str, Any], config: TenantConfig, session: str, **changes: Any) -> dict[str, Any]:
    body = dict(base)
    body.update(Session=session, CallSid=session, Domain=config.domain, AccountSid=config.domain)
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def flat(body: dict[str, Any]) -> dict[str, str]:
    """What the same request looks like as a query string or form (nested objects dropped)."""
    return {k: str(v) for k, v in body.items() if not isinstance(v, dict | list)}


def headers(config: TenantConfig, session: str | None = None, **extra: str) -> dict[str, str]:
    out = {
        "User-Agent": HEADERS["User-Agent"],
        "Authorization": f"Bearer {config.key}",
        "X-CX-Domain": config.domain,
    }
    if session:
        out["X-CX-Session"] = session
    out.update(extra)
    return out


def parse(response: httpx.Response) -> ET.Element:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.content)
    assert root.tag == "Response"
    assert len(root) > 0, "empty CXML document"
    return root


def dialled(root: ET.Element) -> tuple[ET.Element, ET.Element]:
    dial = root.find("Dial")
    assert dial is not None, ET.tostring(root)
    assert len(dial) == 1
    return dial, dial[0]


def app_url(config: TenantConfig, dial_status: bool = False) -> str:
    return f"/api/voice/application/{config.domain}" + ("/dial-status" if dial_status else "")


async def send(
    client: httpx.AsyncClient,
    config: TenantConfig,
    shape: str,
    body: dict[str, Any],
    url: str | None = None,
    **extra_headers: str,
) -> httpx.Response:
    target = url or app_url(config)
    hdrs = headers(config, **extra_headers)
    if shape == "json":
        return await client.post(target, json=body, headers=hdrs)
    if shape == "form":
        return await client.post(target, data=flat(body), headers=hdrs)
    return await client.get(target, params=flat(body), headers=hdrs)


@pytest.mark.parametrize("shape", ["json", "form", "get"])
async def test_inbound_call_dials_first_priority_agent(
    client: httpx.AsyncClient, tenant: TenantConfig, shape: str
) -> None:
    session = new_session()
    root = parse(await send(client, tenant, shape, payload(INBOUND, tenant, session)))
    dial, service = dialled(root)
    assert service.tag == "Service"
    assert service.attrib == {"provider": "vapi"}
    assert service.text == "+12125550123"
    assert dial.get("method") == "POST"
    assert dial.get("timeout") == "30"
    assert dial.get("callerId") == "+14155550100"
    action = urlparse(dial.get("action", ""))
    assert action.scheme == "http"
    assert action.netloc == "engine.test"
    assert action.path == f"/api/voice/application/{tenant.domain}/dial-status"
    assert parse_qs(action.query)["attempt"] == ["1"]


async def test_repeated_request_answers_the_same_cxml(
    client: httpx.AsyncClient, tenant: TenantConfig
) -> None:
    body = payload(INBOUND, tenant, new_session())
    first = await send(client, tenant, "json", body)
    second = await send(client, tenant, "form", body)
    assert first.text == second.text


async def test_header_only_session_is_accepted(client: httpx.AsyncClient, tenant: TenantConfig) -> None:
    session = new_session()
    body = payload(INBOUND, tenant, session, Session=None, CallSid=None, From=None, To=None)
    response = await client.post(
        app_url(tenant),
        json=body,
        headers=headers(tenant, session, **{"X-CX-From": "+14155550100", "X-CX-To": "+12125550199"}),
    )
    _, service = dialled(parse(response))
    assert service.get("provider") == "vapi"


async def test_missing_session_data_and_upper_case_status(
    client: httpx.AsyncClient, tenant: TenantConfig
) -> None:
    body = payload(
        INBOUND, tenant, new_session(), SessionData=None, CallStatus="RINGING", Direction="INBOUND"
    )
    _, service = dialled(parse(await send(client, tenant, "json", body)))
    assert service.get("provider") == "vapi"


async def test_x_cx_apikey_header_authenticates(client: httpx.AsyncClient, tenant: TenantConfig) -> None:
    body = payload(INBOUND, tenant, new_session())
    response = await client.post(app_url(tenant), json=body, headers={"X-CX-APIKey": tenant.key})
    dialled(parse(response))


async def test_alias_path_reaches_the_domain(client: httpx.AsyncClient, tenant: TenantConfig) -> None:
    body = payload(INBOUND, tenant, new_session())
    response = await client.post(
        f"/api/voice/application/app-{tenant.tenant_id}", json=body, headers=headers(tenant)
    )
    dial, _ = dialled(parse(response))
    assert f"/api/voice/application/{tenant.domain}/dial-status" in dial.get("action", "")


@pytest.mark.parametrize("shape", ["json", "form", "get"])
@pytest.mark.parametrize("status", ["no-answer", "NOANSWER", "Busy", "failed", "canceled", "unknown"])
async def test_failed_dial_falls_back_to_next_agent(
    client: httpx.AsyncClient, tenant: TenantConfig, shape: str, status: str
) -> None:
    session = new_session()
    dial, _ = dialled(parse(await send(client, tenant, shape, payload(INBOUND, tenant, session))))
    action = urlparse(dial.get("action", ""))
    url = f"{action.path}?{action.query}"
    body = payload(DIAL_NOANSWER, tenant, session, DialCallStatus=status)
    dial2, service2 = dialled(parse(await send(client, tenant, shape, body, url=url)))
    assert service2.get("provider") == "synthflow"
    assert service2.get("username") == "sf-user"
    assert service2.get("password") == 'p&ss"<w>'
    assert parse_qs(urlparse(dial2.get("action", "")).query)["attempt"] == ["2"]


async def test_fallback_chain_ends_with_no_agent_answer(
    client: httpx.AsyncClient, tenant: TenantConfig
) -> None:
    session = new_session()
    dial, _ = dialled(parse(await send(client, tenant, "json", payload(INBOUND, tenant, session))))
    seen = []
    for _ in range(3):
        action = urlparse(dial.get("action", ""))
        body = payload(DIAL_NOANSWER, tenant, session, DialCallStatus="busy")
        root = parse(await send(client, tenant, "json", body, url=f"{action.path}?{action.query}"))
        if root.find("Dial") is None:
            break
        dial, element = dialled(root)
        seen.append(element.tag)
    # max_attempts 3: vapi, synthflow, sip, then the group's no-agent answer.
    assert seen == ["Service", "Sip"]
    assert root.find("Say") is not None
    assert root.find("Say").text == "All busy."  # type: ignore[union-attr]
    assert root.find("Hangup") is not None


@pytest.mark.parametrize("status", ["completed", "ANSWERED"])
async def test_answered_dial_hangs_up(client: httpx.AsyncClient, tenant: TenantConfig, status: str) -> None:
    session = new_session()
    await send(client, tenant, "json", payload(INBOUND, tenant, session))
    body = payload(DIAL_NOANSWER, tenant, session, DialCallStatus=status)
    root = parse(await send(client, tenant, "json", body, url=app_url(tenant, True) + "?attempt=1"))
    assert [e.tag for e in root] == ["Hangup"]


async def test_dial_status_with_unrecognised_status_answers_no_agent(
    client: httpx.AsyncClient, tenant: TenantConfig
) -> None:
    session = new_session()
    await send(client, tenant, "json", payload(INBOUND, tenant, session))
    body = payload(DIAL_NOANSWER, tenant, session, DialCallStatus="exploded")
    root = parse(await send(client, tenant, "json", body, url=app_url(tenant, True) + "?attempt=1"))
    assert [e.tag for e in root] == ["Say", "Hangup"]


async def test_agent_target_dials_the_sip_agent(client: httpx.AsyncClient, tenant: TenantConfig) -> None:
    body = payload(INBOUND, tenant, new_session(), To="+18005550100")
    _, sip = dialled(parse(await send(client, tenant, "json", body)))
    assert sip.tag == "Sip"
    assert sip.text == "sip:agent@pbx.example"


async def test_agent_target_failure_does_not_retry(client: httpx.AsyncClient, tenant: TenantConfig) -> None:
    session = new_session()
    await send(client, tenant, "json", payload(INBOUND, tenant, session, To="+18005550100"))
    body = payload(DIAL_NOANSWER, tenant, session, To="+18005550100", DialCallStatus="busy")
    root = parse(await send(client, tenant, "json", body, url=app_url(tenant, True) + "?attempt=1"))
    assert root.find("Dial") is None
    assert root.find("Say") is not None


async def test_no_matching_rule_answers_tenant_no_agent(
    client: httpx.AsyncClient, tenant: TenantConfig
) -> None:
    body = payload(INBOUND, tenant, new_session(), To="+33123456789")
    root = parse(await send(client, tenant, "json", body))
    assert [e.tag for e in root] == ["Say", "Hangup"]


async def test_subscriber_call_uses_outbound_rule(client: httpx.AsyncClient, tenant: TenantConfig) -> None:
    body = payload(SUBSCRIBER, tenant, new_session())
    dial, number = dialled(parse(await send(client, tenant, "json", body)))
    assert number.tag == "Number"
    assert number.text == "00442071234567"  # strip "+", add "00"
    assert dial.get("callerId") == "+12125550100"
    assert dial.get("trunks") == "carrier-out,backup-out"
    assert dial.get("action") is None


async def test_subscriber_call_without_rule_takes_default_trunk(
    client: httpx.AsyncClient, tenant: TenantConfig
) -> None:
    body = payload(SUBSCRIBER, tenant, new_session(), To="+33123456789")
    dial, number = dialled(parse(await send(client, tenant, "json", body)))
    assert number.text == "+33123456789"
    assert dial.get("trunks") == "default-out"
    assert dial.get("callerId") == "1004"


async def test_subscriber_call_to_inbound_number_takes_inbound_rule(
    client: httpx.AsyncClient, tenant: TenantConfig
) -> None:
    body = payload(SUBSCRIBER, tenant, new_session(), To="+12125550199", Direction="outbound-api")
    _, service = dialled(parse(await send(client, tenant, "json", body)))
    assert service.tag == "Service"


async def test_subscriber_without_any_route_answers_no_route(
    client: httpx.AsyncClient, kv: KeyValue, engine: EngineApp
) -> None:
    config = demo_tenant()
    config = config.bump(trunks=[], outbound_rules=[])
    await publish(kv, engine, config)
    body = payload(SUBSCRIBER, config, new_session(), To="+33123456789")
    root = parse(await send(client, config, "json", body))
    assert root.find("Dial") is None


@pytest.mark.parametrize(
    ("action", "expected"),
    [(NoAgentAction.REJECT_BUSY, "busy"), (NoAgentAction.REJECT_CONGESTION, "congestion")],
)
async def test_full_group_answers_its_reject(
    client: httpx.AsyncClient, kv: KeyValue, engine: EngineApp, action: NoAgentAction, expected: str
) -> None:
    config = demo_tenant(capacities=(1, 1, 1), group_settings=GroupSettings(no_agent_action=action))
    await publish(kv, engine, config)
    for _ in range(3):
        dialled(parse(await send(client, config, "json", payload(INBOUND, config, new_session()))))
    root = parse(await send(client, config, "json", payload(INBOUND, config, new_session())))
    reject = root.find("Reject")
    assert reject is not None
    assert reject.get("reason") == expected


async def test_public_url_setting_builds_action_urls(kv: KeyValue) -> None:
    from tests.routing_engine.harness import asgi_client, engine_settings, running_engine

    settings = engine_settings(engine_public_url="https://lb.example.com/")
    async with running_engine(settings) as app, asgi_client(app) as c:
        config = demo_tenant()
        await publish(kv, app, config)
        dial, _ = dialled(parse(await send(c, config, "json", payload(INBOUND, config, new_session()))))
        assert dial.get("action", "").startswith(
            f"https://lb.example.com/api/voice/application/{config.domain}/dial-status?attempt=1&agent="
        )
