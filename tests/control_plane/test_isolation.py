"""Two tenants, every route: the attacker's token with the victim's ids answers 404 (or 422 for ids
inside a body), lists never show the victim's rows, and the victim's data is unchanged afterwards.

The route table is read from the app itself, so a route added without a case here fails the test."""

from __future__ import annotations

import asyncio
import datetime
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest
from litestar import Litestar
from litestar.routes import WebSocketRoute
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from control_plane.analytics import aggregates
from control_plane.events.writer import write_events
from control_plane.live.hub import LiveHub
from control_plane.settings import ControlPlaneSettings
from shared.enums import EventKind
from shared.events import CallEvent, encode_events
from tests.control_plane.conftest import Account, register_account
from tests.control_plane.test_consumer import START_MS, full_call

# Routes that carry no tenant-owned id and read or change only the caller's own account.
SELF_ONLY = {
    ("POST", "/api/register"),
    ("POST", "/api/login"),
    ("POST", "/api/logout"),
    ("PUT", "/api/user/password"),
    ("PUT", "/api/profile/password"),
    ("GET", "/api/providers"),
    ("GET", "/api/voice-agents/providers"),
}


@dataclass
class Tenant:
    account: Account
    marker: str
    ids: dict[str, int] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)


async def _created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return dict(response.json())


async def populate(account: Account, marker: str) -> Tenant:
    """One of everything the API can create, named with ``marker`` so leaks are easy to spot."""
    t = Tenant(account=account, marker=marker)
    domain = await _created(await account.post("/api/domains", json={"domain": f"{marker}.example.net"}))
    t.ids["domain"] = domain["id"]
    t.names["domain"] = domain["domain"]
    for n in (1, 2):
        agent = await _created(
            await account.post(
                "/api/voice-agents",
                json={"name": f"{marker}-agent-{n}", "provider": "vapi", "service_value": f"+1415555010{n}"},
            )
        )
        t.ids[f"agent{n}"] = agent["id"]
    group = await _created(
        await account.post("/api/agent-groups", json={"name": f"{marker}-group", "strategy": "round_robin"})
    )
    t.ids["group"] = group["id"]
    await _created(
        await account.post(
            f"/api/agent-groups/{group['id']}/members",
            json={"agent_id": t.ids["agent1"], "priority": 1, "capacity": 2},
        )
    )
    rule = await _created(
        await account.post(
            "/api/inbound-routing-rules",
            json={
                "name": f"{marker}-rule",
                "pattern": "+1555*",
                "target_type": "group",
                "target_id": group["id"],
                "domain_id": t.ids["domain"],
            },
        )
    )
    t.ids["rule"] = rule["id"]
    trunk = await _created(
        await account.post(
            "/api/trunks", json={"name": f"{marker}-trunk", "cloudonix_trunk": f"{marker}-carrier"}
        )
    )
    t.ids["trunk"] = trunk["id"]
    out = await _created(
        await account.post(
            "/api/outbound-routing-rules",
            json={"name": f"{marker}-out", "destination_pattern": "+44*", "trunk_ids": [trunk["id"]]},
        )
    )
    t.ids["outbound"] = out["id"]
    user = await _created(
        await account.post(
            "/api/users",
            json={
                "name": f"{marker}-user",
                "email": f"{marker}@example.com",
                "password": "viewer password",
                "role": "viewer",
            },
        )
    )
    t.ids["user"] = user["id"]
    return t


async def add_call(t: Tenant, cp_settings: ControlPlaneSettings) -> None:
    """A finished call (record, timeline, CDR, audit rows) written by the event consumer's writer, with
    the tenant's marker in its domain so a leak shows."""
    token = uuid.uuid4().hex
    engine = create_async_engine(cp_settings.database_url, pool_size=1)
    try:
        async with engine.begin() as conn, AsyncSession(bind=conn) as session:
            await write_events(session, full_call(t.account.tenant_id, token, domain=t.names["domain"]))
            await aggregates.rebuild(session, t.account.tenant_id)  # until the consumer keeps call_stats
    finally:
        await engine.dispose()
    t.names["session_token"] = token
    t.ids["call_record"] = (await t.account.get("/api/call-records")).json()["data"][0]["id"]
    t.ids["cdr"] = (await t.account.get("/api/cdr")).json()["data"][0]["id"]
    queued = await t.account.post("/api/exports", json={"type": "call_records", "format": "ndjson"})
    assert queued.status_code == 202, queued.text
    t.ids["export"] = queued.json()["id"]


# Path parameter name -> which of the victim's objects fills it.
PARAM_OBJECT = {
    "agent_id": "agent1",
    "group_id": "group",
    "domain_id": "domain",
    "rule_id": None,  # inbound or outbound, decided by the path
    "trunk_id": "trunk",
    "user_id": "user",
    "record_id": "call_record",
    "cdr_id": "cdr",
    "export_id": "export",
    "session_token": "session_token",  # a name, not an id (see fill)
}


