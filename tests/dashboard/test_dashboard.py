"""The dashboard end to end in headless Chromium against the real control plane (granian over HTTP) and
the real services: register, sign in, create agents (the provider's fields, errors next to the field),
a group with two members ordered by drag and drop and by the keyboard buttons, a domain (its key shown
once) and an inbound rule, the dry run, every page rendered, and a viewer who sees no edit controls.

The tests run in file order and share one signed-in browser page, like a user's session. A screenshot of
every page lands in .vlb/test-output/screenshots/."""

from __future__ import annotations

import asyncio
import csv
import datetime
import gzip
import io
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from playwright.async_api import Browser, Download, Page, expect
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from control_plane.events.writer import write_events
from routing_engine import simulate
from tests.control_plane.live_harness import LiveTenant, cdr, session_update, webhook
from tests.control_plane.test_consumer import full_call
from tests.dashboard.conftest import new_page, screenshot

PASSWORD = "correct horse battery"
STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
async def page(browser: Browser, dashboard_url: str) -> AsyncIterator[Page]:
    context, opened = await new_page(browser, dashboard_url)
    try:
        yield opened
    finally:
        await context.close()


def field(page: Page, name: str) -> Any:
    """A form field's wrapper by the API field it edits."""
    return page.locator(f'#main .field[data-field="{name}"]').first


async def api(dashboard_url: str, method: str, path: str, **kw: Any) -> Any:
    async with httpx.AsyncClient(base_url=dashboard_url) as client:
        response = await client.request(
            method, path, headers={"Authorization": f"Bearer {STATE['token']}"}, **kw
        )
    response.raise_for_status()
    return response.json()


async def goto(page: Page, route: str, heading: str) -> None:
    await page.goto(f"/#{route}")
    await expect(page.locator("#main h1")).to_have_text(heading)


async def test_dashboard_is_served_without_touching_the_api(dashboard_url: str) -> None:
    async with httpx.AsyncClient(base_url=dashboard_url) as client:
        index = await client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in index.headers["content-security-policy"]
        assert (
            (await client.get("/ui/app.js"))
            .headers["content-type"]
            .startswith(("text/javascript", "application/javascript"))
        )
        assert (await client.get("/ui/missing.js")).status_code == 404
        schema = (await client.get("/schema/openapi.json")).json()
        assert not [
            p
            for p in schema["paths"]
            if not p.startswith("/api") and p not in ("/health", "/ready", "/metrics")
        ]
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/api/voice-agents")).status_code == 401


async def test_register_shows_field_errors_then_creates_the_tenant(page: Page) -> None:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    STATE["email"] = email
    await page.goto("/")
    await expect(page.locator("#main h1")).to_have_text("Sign in")
    await screenshot(page, "login")
    await page.get_by_role("link", name="Create a tenant").click()
    await expect(page.locator("#main h1")).to_have_text("Create a tenant")

    # Nothing filled in: each required field says so, next to itself, before anything is sent.
    await page.get_by_role("button", name="Create tenant").click()
    await expect(field(page, "email").locator(".field-error")).to_have_text("E-mail is required.")

    await page.get_by_label("Your name", exact=True).fill("Ada Admin")
    await page.get_by_label("E-mail", exact=True).fill(email)
    await page.get_by_label("Organisation", exact=True).fill("Acme Voice")
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_label("Repeat the password", exact=True).fill("something else")
    await page.get_by_role("button", name="Create tenant").click()
    # The API's 422 names the field: the message sits under it, and the field is marked invalid.
    error = field(page, "password_confirmation").locator(".field-error")
    await expect(error).to_have_text(re.compile("does not match"))
    await expect(page.get_by_label("Repeat the password", exact=True)).to_have_attribute(
        "aria-invalid", "true"
    )
    await screenshot(page, "register-field-error")

    await page.get_by_label("Repeat the password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Create tenant").click()
    await expect(page.locator("#main h1")).to_have_text("Overview")
    await expect(page.locator("#who")).to_contain_text("Ada Admin")
    STATE["token"] = await page.evaluate("JSON.parse(sessionStorage.getItem('vlb.session')).token")


async def tab_to(page: Page, selector: str, presses: int = 15) -> None:
    """Press Tab until ``selector`` has the focus (bounded), as a keyboard user would."""
    for _ in range(presses):
        await page.keyboard.press("Tab")
        if await page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


async def test_sign_out_and_sign_in_again_with_the_keyboard(page: Page) -> None:
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#main h1")).to_have_text("Sign in")
    await page.get_by_label("E-mail", exact=True).fill(STATE["email"])
    await page.get_by_label("Password", exact=True).fill("wrong password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#main .alert.error")).to_contain_text("Invalid e-mail or password")

    # Keyboard only: Tab to each field (the focus ring shows), type, Enter submits.
    await page.goto("/#/login")
    await expect(page.locator("#main h1")).to_have_text("Sign in")
    await tab_to(page, "input[name=email]")
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "no visible focus on the e-mail field"
    await page.keyboard.type(STATE["email"])
    await tab_to(page, "input[name=password]", presses=2)
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.locator("#main h1")).to_have_text("Overview")
    STATE["token"] = await page.evaluate("JSON.parse(sessionStorage.getItem('vlb.session')).token")


