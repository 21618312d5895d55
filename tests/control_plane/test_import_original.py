"""``vlb import-original`` against a stand-in of the original system's API (served over real HTTP on
127.0.0.1, in the documented shapes) and this project's real control plane: the import, the routing of
a set of numbers through our dry-run endpoint compared with what the original's rules chose (computed
here from the original's code, independently of the importer), dry run and second run changing
nothing, and clear errors with nothing written for a bad token or an unreachable URL."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from launcher.import_original.cli import main as cli_main
from launcher.import_original.cli import run_import
from launcher.import_original.convert import convert_destination, convert_pattern
from launcher.import_original.http import ImportFailure
from shared.routing import compile_pattern, normalize_number
from tests.control_plane.conftest import Account

TOKEN = "7|original-secret"
PAGE_CAP = 2  # the stand-in serves at most this many items a page, so every list is paged


def _agents() -> list[dict[str, Any]]:
    def agent(i: int, name: str, provider: str, value: str, enabled: bool = True) -> dict[str, Any]:
        return {
            "id": i,
            "tenant_id": 1,
            "name": name,
            "provider": provider,
            "service_value": value,
            "enabled": enabled,
            "requires_authentication": provider in ("synthflow", "elevenlabs", "superdash.ai"),
            "metadata": {"region": "us-east"} if i == 1 else None,
            "created_at": "2024-01-01T00:00:00Z",
        }

    return [
        agent(1, "Vapi A", "vapi", "asst_alpha"),
        agent(2, "Vapi B", "vapi", "asst_beta"),
        agent(3, "Eleven", "elevenlabs", "0b9c5d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"),
        agent(4, "Synth", "synthflow", "https://api.synthflow.ai/agent/123"),  # no credentials returned
        agent(5, "Dasha", "dasha", "https://dasha.example.com/app"),
        agent(6, "Retell off", "retell", "https://retell.example.com/x", enabled=False),
    ]


GROUPS: list[dict[str, Any]] = [
    {
        "id": 10,
        "name": "Support",
        "strategy": "priority",
        "enabled": True,
        "settings": {"failover_enabled": True, "round_robin_same_priority": True},
    },
    # The README's documented shape: members inline as agents with a pivot.
    {
        "id": 11,
        "name": "Sales",
        "strategy": "load_balanced",
        "enabled": True,
        "settings": {"window_hours": 12, "max_calls_per_agent": None},
        "agents": [
            {"id": 2, "name": "Vapi B", "provider": "vapi", "pivot": {"priority": 50, "capacity": 2}},
            {"id": 4, "name": "Synth", "provider": "synthflow", "pivot": {"priority": 40, "capacity": None}},
        ],
    },
    {
        "id": 12,
        "name": "Stable",
        "strategy": "priority",
        "enabled": True,
        "settings": {"failover_enabled": False, "round_robin_same_priority": False},
    },
]

# The code's shape (GET /api/agent-groups/{id}/memberships), in its order: priority desc, created asc.
MEMBERSHIPS: dict[int, list[dict[str, Any]]] = {
    10: [
        {"id": 100, "voice_agent_id": 1, "priority": 80, "capacity": None},
        {"id": 101, "voice_agent_id": 2, "priority": 80, "capacity": 3},
        {"id": 102, "voice_agent_id": 5, "priority": 50, "capacity": None},
    ],
    12: [
        {"id": 120, "voice_agent_id": 5, "priority": 50, "capacity": None},
        {"id": 121, "voice_agent_id": 1, "priority": 50, "capacity": None},
    ],
}


def _rules() -> list[dict[str, Any]]:
    def rule(
        i: int, pattern: str, kind: str, target: int, priority: int, enabled: bool = True
    ) -> dict[str, Any]:
        return {
            "id": i,
            "tenant_id": 1,
            "pattern": pattern,
            "target_type": kind,
            "target_id": target,
            "priority": priority,
            "enabled": enabled,
            "created_at": "2024-01-01T00:00:00Z",
        }

    return [
        rule(1, "1555", "group", 10, 5),  # bare digits: a prefix, with or without '+'
        rule(2, "+15551230000", "agent", 5, 10),  # exact; outranks rule 1 (higher number first)
        rule(3, "+1555*", "agent", 2, 20),  # starts with '+': exact, so it never matched anything
        rule(4, "1", "group", 11, 1),  # lowest: every +1 number the others leave
        rule(5, "1555123", "agent", 1, 5),  # same priority as rule 1 and overlapping: id order there
        rule(6, "44", "agent", 6, 3),  # targets a disabled agent
        rule(7, "+442071234567", "agent", 1, 100, enabled=False),
        rule(8, "*", "agent", 1, 50),  # bare '*' is a literal prefix character there
        rule(9, "1212", "group", 12, 2),
    ]


# The models' attributes (the original's routes/api.php serves neither; an installation that added them
# would answer Laravel's default model JSON).
TRUNKS: list[dict[str, Any]] = [
    {
        "id": 20,
        "name": "Primary",
        "cloudonix_trunk_id": "trunk-a",
        "priority": 10,
        "capacity": 30,
        "enabled": True,
        "is_default": False,
        "description": "main carrier",
        "configuration": {},
    },
    {
        "id": 21,
        "name": "Backup",
        "cloudonix_trunk_id": "trunk-b",
        "priority": 20,
        "capacity": 0,
        "enabled": True,
        "is_default": False,
        "description": None,
        "configuration": {},
    },
    {
        "id": 22,
        "name": "Old",
        "cloudonix_trunk_id": "trunk-c",
        "priority": 99,
        "capacity": 0,
        "enabled": False,
        "is_default": False,
        "description": None,
        "configuration": {},
    },
]
OUTBOUND: list[dict[str, Any]] = [
    {
        "id": 30,
        "caller_id": "+15551230000",
        "destination_pattern": "+44",
        "trunk_config": {"trunk_ids": [20, 21]},
        "enabled": True,
    },
    {
        "id": 31,
        "caller_id": "1555",
        "destination_pattern": "33",
        "trunk_config": {"trunk_ids": [20]},
        "enabled": True,
    },
]
CALLS = [  # (caller, destination)
    ("+15551230000", "+442071234567"),
    ("+15551230001", "+442071234567"),
    ("+15551230001", "+33123456789"),
    ("15559999999", "33123"),
    ("+16665550000", "+33123456789"),
]


def original_outbound(caller: str, destination: str) -> dict[str, Any] | None:
    """OutboundRoutingEngine::evaluateOutboundRouting: enabled rules in id order; caller id like an
    inbound pattern, destination a prefix either way."""

    def prefix_either(pattern: str, number: str) -> bool:
        return number.startswith("+" + pattern) or number.startswith(pattern)

    for rule in sorted((r for r in OUTBOUND if r["enabled"]), key=lambda r: r["id"]):
        pc, pd = rule["caller_id"], rule["destination_pattern"]
        caller_ok = caller == pc if pc.startswith("+") else prefix_either(pc, caller)
        dest_ok = destination.startswith(pd) if pd.startswith("+") else prefix_either(pd, destination)
        if caller_ok and dest_ok:
            return rule
    return None


NUMBERS = [
    "+15551230000",
    "+15551239999",
    "+15559999999",
    "15551234567",
    "+12125550000",
    "+12025550000",
    "+442071234567",
    "+33123456789",
    "*123",
    "+1555*",
]


def original_choice(rules: list[dict[str, Any]], number: str) -> dict[str, Any] | None:
    """The original's PatternMatchingService::evaluateRules with InboundRoutingRule::matchesNumber:
    enabled rules, ``priority`` descending (ties in id order), first match."""
    for rule in sorted((r for r in rules if r["enabled"]), key=lambda r: (-r["priority"], r["id"])):
        pattern = rule["pattern"]
        if pattern.startswith("+"):
            hit = number == pattern
        else:
            hit = number.startswith("+" + pattern) or number.startswith(pattern)
        if hit:
            return rule
    return None


# ---- the stand-in original ------------------------------------------------------------------------


@dataclass
class StandIn:
    port: int
    requests: list[str] = field(default_factory=list)
    throttle_once: set[str] = field(default_factory=lambda: {"/api/agent-groups"})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        self.requests.append(f"{method} {target}")
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, {"message": "Unauthenticated."}, {}
        if path in self.throttle_once:
            self.throttle_once.discard(path)
            return 429, {"message": "Too Many Attempts."}, {"Retry-After": "0"}
        if method != "GET":
            return 405, {"message": "read only"}, {}
        if path == "/api/user":
            return 200, {"id": 1, "name": "Old Admin", "email": "old@example.com", "tenant_id": 1}, {}
        if path == "/api/voice-agents":
            return 200, _page(_agents(), query), {}
        if path == "/api/agent-groups":
            return 200, _page(GROUPS, query), {}
        if path.startswith("/api/agent-groups/") and path.endswith("/memberships"):
            group_id = int(path.split("/")[3])
            return 200, {"data": MEMBERSHIPS.get(group_id, []), "meta": {"total_members": 0}}, {}
        if path == "/api/inbound-routing-rules":
            return 200, _rules(), {}  # the README's shape: a bare array
        if path == "/api/trunks":
            return 200, _page(TRUNKS, query), {}
        if path == "/api/outbound-routing-rules":
            return 200, OUTBOUND, {}
        if path == "/api/settings":
            return (
                200,
                {"cloudonix_domain": self.domain, "cloudonix_api_key": "", "voice_app_api_key": ""},
                {},
            )
        return 404, {"message": "Not Found"}, {}

    domain: str = ""


def _page(items: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
    page = int(query.get("page", ["1"])[0])
    per_page = min(int(query.get("per_page", ["20"])[0]), PAGE_CAP)
    chunk = items[(page - 1) * per_page : page * per_page]
    last = max(1, -(-len(items) // per_page))
    return {
        "data": chunk,
        "meta": {"current_page": page, "per_page": per_page, "total": len(items), "last_page": last},
    }


async def _serve(stand_in: StandIn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = {
            k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)
        }
        if int(headers.get("content-length", "0")):
            await reader.readexactly(int(headers["content-length"]))
        status, body, extra = stand_in.answer(method, target, headers)
        payload = json.dumps(body).encode()
        reason = {
            200: "OK",
            401: "Unauthorized",
            404: "Not Found",
            405: "Method Not Allowed",
            429: "Too Many Requests",
        }
        out = [f"HTTP/1.1 {status} {reason.get(status, 'X')}", "Content-Type: application/json"]
        out += [f"Content-Length: {len(payload)}", "Connection: close"] + [
            f"{k}: {v}" for k, v in extra.items()
        ]
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + payload)
        await writer.drain()
    finally:
        writer.close()


@pytest.fixture
async def original() -> AsyncIterator[StandIn]:
    stand_in = StandIn(port=0, domain=f"imp-{uuid.uuid4().hex[:10]}.cloudonix.net")
    server = await asyncio.start_server(lambda r, w: _serve(stand_in, r, w), "127.0.0.1", 0)
    stand_in.port = server.sockets[0].getsockname()[1]
    try:
        yield stand_in
    finally:
        server.close()
        await server.wait_closed()


async def _import(
    stand_in_url: str, account: Account, token: str = TOKEN, dry_run: bool = False
) -> tuple[Any, str, list[str]]:
    out, progress = io.StringIO(), []
    async with httpx.AsyncClient(base_url=stand_in_url, timeout=5) as original_client:
        plan = await run_import(
            original_client,
            account.client,
            original_token=token,
            our_token=account.token,
            tenant_id=account.tenant_id,
            dry_run=dry_run,
            out=out,
            progress=progress.append,
            backoff_s=0.01,
        )
    return plan, out.getvalue(), progress


async def _config(account: Account) -> dict[str, Any]:
    """Everything the import may touch, for before/after comparisons."""
    found = {}
    for path in (
        "/api/voice-agents",
        "/api/agent-groups",
        "/api/inbound-routing-rules",
        "/api/domains",
        "/api/trunks",
        "/api/outbound-routing-rules",
    ):
        response = await account.get(path, params={"per_page": 100})
        assert response.status_code == 200, response.text
        found[path] = response.json()["data"]
    return found


# ---- tests ----------------------------------------------------------------------------------------


async def test_import_converts_the_original_and_routes_numbers_as_it_did(
    original: StandIn, account: Account
) -> None:
    empty = await _config(account)

    plan, text, progress = await _import(original.url, account, dry_run=True)
    assert await _config(account) == empty, "the dry run wrote something"
    assert any("page 2/" in line for line in progress), "the lists were not paged"
    assert any("answered 429" in line for line in progress), "the throttled request was not retried"
    assert "plan (dry run: nothing is changed)" in text
    assert plan.counts()["create"] == 1 + 6 + 3 + 9 + 3 + 2  # domain, agents, groups, rules, trunks, outbound
    assert "credentials to be entered" in text
    assert "never matched a call in the original" in text

    plan, text, _ = await _import(original.url, account)
    assert plan.changes == 24
    assert f"domain {original.domain}: webhook key " in text

    config = await _config(account)
    agents = {a["name"]: a for a in config["/api/voice-agents"]}
    assert agents["Vapi A"]["metadata"] == {"region": "us-east", "original_id": 1}
    assert agents["Vapi A"]["enabled"]
    assert not agents["Retell off"]["enabled"]
    for name in ("Synth", "Eleven"):  # credentials never come across: imported disabled, flagged
        assert not agents[name]["enabled"]
        assert agents[name]["metadata"]["credentials"] == "to be entered"
    by_id = {a["id"]: a["name"] for a in agents.values()}
    groups = {g["name"]: g for g in config["/api/agent-groups"]}
    members = {
        name: sorted((by_id[m["agent_id"]], m["priority"], m["capacity"], m["weight"]) for m in g["members"])
        for name, g in groups.items()
    }
    # 101 - p keeps the original's order (highest first there, lowest first here), ties stay ties.
    assert members["Support"] == [("Dasha", 51, 0, 1), ("Vapi A", 21, 0, 1), ("Vapi B", 21, 0, 3)]
    assert members["Sales"] == [("Synth", 61, 0, 1), ("Vapi B", 51, 0, 2)]
    # round_robin_same_priority maps to rotate_same_priority; equal priorities stay equal.
    assert members["Stable"] == [("Dasha", 51, 0, 1), ("Vapi A", 51, 0, 1)]
    assert groups["Stable"]["settings"]["rotate_same_priority"] is False
    assert groups["Support"]["settings"]["rotate_same_priority"] is True
    assert groups["Support"]["settings"]["fallback_enabled"] is True
    assert groups["Stable"]["settings"]["fallback_enabled"] is False
    assert groups["Sales"]["strategy"] == "load_balanced"
    assert groups["Sales"]["settings"]["window_hours"] == 12

    names = {("agent", a["id"]): a["name"] for a in _agents()} | {
        ("group", g["id"]): g["name"] for g in GROUPS
    }
    for number in NUMBERS:
        expected = original_choice(_rules(), number)
        response = await account.post("/api/inbound-routing-rules/test", json={"to": number})
        assert response.status_code == 200, response.text
        answer = response.json()
        if expected is None:
            assert not answer["matched"], (number, answer)
            continue
        assert answer["matched"], (number, expected)
        assert answer["rule"]["name"] == f"original #{expected['id']}", (number, answer["rule"])
        target = (answer["target"]["type"], answer["target"]["name"])
        assert target == (expected["target_type"], names[(expected["target_type"], expected["target_id"])]), (
            number
        )

    trunks = {t["cloudonix_trunk"]: t for t in config["/api/trunks"]}
    # Priority descending there; no default there, so the highest-priority enabled trunk took unmatched calls.
    assert [(t["name"], t["priority"], t["is_default"], t["enabled"]) for t in trunks.values()] == [
        ("Old", 10, False, False),
        ("Backup", 20, True, True),
        ("Primary", 30, False, True),
    ]
    outbound = {r["name"]: r for r in config["/api/outbound-routing-rules"]}
    assert outbound["original #30"]["trunk_ids"] == [trunks["trunk-b"]["id"], trunks["trunk-a"]["id"]]
    assert outbound["original #30"]["destination_pattern"] == "+44*"
    for caller, destination in CALLS:
        expected = original_outbound(caller, destination)
        chosen = next(
            (
                r
                for r in sorted(outbound.values(), key=lambda r: (r["priority"], r["id"]))
                if r["enabled"]
                and compile_pattern(r["caller_id"]).matches(normalize_number(caller))
                and compile_pattern(r["destination_pattern"]).matches(normalize_number(destination))
            ),
            None,
        )
        assert (chosen or {}).get("name") == (f"original #{expected['id']}" if expected else None), (
            caller,
            destination,
        )

    plan, text, _ = await _import(original.url, account)
    assert plan.changes == 0, text
    assert "webhook key" not in text
    assert await _config(account) == config, "the second run changed something"


async def test_second_run_keeps_credentials_entered_here(original: StandIn, account: Account) -> None:
    await _import(original.url, account)
    agents = {a["name"]: a for a in (await _config(account))["/api/voice-agents"]}
    synth = agents["Synth"]
    response = await account.patch(
        f"/api/voice-agents/{synth['id']}",
        json={"username": "real-key", "password": "real-secret", "enabled": True},
    )
    assert response.status_code == 200, response.text
    before = await _config(account)
    plan, text, _ = await _import(original.url, account)
    assert plan.changes == 0, text
    assert await _config(account) == before


async def test_bad_token_is_a_clear_error_and_writes_nothing(original: StandIn, account: Account) -> None:
    empty = await _config(account)
    with pytest.raises(ImportFailure, match=r"401 .*token was refused"):
        await _import(original.url, account, token="1|wrong")
    assert await _config(account) == empty


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_url_is_a_clear_error_and_writes_nothing(account: Account) -> None:
    empty = await _config(account)
    with pytest.raises(ImportFailure, match=r"cannot reach the original system at http://127\.0\.0\.1:"):
        await _import(f"http://127.0.0.1:{_closed_port()}", account)
    assert await _config(account) == empty


def test_cli_reports_an_unreachable_url(capsys: pytest.CaptureFixture[str]) -> None:
    port = _closed_port()
    code = cli_main(["--from", f"http://127.0.0.1:{port}", "--token", "x", "--our-token", "y", "--dry-run"])
    assert code == 2
    assert "import-original: error: cannot reach the original system" in capsys.readouterr().err


# ---- pattern conversion, number by number ---------------------------------------------------------

PATTERNS = ["+15551234567", "+1555*", "1555", "1", "44", "*", "1555*", "", "+44", "12a", "+1-555"]
PROBES = [
    "+15551234567",
    "+15551234568",
    "15551234567",
    "+1555*",
    "*123",
    "+442071234567",
    "12a9",
    "+1-555",
    "+33",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_converted_inbound_patterns_match_the_numbers_the_original_matched(pattern: str) -> None:
    ours = compile_pattern(convert_pattern(pattern)[0])
    for number in PROBES:
        if number != normalize_number(number):
            continue  # separators: this project strips them first (documented), the original did not
        there = (
            number == pattern
            if pattern.startswith("+")
            else number.startswith("+" + pattern) or number.startswith(pattern)
        )
        assert ours.matches(normalize_number(number)) == there, (pattern, number)


@pytest.mark.parametrize("pattern", ["+44", "+1555*", "33", "", "1*"])
def test_converted_destination_patterns_match_what_the_original_matched(pattern: str) -> None:
    ours = compile_pattern(convert_destination(pattern)[0])
    for number in PROBES:
        if number != normalize_number(number):
            continue
        there = (
            number.startswith(pattern)
            if pattern.startswith("+")
            else number.startswith("+" + pattern) or number.startswith(pattern)
        )
        assert ours.matches(normalize_number(number)) == there, (pattern, number)