def body_for(method: str, path: str, attacker: Tenant) -> Any:
    """A body that is valid on its own, so only the victim's id in the path can make it fail."""
    a = attacker.ids
    if method in ("GET", "DELETE"):
        return None
    if path.endswith("/toggle") or path.endswith("/validate") or path.endswith("/rotate-key"):
        return None
    if path.endswith("/reset-strategy"):
        return None
    if path.endswith("/reorder"):
        return {"agent_ids": [a["agent1"]]}
    if path.endswith("/bulk-update"):
        return {"members": [{"agent_id": a["agent1"], "priority": 3}]}
    if re.search(r"/(members|memberships)$", path):
        if method == "POST":
            return {"agent_id": a["agent2"], "priority": 2, "capacity": 1}
        return {"members": [{"agent_id": a["agent1"], "priority": 1, "capacity": 1}]}
    if re.search(r"/(members|memberships)/\{agent_id:int\}$", path):
        return {"priority": 7}
    if path.startswith("/api/domains/"):
        return {"allowed_networks": []}
    if path.startswith("/api/users/"):
        return {"name": "hijacked"}
    return {"name": "hijacked"}


def fill(path: str, victim: Tenant) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "rule_id":
            return str(victim.ids["outbound" if "outbound" in path else "rule"])
        key = PARAM_OBJECT[name]  # a KeyError here means: teach this test the new parameter
        assert key is not None
        if match.group(2) == "str":
            return victim.names[key]
        return str(victim.ids[key])

    return re.sub(r"\{(\w+):(int|str)\}", one, path)


def api_routes(app: Litestar) -> set[tuple[str, str]]:
    routes = set()
    for route in app.routes:
        if not route.path.startswith("/api"):
            continue
        if isinstance(route, WebSocketRoute):
            routes.add(("WS", route.path))
        for method in getattr(route, "methods", set()) - {"OPTIONS", "HEAD"}:
            routes.add((method, route.path))
    return routes


async def live_feed_isolation(
    app: Litestar, cp_settings: ControlPlaneSettings, victim: Tenant, attacker: Tenant
) -> list[str]:
    """WS /api/live has no ids: the tenant comes from the token. The attacker's token opens the
    attacker's feed, and that feed's NATS subscription delivers the attacker's call events and never
    the victim's (over real NATS; tests/control_plane/test_live.py does the same over a websocket)."""
    hub: LiveHub = app.state.live_hub
    failures: list[str] = []
    tenant_id = await hub.tenant_of(attacker.account.token)
    if tenant_id != attacker.account.tenant_id:
        return [f"WS /api/live: the attacker's token opened tenant {tenant_id}'s feed"]
    client = hub.join(tenant_id)
    nc = await nats.connect(cp_settings.nats_url)
    try:
        deadline = time.monotonic() + 10
        while not any('"stats"' in frame for frame in client.queue):  # subscribed once stats go out
            assert time.monotonic() < deadline, "no stats from the live feed"
            await asyncio.sleep(0.02)
        for t in (victim, attacker):
            event = CallEvent(
                event_id=uuid.uuid4().hex,
                kind=EventKind.ROUTED,
                tenant_id=t.account.tenant_id,
                domain=t.names["domain"],
                session_token=f"{t.marker}-live",
                occurred_at=time.time(),
                outcome="no_route",
            )
            prefix = cp_settings.events_subject_prefix
            await nc.publish(f"{prefix}.{t.account.tenant_id}.routed", encode_events([event]))
        while not any(f"{attacker.marker}-live" in frame for frame in client.queue):
            if time.monotonic() > deadline:
                failures.append("WS /api/live: the attacker's own event never arrived")
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # time for a leak to show
        if any(victim.marker in frame for frame in client.queue):
            failures.append("WS /api/live: the attacker's feed shows the victim's events")
    finally:
        hub.leave(client)
        await nc.close()
    return failures


async def victim_state(victim: Tenant) -> list[Any]:
    acc = victim.account
    urls = [
        "/api/tenant",
        "/api/domains",
        "/api/voice-agents",
        "/api/agent-groups",
        f"/api/agent-groups/{victim.ids['group']}/members",
        "/api/inbound-routing-rules",
        "/api/outbound-routing-rules",
        "/api/trunks",
        "/api/users",
        f"/api/calls/{victim.names['session_token']}",
        "/api/call-records",
        "/api/cdr",
        "/api/webhook-audit",
    ]
    state = []
    for url in urls:
        response = await acc.get(url)
        assert response.status_code == 200, (url, response.text)
        state.append(response.json())
    return state