async def test_create_agents_with_the_providers_fields(page: Page, dashboard_url: str) -> None:
    await goto(page, "/agents", "Voice agents")
    await page.get_by_role("button", name="New voice agent").click()
    await expect(page.locator("#main h1")).to_have_text("New voice agent")

    # Synthflow needs credentials: the form shows them as required and checks them before sending.
    await page.get_by_label("Provider", exact=True).select_option("synthflow")
    await expect(field(page, "username")).to_be_visible()
    await expect(field(page, "password")).to_be_visible()
    await expect(field(page, "service_value").locator(".help")).to_contain_text("Synthflow")
    await page.get_by_label("Name", exact=True).fill("Sales bot")
    await page.get_by_label("Service value", exact=True).fill("+12125550123")
    await page.get_by_role("button", name="Create voice agent").click()
    await expect(field(page, "username").locator(".field-error")).to_have_text("Username is required.")
    await expect(field(page, "password").locator(".field-error")).to_have_text("Password is required.")
    await screenshot(page, "agent-form-required")

    # Vapi needs none; a service value it does not accept comes back from the API, next to the field.
    await page.get_by_label("Provider", exact=True).select_option("vapi")
    await expect(field(page, "username")).to_be_hidden()
    await page.get_by_label("Service value", exact=True).fill("not a number!")
    await page.get_by_role("button", name="Create voice agent").click()
    await expect(field(page, "service_value").locator(".field-error")).not_to_be_empty()
    await expect(page.get_by_label("Service value", exact=True)).to_have_attribute("aria-invalid", "true")
    await screenshot(page, "agent-form-api-error")

    await page.get_by_label("Service value", exact=True).fill("+12125550123")
    await page.get_by_role("button", name="Create voice agent").click()
    await expect(page.locator("#main h1")).to_have_text("Voice agents")
    await expect(page.get_by_role("link", name="Sales bot")).to_be_visible()

    await page.get_by_role("button", name="New voice agent").click()
    await page.get_by_label("Name", exact=True).fill("Support bot")
    await page.get_by_label("Provider", exact=True).select_option("synthflow")
    await page.get_by_label("Service value", exact=True).fill("+12125550124")
    await page.get_by_label("Username", exact=True).fill("acme")
    await page.get_by_label("Password", exact=True).fill("s3cret-pass")
    await page.get_by_role("button", name="Create voice agent").click()
    await expect(page.get_by_role("link", name="Support bot")).to_be_visible()

    # Search, and the row's toggle.
    await page.get_by_label("Search", exact=True).fill("support")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page.locator("#main tbody tr")).to_have_count(1)
    await page.get_by_role("button", name="Disable Support bot").click()
    await expect(page.get_by_role("button", name="Enable Support bot")).to_be_visible()
    await page.get_by_role("button", name="Enable Support bot").click()
    await expect(page.get_by_role("button", name="Disable Support bot")).to_be_visible()
    await page.get_by_role("button", name="Clear").click()
    await expect(page.locator("#main tbody tr")).to_have_count(2)
    await screenshot(page, "agents")
    agents = (await api(dashboard_url, "GET", "/api/voice-agents"))["data"]
    assert {a["name"]: a["has_credentials"] for a in agents} == {"Sales bot": False, "Support bot": True}
    assert all(a["enabled"] for a in agents)
    STATE["agents"] = {a["name"]: a["id"] for a in agents}


async def test_group_with_two_members_ordered_by_drag_and_by_buttons(page: Page, dashboard_url: str) -> None:
    await goto(page, "/groups", "Agent groups")
    await page.get_by_role("button", name="New group").click()
    await expect(page.locator("#main h1")).to_have_text("New agent group")
    await page.get_by_label("Name", exact=True).fill("Front desk")
    await page.get_by_label("Strategy", exact=True).select_option("priority")
    await page.get_by_label("Max attempts per call", exact=True).fill("42")
    await page.get_by_role("button", name="Create group").click()
    # Out of range: the API's error names settings.max_attempts; it shows under that field.
    await expect(field(page, "settings.max_attempts").locator(".field-error")).not_to_be_empty()
    await page.get_by_label("Max attempts per call", exact=True).fill("2")
    await page.get_by_role("button", name="Create group").click()
    await expect(page.locator("#main h1")).to_have_text("Group: Front desk")

    for name, provider, capacity in (("Sales bot", "vapi", "2"), ("Support bot", "synthflow", "3")):
        await page.get_by_label("Voice agent", exact=True).select_option(label=f"{name} ({provider})")
        await page.get_by_label("Capacity (0 = unlimited)", exact=True).fill(capacity)
        await page.get_by_role("button", name="Add member").click()
        await expect(page.locator(".member", has_text=name)).to_be_visible()
    members = page.locator("li.member")
    await expect(members).to_have_count(2)
    await expect(members.nth(0)).to_contain_text("Sales bot")
    await expect(page.locator(".member .counters").first).to_contain_text("Window calls")

    # Drag Support bot above Sales bot: priorities renumber 1, 2 and wait for Save.
    await members.nth(1).locator(".handle").drag_to(members.nth(0).locator(".member-name"))
    await expect(members.nth(0)).to_contain_text("Support bot")
    await page.get_by_role("button", name="Save members").click()
    await expect(page.locator(".toast", has_text="Members saved.")).to_be_visible()
    await expect(page.get_by_role("button", name="Save members")).to_be_hidden()
    await expect(members.nth(0)).to_contain_text("Support bot")
    group_id = int(page.url.rsplit("/", 1)[1])
    STATE["group"] = group_id
    stats = await api(dashboard_url, "GET", f"/api/agent-groups/{group_id}/members")
    order = sorted(stats["data"], key=lambda m: m["priority"])
    assert [(m["name"], m["priority"], m["capacity"]) for m in order] == [
        ("Support bot", 1, 3),
        ("Sales bot", 2, 2),
    ]

    # The keyboard alternative: focus "Move … down", press Enter.
    await page.get_by_role("button", name="Move Support bot down").focus()
    await page.keyboard.press("Enter")
    await expect(members.nth(0)).to_contain_text("Sales bot")
    await page.get_by_role("button", name="Save members").click()
    await expect(page.get_by_role("button", name="Save members")).to_be_hidden()
    await expect(members.nth(0)).to_contain_text("Sales bot")
    stats = await api(dashboard_url, "GET", f"/api/agent-groups/{group_id}/members")
    assert [m["name"] for m in sorted(stats["data"], key=lambda m: m["priority"])] == [
        "Sales bot",
        "Support bot",
    ]

    await page.get_by_role("button", name="Reset balancing counters").click()
    await page.get_by_role("dialog").get_by_role("button", name="Reset").click()
    await expect(page.locator(".toast", has_text="Balancing counters cleared.")).to_be_visible()
    await screenshot(page, "group-members")


async def test_domain_key_shown_once_and_an_inbound_rule_with_its_dry_run(page: Page) -> None:
    await goto(page, "/domains", "Domains")
    await page.get_by_role("button", name="Add domain").click()
    await page.get_by_label("Cloudonix domain", exact=True).fill("acme.cloudonix.net")
    await page.get_by_role("button", name="Add domain").last.click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("shown only now")
    key = await dialog.locator("input.secret").input_value()
    assert len(key) >= 20
    STATE["domain"], STATE["key"] = "acme.cloudonix.net", key
    await screenshot(page, "domain-key-once", full_page=False)
    await dialog.get_by_role("button", name="I have stored it").click()
    card = page.locator('article[data-domain="acme.cloudonix.net"]')
    await expect(card).to_contain_text("/api/voice/application/acme.cloudonix.net")
    await expect(card).not_to_contain_text(key)
    await screenshot(page, "domains")

    await goto(page, "/inbound", "Inbound rules")
    await page.get_by_role("button", name="New rule").click()
    rule = page.locator("form.rule-form")
    await rule.get_by_label("Name", exact=True).fill("New York")
    await rule.get_by_label("Called number pattern", exact=True).fill("+1212*")
    await rule.get_by_label("Send to", exact=True).select_option("group")
    await rule.get_by_label("Target", exact=True).select_option(label="Front desk")
    await rule.get_by_label("Domain", exact=True).select_option(label="acme.cloudonix.net")
    await rule.get_by_role("button", name="Create rule").click()
    await expect(page.locator("tr[data-rule]")).to_have_count(1)
    await expect(page.locator("tr[data-rule]")).to_contain_text("group: Front desk")

    dry = page.locator("form.dry-run")
    await dry.get_by_label("Called number (To)", exact=True).fill("+12125550199")
    await dry.get_by_label("Caller (From)", exact=True).fill("+14155550100")
    # The rule is limited to the domain: without it the call would not match.
    await dry.get_by_label("Domain", exact=True).select_option("acme.cloudonix.net")
    await dry.get_by_role("button", name="Test").click()
    await expect(page.locator(".dry-result")).to_contain_text("Matched")
    await expect(page.locator(".dry-result")).to_contain_text("“Front desk”")
    await expect(page.locator("tr.matched")).to_have_count(1)
    await screenshot(page, "inbound-rules-dry-run")
    await dry.get_by_label("Called number (To)", exact=True).fill("+33155550199")
    await dry.get_by_role("button", name="Test").click()
    await expect(page.locator(".dry-result")).to_contain_text("No rule matches")
    await expect(page.locator("tr.matched")).to_have_count(0)


async def metric(page: Page, label: str) -> Any:
    return page.locator(f'.metric-value[data-metric="{label}"]')


async def snapshot_reached_the_engine(engine_url: str, database_url: str, tenant_id: int) -> float:
    """Seconds until the engine runs the tenant's current config version (its /status, from loopback)."""
    db = create_async_engine(database_url, pool_size=1)
    try:
        async with db.connect() as conn:
            version = (
                await conn.execute(text("SELECT config_version FROM tenants WHERE id = :t"), {"t": tenant_id})
            ).scalar_one()
    finally:
        await db.dispose()
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=engine_url) as client:
        while time.perf_counter() - started < 15:
            try:
                tenants = (await client.get("/status")).json()["tenants"]
            except httpx.HTTPError:
                tenants = {}
            if tenants.get(str(tenant_id), {}).get("version", -1) >= version:
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
    raise AssertionError(f"the engine never ran version {version} of tenant {tenant_id}")


# The recorded call's fixtures carry its times (January 2026): moved to now, so it counts as today's.
FIXTURE_END_MS = 1768089611301
FIXTURE_START_MS = 1768089515449
MS_KEYS = ("callStartTime", "callAnswerTime", "callEndTime")
ISO_KEYS = ("createdAt", "modifiedAt", "startTime", "answerTime", "endTime")


def moved_to_now(body: Any, shift_ms: int) -> Any:
    if isinstance(body, list):
        return [moved_to_now(x, shift_ms) for x in body]
    if not isinstance(body, dict):
        return body
    out = {}
    for key, value in body.items():
        if key in MS_KEYS and isinstance(value, int):
            value += shift_ms
        elif key == "timestamp" and isinstance(value, int):
            value += shift_ms // 1000
        elif key in ISO_KEYS and isinstance(value, str):
            moved = datetime.datetime.fromisoformat(value) + datetime.timedelta(milliseconds=shift_ms)
            value = moved.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out[key] = moved_to_now(value, shift_ms)
    return out


def shift_to_now() -> int:
    """Milliseconds to add to the fixtures' times: the call ends now, or starts just after midnight
    (UTC, the tenant's zone) when that would put its start yesterday."""
    now = datetime.datetime.now(datetime.UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start_ms = max(
        int(now.timestamp() * 1000) - (FIXTURE_END_MS - FIXTURE_START_MS),
        int(midnight.timestamp() * 1000) + 1000,
    )
    return start_ms - FIXTURE_START_MS


async def test_a_simulated_call_shows_live_and_moves_the_overview(
    page: Page, browser: Browser, dashboard_url: str, engine_url: str, database_url: str
) -> None:
    """The config made in the browser reaches a real engine; a call sent with ``vlb simulate``
    (routing_engine.simulate) appears on the live page within a second, ends there after its session
    updates and CDR, and the overview's figures follow (active calls live, calls today)."""
    me = await api(dashboard_url, "GET", "/api/user")
    await snapshot_reached_the_engine(engine_url, database_url, me["tenant_id"])

    # The overview in a second tab of the same user (the session is per tab: hand it over).
    stored = await page.evaluate("sessionStorage.getItem('vlb.session')")
    context, overview = await new_page(browser, dashboard_url)
    await context.add_init_script(f"sessionStorage.setItem('vlb.session', {json.dumps(stored)})")
    try:
        await goto(overview, "/overview", "Overview")
        await expect(await metric(overview, "Calls today")).to_have_text("0")
        await expect(await metric(overview, "Active calls")).to_have_text("0")

        await goto(page, "/live", "Live calls")
        await expect(page.locator(".conn")).to_have_text("Live: connected.")
        tenant = LiveTenant(api=httpx.AsyncClient(), token=STATE["token"], tenant_id=me["tenant_id"])
        tenant.domain, tenant.key = STATE["domain"], STATE["key"]
        session = uuid.uuid4().hex
        STATE["session"] = session
        argv = ["--url", engine_url, "--domain", tenant.domain, "--key", tenant.key]
        argv += ["--to", "+12125550199", "--from", "+14155550100", "--session", session]
        sent = time.perf_counter()
        assert await asyncio.to_thread(simulate.main, argv) == 0
        row = page.locator(f'#live-active tr[data-token="{session}"]')
        await expect(row).to_be_visible()
        shown_s = time.perf_counter() - sent
        print(f"simulated call on the live page {shown_s * 1000:.0f} ms after it was sent")
        assert shown_s < 1.0, f"the call took {shown_s:.2f} s to appear on the live page"
        agent = (await api(dashboard_url, "GET", "/api/agent-groups/" + str(STATE["group"]) + "/members"))[
            "data"
        ]
        first = min(agent, key=lambda m: m["priority"])["name"]
        await expect(row).to_contain_text(first)
        await expect(row).to_contain_text("Front desk")
        await expect(row).to_contain_text("+14155550100")
        # The overview's active calls follow the feed's stats (every 2 s), without a reload.
        await expect(await metric(overview, "Active calls")).to_have_text("1")
        await expect(page.locator('[data-live="active"]')).to_have_text("1")
        # … and the capacity chart, read again when that count changed.
        agents_now = overview.locator("figure").filter(
            has=overview.get_by_text("Active calls per agent against capacity", exact=True)
        )
        row_now = agents_now.locator("tbody tr").filter(has=overview.get_by_text(first, exact=True))
        await expect(row_now.locator("td").nth(1)).to_have_text("1")

        async with httpx.AsyncClient(base_url=engine_url, timeout=5) as engine:
            shift = shift_to_now()
            update = moved_to_now(session_update(tenant, session, "connected"), shift)
            response = await webhook(engine, tenant, "update", update)
            assert response.status_code == 204, response.text
            await expect(row.locator(".badge").first).to_have_text("connected")
            await screenshot(page, "live")
            await screenshot(overview, "overview-active-call")
            response = await webhook(
                engine, tenant, "update", moved_to_now(session_update(tenant, session, "answer"), shift)
            )
            assert response.status_code == 204, response.text
            ended = page.locator(f'#live-ended tr[data-token="{session}"]')
            await expect(ended).to_be_visible()
            await expect(row).to_have_count(0)
            response = await webhook(engine, tenant, "cdr", moved_to_now(cdr(tenant, session), shift))
            assert response.status_code == 204, response.text
            await expect(ended.locator(".duration")).not_to_have_text("—")
        await tenant.api.aclose()
        await expect(await metric(overview, "Active calls")).to_have_text("0")
        await expect(page.locator('[data-live="active"]')).to_have_text("0")
        await screenshot(page, "live-ended")

        # Calls today counts the records the events consumer writes: reload until it has.
        calls_today = await metric(overview, "Calls today")
        for _ in range(50):
            await overview.reload()
            await expect(overview.locator("#main h1")).to_have_text("Overview")
            await expect(overview.locator("#main")).not_to_contain_text("Loading…")
            if await calls_today.text_content() == "1":
                break
            await asyncio.sleep(0.2)
        await expect(calls_today).to_have_text("1")
        await expect(await metric(overview, "Success rate")).to_have_text("100.0%")
        per_agent = overview.locator("figure").filter(has=overview.get_by_text("Calls per agent", exact=True))
        await expect(per_agent.locator("rect.bar")).to_have_count(2)
        await expect(per_agent.locator("svg text.value")).to_have_text(["1", "0"])
        await screenshot(overview, "overview")
        # The trend by hour over the chosen days: the call is in this hour's bucket.
        await overview.get_by_label("Trend by", exact=True).select_option("hour")
        await overview.get_by_role("button", name="Show").click()
        hourly = overview.locator("figure").filter(has=overview.get_by_text("Calls per hour", exact=True))
        await expect(hourly.locator("polyline")).to_have_count(2)
        await expect(hourly.locator("table tbody")).to_contain_text(
            datetime.datetime.now(datetime.UTC).strftime("%m-%d %H:00")
        )
        await screenshot(overview, "overview-by-hour")
        # Hours over more than 31 days: the API's 422 shows under the field it names; the figures stay.
        long_ago = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=60)).date().isoformat()
        await overview.get_by_label("From day", exact=True).fill(long_ago)
        await overview.get_by_role("button", name="Show").click()
        await expect(field(overview, "interval").locator(".field-error")).to_contain_text("31 days")
        await expect(calls_today).to_have_text("1")
        assert not overview.js_errors, overview.js_errors  # type: ignore[attr-defined]
    finally:
        await context.close()
    await goto(page, f"/calls/{session}", "Call timeline")
    await expect(page.locator(".timeline li").first).to_be_visible()
    await screenshot(page, "call-timeline-simulated")