@pytest.fixture
async def tenants(client: Any, cp_settings: ControlPlaneSettings) -> tuple[Tenant, Tenant]:
    victim = await populate(await register_account(client, "Victim"), f"victim{uuid.uuid4().hex[:8]}")
    attacker = await populate(await register_account(client, "Attacker"), f"attacker{uuid.uuid4().hex[:8]}")
    for t in (victim, attacker):
        await add_call(t, cp_settings)
    return victim, attacker


async def test_every_route_keeps_tenants_apart(
    cp_app: Litestar, cp_settings: ControlPlaneSettings, tenants: tuple[Tenant, Tenant]
) -> None:
    victim, attacker = tenants
    before = await victim_state(victim)
    covered: set[tuple[str, str]] = set()
    failures: list[str] = []
    routes = api_routes(cp_app)

    # 1. Every route with an id in its path: the victim's ids answer 404 to the attacker.
    for method, path in sorted(routes):
        if "{" not in path:
            continue
        url = fill(path, victim)
        body = body_for(method, path, attacker)
        response = await attacker.account.client.request(
            method, url, json=body, headers=attacker.account.headers
        )
        covered.add((method, path))
        if response.status_code != 404:
            failures.append(f"{method} {url}: {response.status_code} {response.text[:200]}")
        elif victim.marker in response.text:
            failures.append(f"{method} {url}: 404 body leaks victim data")

    # 2. Every list/read route without ids: nothing of the victim's shows.
    websockets = {route for route in routes if route[0] == "WS"}
    covered |= websockets & {("WS", "/api/live")}  # checked at the end (its events reach the records)
    for method, path in sorted(routes):
        if "{" in path or method != "GET" or (method, path) in SELF_ONLY:
            continue
        response = await attacker.account.get(path)
        covered.add((method, path))
        if response.status_code != 200:
            failures.append(f"GET {path}: {response.status_code} {response.text[:200]}")
        if victim.marker in response.text:
            failures.append(f"GET {path}: shows victim data")

    # 3. Writes without ids in the path that reference the victim's objects in the body are refused.
    v = victim.ids
    body_refs: list[tuple[str, str, dict[str, Any], set[int]]] = [
        (
            "POST",
            "/api/inbound-routing-rules",
            {"pattern": "*", "target_type": "agent", "target_id": v["agent1"]},
            {422},
        ),
        (
            "POST",
            "/api/inbound-routing-rules",
            {"pattern": "*", "target_type": "group", "target_id": v["group"]},
            {422},
        ),
        (
            "POST",
            "/api/inbound-routing-rules",
            {
                "pattern": "*",
                "target_type": "group",
                "target_id": attacker.ids["group"],
                "domain_id": v["domain"],
            },
            {422},
        ),
        (
            "POST",
            "/api/outbound-routing-rules",
            {"name": "x", "destination_pattern": "*", "trunk_ids": [v["trunk"]]},
            {422},
        ),
        (
            "POST",
            "/api/inbound-routing-rules/test",
            {"to": "+15551234567", "domain": victim.names["domain"]},
            {422},
        ),
        (
            "POST",
            "/api/routing/replay",
            {"config": {"groups": [{"id": v["group"], "enabled": False}]}},
            {422},
        ),
        (
            "POST",
            "/api/routing/replay",
            {"config": {"inbound_rules": [{"id": v["rule"], "enabled": False}]}},
            {422},
        ),
        (
            "POST",
            "/api/routing/replay",
            {"config": {"groups": [{"id": attacker.ids["group"], "members": [{"agent_id": v["agent1"]}]}]}},
            {422},
        ),
        ("POST", "/api/domains", {"domain": victim.names["domain"]}, {409}),
        (
            "POST",
            "/api/voice-agents",
            {"name": f"{attacker.marker}-a3", "provider": "vapi", "service_value": "+14155550109"},
            {201},
        ),
        ("POST", "/api/agent-groups", {"name": f"{attacker.marker}-g2"}, {201}),
        ("POST", "/api/trunks", {"name": f"{attacker.marker}-t2", "cloudonix_trunk": "x"}, {201}),
        (
            "POST",
            "/api/users",
            {
                "name": "u",
                "email": f"{attacker.marker}2@example.com",
                "password": "12345678",
                "role": "viewer",
            },
            {201},
        ),
        # An export job filtered by the victim's agent: queued, and the file can hold none of the
        # victim's rows (the streaming exports are checked with the other reads above).
        ("POST", "/api/exports", {"type": "call_records", "filters": {"agent_id": v["agent1"]}}, {202, 422}),
        ("PUT", "/api/tenant", {"name": f"{attacker.marker} renamed"}, {200}),
        ("PUT", "/api/settings", {"settings": {"timezone": "Europe/Paris"}}, {200}),
        ("PUT", "/api/user", {"name": "Attacker"}, {200}),
        ("PUT", "/api/profile", {"name": "Attacker"}, {200}),
    ]
    for method, path, body, expected in body_refs:
        response = await attacker.account.client.request(
            method, path, json=body, headers=attacker.account.headers
        )
        covered.add((method, path))
        if response.status_code not in expected:
            failures.append(f"{method} {path} {body}: {response.status_code} {response.text[:200]}")
        if victim.marker in response.text and response.status_code < 400:
            failures.append(f"{method} {path}: answer shows victim data")
    # Members bodies naming the victim's agent, on the attacker's own group.
    g = attacker.ids["group"]
    for method, path, body in [
        ("POST", f"/api/agent-groups/{g}/members", {"agent_id": v["agent2"]}),
        ("PUT", f"/api/agent-groups/{g}/members", {"members": [{"agent_id": v["agent2"]}]}),
        ("PATCH", f"/api/agent-groups/{g}/memberships/reorder", {"agent_ids": [v["agent1"]]}),
    ]:
        response = await attacker.account.client.request(
            method, path, json=body, headers=attacker.account.headers
        )
        if response.status_code not in (404, 422):
            failures.append(f"{method} {path} {body}: {response.status_code} {response.text[:200]}")

    # Analytics filtered by the victim's agent or group: 422 naming the field, never its figures.
    for path in ("/api/analytics/metrics", "/api/analytics/overview", "/api/analytics/trends"):
        for field_name, value in (("agent_id", v["agent1"]), ("group_id", v["group"])):
            response = await attacker.account.get(path, params={field_name: value})
            fields = (
                [e.get("field") for e in response.json().get("errors", [])]
                if response.status_code == 422
                else []
            )
            if response.status_code != 422 or field_name not in fields:
                failures.append(
                    f"GET {path}?{field_name}=<victim's>: {response.status_code} {response.text[:200]}"
                )
    response = await attacker.account.get("/api/analytics/agents", params={"group_id": v["group"]})
    if response.status_code != 422:
        failures.append(f"GET /api/analytics/agents?group_id=<victim's>: {response.status_code}")
    for path in ("/api/analytics/agents", "/api/analytics/groups", "/api/analytics/overview"):
        body = (await attacker.account.get(path)).json()
        if victim.marker in str(body):
            failures.append(f"GET {path}: shows victim data")
    call_day = datetime.datetime.fromtimestamp(START_MS / 1000, datetime.UTC).date()
    around_the_call = {
        "start_date": str(call_day - datetime.timedelta(days=1)),
        "end_date": str(call_day + datetime.timedelta(days=1)),
    }
    overview = (await attacker.account.get("/api/analytics/overview", params=around_the_call)).json()
    if overview["totals"]["calls"] != 1:  # the attacker's own call only
        failures.append(f"GET /api/analytics/overview counts {overview['totals']['calls']} calls, not 1")

    # A dry run on the attacker's side never matches the victim's rules.
    dry = await attacker.account.post("/api/inbound-routing-rules/test", json={"to": "+15551234567"})
    assert victim.marker not in dry.text
    # A replay on the attacker's side replays the attacker's calls only, through the attacker's rules.
    replay = await attacker.account.post("/api/routing/replay", json={})
    assert replay.status_code == 200, replay.text
    assert victim.marker not in replay.text
    assert replay.json()["calls"] <= 1

    assert not failures, "\n".join(failures)
    uncovered = routes - covered - SELF_ONLY
    assert not uncovered, f"routes without an isolation case: {sorted(uncovered)}"
    assert await victim_state(victim) == before
    # The app's lifespan (and so its LiveHub, NATS and Redis clients) runs in the test client's portal
    # loop: check the feed there.
    portal = attacker.account.client.blocking_portal
    live_failures = await asyncio.to_thread(
        portal.call, live_feed_isolation, cp_app, cp_settings, victim, attacker
    )
    assert not live_failures, "\n".join(live_failures)
    print(f"isolation: {len(covered)} routes checked")


# Routes outside /api: they answer the same to everyone and carry no tenant data (probes, metrics,
# the OpenAPI document and its viewers, and the dashboard's page and static files, which fetch all
# data through /api with the user's token).
PUBLIC_NON_API = re.compile(r"^/(health|ready|metrics|schema(/.*)?|swagger(/.*)?|ui(/.*)?)?$")


async def test_non_api_routes_carry_no_tenant_data(cp_app: Litestar, client: Any) -> None:
    others = sorted({route.path for route in cp_app.routes if not route.path.startswith("/api")})
    unknown = [path for path in others if not PUBLIC_NON_API.match(path)]
    assert not unknown, f"routes outside /api without a case here: {unknown}"
    # The dashboard answers without a token and its page holds no data of its own.
    page = await client.get("/")
    assert page.status_code == 200
    assert "tenant" not in page.text.lower()
    assert (await client.get("/ui/app.js")).status_code == 200