async def test_every_other_page_renders(page: Page, dashboard_url: str, database_url: str) -> None:
    # A finished call, as the event consumer writes it, so the call pages have something to show.
    token = uuid.uuid4().hex
    STATE["written"] = token
    me = await api(dashboard_url, "GET", "/api/user")
    agent = STATE["agents"]["Sales bot"]
    engine = create_async_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn, AsyncSession(bind=conn) as session:
            events = full_call(me["tenant_id"], token, agent_id=agent, group_id=STATE["group"], rule_id=1)
            await write_events(session, events)
    finally:
        await engine.dispose()

    await goto(page, "/calls", "Call records")
    # This one and the simulated call.
    await expect(page.locator("#main tbody tr")).to_have_count(2)
    await expect(page.locator("#main tbody")).to_contain_text("Sales bot")
    await screenshot(page, "call-records")
    # A filter the API refuses shows its message next to that filter.
    await page.get_by_label("Min duration (s)", exact=True).fill("50")
    await page.get_by_label("Max duration (s)", exact=True).fill("10")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(field(page, "max_duration").locator(".field-error")).not_to_be_empty()
    await goto(page, "/calls", "Call records")
    await page.get_by_role("link", name=f"Timeline of call {token}").click()
    await expect(page.locator("#main h1")).to_have_text("Call timeline")
    await expect(page.locator(".timeline li").first).to_be_visible()
    await screenshot(page, "call-timeline")

    for route, heading, name in [
        ("/groups", "Agent groups", "groups"),
        ("/overview", "Overview", "overview-again"),
        ("/live", "Live calls", "live-idle"),
        ("/cdrs", "CDRs", "cdrs"),
        ("/audit", "Webhook audit", "webhook-audit"),
        ("/trunks", "Trunks", "trunks"),
        ("/outbound", "Outbound rules", "outbound-rules"),
        ("/settings", "Tenant settings", "settings"),
        ("/profile", "My profile", "profile"),
        ("/users", "Users", "users"),
    ]:
        await goto(page, route, heading)
        await expect(page.locator("#main")).not_to_contain_text("Loading…")
        await screenshot(page, name)
    assert not page.js_errors, page.js_errors  # type: ignore[attr-defined]
    assert not page.foreign_requests, page.foreign_requests  # type: ignore[attr-defined]

    await goto(page, "/trunks", "Trunks")
    await page.get_by_role("button", name="New trunk").click()
    await page.get_by_label("Name", exact=True).fill("Carrier A")
    await page.get_by_label("Cloudonix trunk name", exact=True).fill("carrier-a")
    await page.get_by_role("button", name="New trunk").last.click()
    await expect(page.locator("#main tbody")).to_contain_text("carrier-a")
    await goto(page, "/outbound", "Outbound rules")
    await page.get_by_role("button", name="New outbound rule").click()
    await page.get_by_label("Name", exact=True).fill("UK")
    await page.get_by_label("Destination pattern", exact=True).fill("+44*")
    await page.get_by_label("Trunks (in order of use)", exact=True).select_option(
        label="Carrier A (carrier-a)"
    )
    await page.get_by_role("button", name="New outbound rule").last.click()
    await expect(page.locator("#main tbody")).to_contain_text("Carrier A")
    await screenshot(page, "outbound-rules")

    # Tablet width: the navigation folds behind a Menu button.
    await page.set_viewport_size({"width": 820, "height": 1100})
    await page.emulate_media(reduced_motion="reduce")
    await goto(page, "/groups/" + str(STATE["group"]), "Group: Front desk")
    await expect(page.locator("#sidebar")).not_to_be_in_viewport()
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px on a tablet"
    await screenshot(page, "tablet-group", full_page=False)
    await page.get_by_role("button", name="Menu").click()
    await expect(page.locator("#sidebar")).to_be_in_viewport()
    await expect(page.get_by_role("button", name="Menu")).to_have_attribute("aria-expanded", "true")
    await screenshot(page, "tablet-menu", full_page=False)
    await page.set_viewport_size({"width": 1360, "height": 900})


async def downloaded(download: Download) -> bytes:
    """The bytes the browser saved."""
    return await asyncio.to_thread(Path(await download.path()).read_bytes)


async def test_export_call_records_streaming_and_in_the_background(page: Page) -> None:
    """The call-record page's export buttons: the streaming CSV and the background job (queued →
    running → done → gzip download), each saved by the browser and read back."""
    await goto(page, "/calls", "Call records")
    await expect(page.locator("#main tbody tr")).to_have_count(2)
    bar = page.get_by_role("group", name="Export")
    await bar.get_by_label("Export as", exact=True).select_option("csv")
    async with page.expect_download() as streamed:
        await bar.get_by_role("button", name="Download", exact=True).click()
    download = await streamed.value
    assert re.fullmatch(r"call-records-\d{4}-\d{2}-\d{2}\.csv", download.suggested_filename)
    rows = list(csv.DictReader(io.StringIO((await downloaded(download)).decode())))
    assert {r["session_token"] for r in rows} == {STATE["session"], STATE["written"]}
    simulated = next(r for r in rows if r["session_token"] == STATE["session"])
    assert simulated["status"] == "completed"
    assert simulated["from_number"] == "+14155550100"

    # Filtered by the page's own filters (the simulated call's number), numbers masked, in the background.
    await goto(page, "/calls?direction=inbound&to=2125550199", "Call records")
    await expect(page.locator("#main tbody tr")).to_have_count(1)
    bar = page.get_by_role("group", name="Export")
    await bar.get_by_label("Mask phone numbers", exact=True).check()
    async with page.expect_download(timeout=30_000) as queued:
        await bar.get_by_role("button", name="Background export").click()
    download = await queued.value
    assert download.suggested_filename.endswith(".csv.gz"), download.suggested_filename
    await expect(bar.locator(".export-status")).to_contain_text("downloaded: 1 row,")
    await screenshot(page, "call-records-exported")
    # The CDR list's streaming export, as NDJSON.
    await goto(page, "/cdrs", "CDRs")
    bar = page.get_by_role("group", name="Export")
    await bar.get_by_label("Export as", exact=True).select_option("ndjson")
    async with page.expect_download() as cdr_file:
        await bar.get_by_role("button", name="Download", exact=True).click()
    lines = [json.loads(line) for line in (await downloaded(await cdr_file.value)).decode().splitlines()]
    assert len(lines) == 2
    assert STATE["session"] in json.dumps(lines)
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(await downloaded(download)).decode())))
    assert [r["session_token"] for r in rows] == [STATE["session"]]
    assert rows[0]["from_number"] == "********0100"
    assert not page.js_errors, page.js_errors  # type: ignore[attr-defined]


async def test_group_outlier_ejection_and_overflow_chain_are_kept(page: Page, dashboard_url: str) -> None:
    """settings.outlier and settings.overflow edited on the group page: the API's 422s show at their
    field (or step), and after a reload both are there; the other settings are kept (PATCH merges)."""
    after_hours = await api(dashboard_url, "POST", "/api/agent-groups", json={"name": "After hours"})
    STATE["after_hours"] = after_hours["id"]
    await goto(page, f"/groups/{STATE['group']}", "Group: Front desk")
    outlier = page.locator("form.outlier-form")
    await expect(outlier.get_by_label("Failures in a row", exact=True)).to_be_hidden()
    await outlier.get_by_label("Eject agents whose calls keep failing", exact=True).check()
    await outlier.get_by_label("Failures in a row", exact=True).fill("1")
    await outlier.get_by_label("Failure rate (0 to 1)", exact=True).fill("0.5")
    await outlier.get_by_label("First ejection (s)", exact=True).fill("900")
    await outlier.get_by_label("Longest ejection (s)", exact=True).fill("300")
    await outlier.get_by_label("Short call (s)", exact=True).fill("3")
    await outlier.get_by_role("button", name="Save outlier ejection").click()
    # The back-off cap below the first ejection: the API names settings.outlier.max_ejection_s.
    await expect(field(page, "settings.outlier.max_ejection_s").locator(".field-error")).to_contain_text(
        "base_ejection_s"
    )
    await outlier.get_by_label("Longest ejection (s)", exact=True).fill("1800")
    await outlier.get_by_role("button", name="Save outlier ejection").click()
    await expect(page.locator(".toast", has_text="Outlier ejection saved.")).to_be_visible()

    # The chain: a group, then a number (first mistyped: the API's 422 shows at that step), then an
    # announcement.
    steps = page.locator("ol.rows > li")
    await page.get_by_role("button", name="Add overflow step").click()
    await steps.nth(0).get_by_label("Group", exact=True).select_option(label="After hours")
    await page.get_by_role("button", name="Add overflow step").click()
    await steps.nth(1).get_by_label("Then", exact=True).select_option("number")
    await steps.nth(1).get_by_label("Phone number", exact=True).fill("12")
    await page.get_by_role("button", name="Add overflow step").click()
    await steps.nth(2).get_by_label("Then", exact=True).select_option("announcement")
    await steps.nth(2).get_by_label("Message (spoken)", exact=True).fill("Sorry, everyone is busy.")
    await page.get_by_role("button", name="Save overflow chain").click()
    await expect(steps.nth(1).locator(".field-error")).to_contain_text("phone number")
    await expect(steps.nth(1).get_by_label("Phone number", exact=True)).to_be_focused()
    await expect(steps.nth(1).get_by_label("Phone number", exact=True)).to_have_attribute(
        "aria-invalid", "true"
    )
    await expect(steps.nth(0).locator(".field-error")).to_be_hidden()
    await screenshot(page, "group-overflow-error")
    await steps.nth(1).get_by_label("Phone number", exact=True).fill("+12125550100")
    await page.get_by_role("button", name="Save overflow chain").click()
    await expect(page.locator(".toast", has_text="Overflow chain saved.")).to_be_visible()

    await page.reload()
    await expect(page.locator("#main h1")).to_have_text("Group: Front desk")
    await expect(outlier.get_by_label("Failures in a row", exact=True)).to_have_value("1")
    await expect(outlier.get_by_label("Longest ejection (s)", exact=True)).to_have_value("1800")
    await expect(outlier.get_by_label("Failure rate (0 to 1)", exact=True)).to_have_value("0.5")
    await expect(steps).to_have_count(3)
    await expect(steps.nth(0).get_by_label("Group", exact=True)).to_have_value(str(STATE["after_hours"]))
    await expect(steps.nth(1).get_by_label("Phone number", exact=True)).to_have_value("+12125550100")
    await expect(steps.nth(2).get_by_label("Message (spoken)", exact=True)).to_have_value(
        "Sorry, everyone is busy."
    )
    await expect(steps.nth(2).get_by_label("Phone number", exact=True)).to_be_hidden()
    group = await api(dashboard_url, "GET", f"/api/agent-groups/{STATE['group']}")
    settings = group["settings"]
    assert settings["max_attempts"] == 2  # set at creation, kept by both forms' PATCHes
    assert settings["outlier"] == {
        "consecutive_failures": 1,
        "failure_rate": 0.5,
        "window_s": 60,
        "min_calls": 10,
        "base_ejection_s": 900,
        "max_ejection_s": 1800,
        "max_ejected_percent": 50,
        "short_call_s": 3,
        "allow_eject_all": False,
    }
    # The API stores each step with every key (the other types' as null).
    assert [{k: v for k, v in step.items() if v is not None} for step in settings["overflow"]] == [
        {"type": "group", "group_id": STATE["after_hours"]},
        {"type": "number", "number": "+12125550100"},
        {"type": "announcement", "message": "Sorry, everyone is busy."},
    ]
    # …and the strategy form's PATCH keeps them in turn.
    await page.get_by_label("Ring timeout (s)", exact=True).fill("25")
    await page.get_by_role("button", name="Save group").click()
    await expect(page.locator(".toast", has_text="Group saved.")).to_be_visible()
    settings = (await api(dashboard_url, "GET", f"/api/agent-groups/{STATE['group']}"))["settings"]
    assert (settings["ring_timeout_s"], settings["outlier"]["max_ejection_s"], len(settings["overflow"])) == (
        25,
        1800,
        3,
    )
    assert not page.js_errors, page.js_errors  # type: ignore[attr-defined]


async def test_an_ejected_agent_is_listed_and_let_back_in(
    page: Page, dashboard_url: str, engine_url: str, database_url: str
) -> None:
    """A real ejection: with one failure in a row enough, a simulated call whose first dial is busy
    ejects that agent in the engine; the group page lists it and an admin lets it back in."""
    me = await api(dashboard_url, "GET", "/api/user")
    await snapshot_reached_the_engine(engine_url, database_url, me["tenant_id"])
    argv = ["--url", engine_url, "--domain", STATE["domain"], "--key", STATE["key"]]
    argv += ["--to", "+12125550199", "--from", "+14155550111", "--dial-status", "busy"]
    assert await asyncio.to_thread(simulate.main, argv) == 0
    stats = await api(dashboard_url, "GET", f"/api/agent-groups/{STATE['group']}/stats")
    assert [e["agent_id"] for e in stats["ejected"]] == [STATE["agents"]["Sales bot"]], stats

    await goto(page, f"/groups/{STATE['group']}", "Group: Front desk")
    ejected = page.locator(".ejected tbody tr")
    await expect(ejected).to_have_count(1)
    await expect(ejected).to_contain_text("Sales bot")
    await expect(ejected).to_contain_text("failures in a row — busy")
    await expect(
        page.locator(f'li.member[data-agent="{STATE["agents"]["Sales bot"]}"] .counters')
    ).to_contain_text("Ejected until")
    await screenshot(page, "group")
    await page.get_by_role("button", name="Let Sales bot back in").click()
    await page.get_by_role("dialog").get_by_role("button", name="Let back in").click()
    await expect(page.locator(".toast", has_text="Sales bot is back in the group.")).to_be_visible()
    await expect(ejected).to_have_count(0)
    await expect(page.locator(".ejected")).to_contain_text("No agent is ejected.")
    stats = await api(dashboard_url, "GET", f"/api/agent-groups/{STATE['group']}/stats")
    assert stats["ejected"] == []
    assert not page.js_errors, page.js_errors  # type: ignore[attr-defined]


async def test_a_rule_with_a_schedule_and_a_70_30_split(
    page: Page, dashboard_url: str, database_url: str
) -> None:
    """The rule form edits a schedule and a traffic split; the API's 422s (an unknown time zone,
    percents not summing to 100) show at their field; the split report shows each branch's calls."""
    await goto(page, "/inbound", "Inbound rules")
    await page.get_by_role("button", name="New rule").click()
    rule = page.locator("form.rule-form")
    await rule.get_by_label("Name", exact=True).fill("A/B providers")
    await rule.get_by_label("Called number pattern", exact=True).fill("+1646*")
    await rule.get_by_label("Send to", exact=True).select_option("split")
    await expect(rule.get_by_label("Target", exact=True)).to_be_hidden()
    branches = rule.locator("fieldset.split ol.rows > li")
    await expect(branches).to_have_count(2)
    await branches.nth(0).get_by_label("Group or agent", exact=True).select_option(label="Front desk")
    await branches.nth(0).get_by_label("Percent", exact=True).fill("70")
    await branches.nth(1).get_by_label("Group or agent", exact=True).select_option(label="After hours")
    await branches.nth(1).get_by_label("Percent", exact=True).fill("20")
    await expect(rule.locator(".split-total")).to_have_text("Total: 90%")

    schedule = rule.locator("fieldset.schedule")
    await schedule.get_by_label("Only at certain times", exact=False).check()
    await schedule.get_by_label("Time zone", exact=True).fill("Mars/Olympus_Mons")
    await schedule.get_by_label("Sat", exact=True).check()
    await schedule.get_by_label("Fri", exact=True).uncheck()
    hours = schedule.locator("ol.rows > li")
    await expect(hours).to_have_count(1)
    await hours.nth(0).get_by_label("From", exact=True).fill("08:30")
    await schedule.get_by_role("button", name="Add hours").click()
    await hours.nth(1).get_by_label("From", exact=True).fill("22:00")
    await hours.nth(1).get_by_label("To", exact=True).fill("02:00")
    await schedule.get_by_label("Holidays (closed all day)", exact=True).fill("2026-12-25\n2027-01-01")
    await rule.get_by_role("button", name="Create rule").click()
    await expect(schedule.locator('[data-field="schedule.timezone"] .field-error')).to_contain_text(
        "timezone"
    )
    await expect(schedule.get_by_label("Time zone", exact=True)).to_have_attribute("aria-invalid", "true")
    await schedule.get_by_label("Time zone", exact=True).fill("America/New_York")
    await rule.get_by_role("button", name="Create rule").click()
    split_error = rule.locator("fieldset.split .rows-editor > .field-error")
    await expect(split_error).to_contain_text("sum to 100")
    await expect(schedule.locator('[data-field="schedule.timezone"] .field-error')).to_be_hidden()
    await screenshot(page, "inbound-rule-split-error")
    await branches.nth(1).get_by_label("Percent", exact=True).fill("30")
    await expect(rule.locator(".split-total")).to_have_text("Total: 100%")
    await rule.get_by_role("button", name="Create rule").click()
    row = page.locator("tr[data-rule]", has_text="A/B providers")
    await expect(row).to_contain_text("split: Front desk 70% · After hours 30%")
    await expect(row).to_contain_text(
        "Mon Tue Wed Thu Sat, 08:30\u201317:30, 22:00\u201302:00 (America/New_York)"
    )

    rules = (await api(dashboard_url, "GET", "/api/inbound-routing-rules"))["data"]
    saved = next(r for r in rules if r["name"] == "A/B providers")
    STATE["split_rule"] = saved["id"]
    assert saved["targets"] == [
        {"target_type": "group", "target_id": STATE["group"], "percent": 70},
        {"target_type": "group", "target_id": STATE["after_hours"], "percent": 30},
    ]
    assert saved["schedule"] == {
        "timezone": "America/New_York",
        "days": ["mon", "tue", "wed", "thu", "sat"],
        "ranges": [["08:30", "17:30"], ["22:00", "02:00"]],
        "holidays": ["2026-12-25", "2027-01-01"],
    }

    # Editing shows both again, as saved.
    await page.get_by_role("button", name=f"Edit rule {saved['id']}").click()
    rule = page.locator("form.rule-form")
    await expect(rule.get_by_label("Send to", exact=True)).to_have_value("split")
    await expect(
        rule.locator("fieldset.split ol.rows > li").nth(1).get_by_label("Percent", exact=True)
    ).to_have_value("30")
    await expect(rule.locator("fieldset.schedule").get_by_label("Time zone", exact=True)).to_have_value(
        "America/New_York"
    )
    await expect(rule.locator("fieldset.schedule").get_by_label("Sat", exact=True)).to_be_checked()
    await screenshot(page, "inbound-rule-edit")
    await rule.get_by_role("button", name="Cancel").click()

    # Calls that took each branch, as the event consumer writes them (the schedule is closed for most
    # of the day, so no simulated call is sent): 2 to Front desk (answered), 1 to After hours.
    me = await api(dashboard_url, "GET", "/api/user")
    now_ms = int(time.time() * 1000)
    engine = create_async_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn, AsyncSession(bind=conn) as session:
            for n, target in enumerate((STATE["group"], STATE["group"], STATE["after_hours"])):
                events = full_call(
                    me["tenant_id"],
                    uuid.uuid4().hex,
                    agent_id=STATE["agents"]["Sales bot"],
                    group_id=target,
                    rule_id=saved["id"],
                    start_ms=now_ms - 120_000 - n * 1000,
                    answer_ms=now_ms - 100_000,
                    end_ms=now_ms - 40_000,
                )
                events[0] = msgspec.structs.replace(events[0], split_target=f"group:{target}")
                await write_events(session, events)
    finally:
        await engine.dispose()
    await page.reload()
    await expect(page.locator("#main h1")).to_have_text("Inbound rules")
    report = page.locator(".split-report")
    front = report.locator(f'tr[data-branch="{saved["id"]}:group:{STATE["group"]}"]')
    await expect(front).to_contain_text("Front desk")
    await expect(front.locator('td[data-label="Calls"]')).to_have_text("2")
    await expect(front.locator('td[data-label="Set"]')).to_have_text("70%")
    await expect(front.locator('td[data-label="Actual"]')).to_have_text("66.7%")
    other = report.locator(f'tr[data-branch="{saved["id"]}:group:{STATE["after_hours"]}"]')
    await expect(other.locator('td[data-label="Calls"]')).to_have_text("1")
    await screenshot(page, "inbound-rules")

    # Tablet width: the rule form with its split and schedule, and the group's new sections, fit.
    await page.set_viewport_size({"width": 820, "height": 1100})
    try:
        await page.get_by_role("button", name=f"Edit rule {saved['id']}").click()
        await expect(page.locator("form.rule-form fieldset.split")).to_be_visible()
        for route, heading in (("/inbound", None), (f"/groups/{STATE['group']}", "Group: Front desk")):
            if heading:
                await goto(page, route, heading)
                await expect(page.locator("ol.rows > li")).to_have_count(3)
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{route} scrolls sideways by {overflow} px on a tablet"
            await screenshot(page, "tablet-" + route.strip("/").split("/")[0])
    finally:
        await page.set_viewport_size({"width": 1360, "height": 900})
    assert not page.js_errors, page.js_errors  # type: ignore[attr-defined]


async def test_viewer_sees_everything_and_no_edit_controls(
    page: Page, browser: Browser, dashboard_url: str
) -> None:
    viewer_email = f"viewer-{uuid.uuid4().hex[:8]}@example.com"
    await goto(page, "/users", "Users")
    await page.get_by_role("button", name="New user").click()
    await page.get_by_label("Name", exact=True).fill("Vic Viewer")
    await page.get_by_label("E-mail", exact=True).fill(viewer_email)
    await page.get_by_label("Role", exact=True).select_option("viewer")
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="New user").last.click()
    await expect(page.locator("#main tbody")).to_contain_text(viewer_email)

    context, viewer = await new_page(browser, dashboard_url)
    try:
        await viewer.goto("/#/login")
        await viewer.get_by_label("E-mail", exact=True).fill(viewer_email)
        await viewer.get_by_label("Password", exact=True).fill(PASSWORD)
        await viewer.get_by_role("button", name="Sign in").click()
        await expect(viewer.locator("#main h1")).to_have_text("Overview")
        await expect(viewer.get_by_role("link", name="Users")).to_have_count(0)
        pages = [
            ("/agents", "Voice agents", "Sales bot"),
            (f"/agents/{STATE['agents']['Sales bot']}", "Voice agent: Sales bot", None),
            ("/groups", "Agent groups", "Front desk"),
            (f"/groups/{STATE['group']}", "Group: Front desk", "Support bot"),
            ("/inbound", "Inbound rules", "+1212*"),
            ("/outbound", "Outbound rules", "UK"),
            ("/trunks", "Trunks", "carrier-a"),
            ("/domains", "Domains", "acme.cloudonix.net"),
            ("/settings", "Tenant settings", None),
            ("/calls", "Call records", None),
            ("/cdrs", "CDRs", None),
        ]
        for route, heading, shows in pages:
            await goto(viewer, route, heading)
            if shows:
                await expect(viewer.locator("#main")).to_contain_text(shows)
            await expect(viewer.locator("#main")).not_to_contain_text("Loading…")
            writes = await viewer.locator("#main [data-write]").count()
            assert writes == 0, f"{route}: {writes} edit controls shown to a viewer"
            for label in ("Delete", "Edit", "Remove", "Rotate key", "Disable", "Save members", "Add member"):
                assert await viewer.get_by_role("button", name=label, exact=True).count() == 0, (
                    f"{route}: {label}"
                )
            enabled_inputs = await viewer.locator(
                "#main form:not(.filters, .dry-run) :is(input, select, textarea):enabled"
            ).count()
            assert enabled_inputs == 0, f"{route}: {enabled_inputs} editable form fields"
        await goto(viewer, f"/groups/{STATE['group']}", "Group: Front desk")
        # Outlier ejection and the overflow chain, read-only: the form's fields disabled, the chain as text.
        await expect(viewer.get_by_label("Failures in a row", exact=True)).to_be_disabled()
        await expect(viewer.get_by_label("Failures in a row", exact=True)).to_have_value("1")
        await expect(viewer.locator(".overflow-steps li")).to_have_text(
            ["group “After hours”", "dial +12125550100", "announce “Sorry, everyone is busy.”, hang up"]
        )
        await expect(viewer.locator(".ejected")).to_contain_text("No agent is ejected.")
        for label in ("Save outlier ejection", "Save overflow chain", "Add overflow step"):
            assert await viewer.get_by_role("button", name=label).count() == 0, label
        await screenshot(viewer, "viewer-group")
        # The dry run changes nothing: a viewer has its form and gets the answer.
        await goto(viewer, "/inbound", "Inbound rules")
        dry = viewer.locator("form.dry-run")
        await dry.get_by_label("Called number (To)", exact=True).fill("+12125550199")
        await dry.get_by_label("Domain", exact=True).select_option("acme.cloudonix.net")
        await dry.get_by_role("button", name="Test").click()
        await expect(viewer.locator(".dry-result")).to_contain_text("“Front desk”")
        split_row = viewer.locator("tr[data-rule]", has_text="A/B providers")
        await expect(split_row).to_contain_text("split: Front desk 70% · After hours 30%")
        await expect(split_row).to_contain_text("(America/New_York); closed 2 holiday(s)")
        await expect(viewer.locator(".split-report tbody tr")).to_have_count(2)
        await screenshot(viewer, "viewer-inbound-dry-run")
        # Exports are reads: both buttons are there for a viewer, as the API allows both.
        await goto(viewer, "/cdrs", "CDRs")
        bar = viewer.get_by_role("group", name="Export")
        await expect(bar.get_by_role("button", name="Download", exact=True)).to_be_visible()
        await expect(bar.get_by_role("button", name="Background export")).to_be_visible()
        # The users page is for admins.
        await viewer.goto("/#/users")
        await expect(viewer.locator("#main h1")).to_have_text("Not allowed")
        assert not viewer.js_errors, viewer.js_errors  # type: ignore[attr-defined]
    finally:
        await context.close()


async def test_charts_draw_every_point_with_a_text_alternative(page: Page) -> None:
    """The overview's charts (inline SVG) with known data, in the browser: every point and bar drawn,
    axis labels in place, and the same figures in a table for screen readers."""
    await page.goto("/")
    await expect(page.locator("#main h1")).to_be_visible()
    drawn = await page.evaluate(
        """async () => {
            const { lineChart, barChart } = await import('/ui/charts.js');
            const line = lineChart('Calls per day', [
                { label: '11-29', value: 3 }, { label: '11-30', value: 7 }, { label: '12-01', value: 5 },
            ]);
            const bars = barChart('Calls per agent', [{ label: 'Sales bot', value: 120 }, { label: 'Support bot', value: 80 }]);
            const empty = lineChart('Nothing', []);
            document.body.append(line, bars, empty);
            const texts = (el) => [...el.querySelectorAll('svg text')].map((t) => t.textContent);
            const box = (el) => el.querySelector('svg').getBoundingClientRect();
            return {
                dots: line.querySelectorAll('circle').length,
                polyline: line.querySelector('polyline').getAttribute('points').split(' ').length,
                lineTexts: texts(line),
                rects: [...bars.querySelectorAll('rect')].map((r) => Number(r.getAttribute('width'))),
                barTexts: texts(bars),
                lineHeight: box(line).height,
                tableRows: line.querySelectorAll('table tbody tr').length,
                hiddenTable: line.querySelector('table').getBoundingClientRect().height <= 1
                    || getComputedStyle(line.querySelector('table').parentElement).position === 'absolute',
                emptyText: texts(empty),
                strays: [...line.querySelectorAll('svg')].some((s) => /object/.test(s.textContent)),
            };
        }"""
    )
    assert drawn["dots"] == 3
    assert drawn["polyline"] == 3
    assert {"11-29", "11-30", "12-01"} <= set(drawn["lineTexts"])
    assert "0" in drawn["lineTexts"]
    assert drawn["rects"][0] > drawn["rects"][1] > 0
    assert {"Sales bot", "Support bot", "120", "80"} <= set(drawn["barTexts"])
    assert drawn["lineHeight"] > 50
    assert drawn["tableRows"] == 3
    assert drawn["hiddenTable"]
    assert drawn["emptyText"] == ["No data in this range"] or "No data in this range" in drawn["emptyText"]
    assert not drawn["strays"]


CONTRAST_SCRIPT = """() => {
    const channel = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    const parse = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
    const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
    const background = (el) => {
        for (let node = el; node; node = node.parentElement) {
            const [r, g, b, a = 1] = parse(getComputedStyle(node).backgroundColor);
            if (a > 0.5) return [r, g, b];
        }
        return [255, 255, 255];
    };
    const failures = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let text = walker.nextNode(); text; text = walker.nextNode()) {
        const el = text.parentElement;
        if (!text.textContent.trim() || !el || el.closest('svg, .sr-only, [hidden], option, dialog:not([open])')) continue;
        if (el.closest(':disabled, [aria-disabled=true]')) continue;  // inactive controls are exempt
        const style = getComputedStyle(el);
        const box = el.getBoundingClientRect();
        if (style.visibility === 'hidden' || box.width === 0 || box.height === 0) continue;
        const [r, g, b, a = 1] = parse(style.color);
        if (a < 0.5) continue;
        const fg = luminance([r, g, b]);
        const bg = luminance(background(el));
        const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
        const size = parseFloat(style.fontSize);
        const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
        if (ratio < (large ? 3 : 4.5)) failures.push(`${ratio.toFixed(2)} ${el.tagName}.${el.className}: ${text.textContent.trim().slice(0, 40)}`);
    }
    return failures;
}"""


async def test_text_contrast_meets_wcag_aa(page: Page) -> None:
    """Every visible text on the main pages against its background: 4.5:1, or 3:1 for large text."""
    failures: list[str] = []
    for route, heading in [
        ("/overview", "Overview"),
        ("/agents", "Voice agents"),
        (f"/groups/{STATE['group']}", "Group: Front desk"),
        ("/inbound", "Inbound rules"),
        ("/domains", "Domains"),
        ("/calls", "Call records"),
        ("/live", "Live calls"),
        ("/settings", "Tenant settings"),
    ]:
        await goto(page, route, heading)
        await expect(page.locator("#main")).not_to_contain_text("Loading…")
        failures += [f"{route}: {f}" for f in await page.evaluate(CONTRAST_SCRIPT)]
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#main h1")).to_have_text("Sign in")
    failures += [f"/login: {f}" for f in await page.evaluate(CONTRAST_SCRIPT)]
    assert not failures, "\n".join(failures)
