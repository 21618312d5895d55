"""Secrets never leak (issue 13 §5): a whole admin session and a whole call with distinctive secret
values — user passwords (register, a rejected register, login, failed logins, password change), the
API tokens, an agent's provider credentials, the domain's webhook key (and a wrong one presented on a
webhook), VLB_SECRET_KEY, VLB_SNAPSHOT_KEY and VLB_OPS_TOKEN — then every place they could surface is
scanned for them, raw and in the usual encodings (JSON-escaped, URL-encoded, base64 at any
alignment): every log line of both planes (real granian processes, at debug level), every API response
body and header, every message on the events stream and in the config bucket (there the credentials
must be present only encrypted, and decrypt with the snapshot key), and every row of every table
(webhook audit, call timelines, outbox, ...).

The two answers that hand a secret out are the exceptions, by design: the response that issues a token
or a webhook key contains it once, and the engine's CXML answer to Cloudonix carries the agent's
credentials (Cloudonix needs them to dial the provider) — asserted, not merely tolerated."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import msgspec
import nats
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from nats.js.errors import NotFoundError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from launcher.planes import granian_argv
from launcher.process import ChildProcess, log_tail, spawn
from shared.snapshot import TenantSnapshot
from tests.routing_engine.harness import free_port, load_fixture

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
INBOUND = load_fixture("application-inbound.json")
SESSION_UPDATES = load_fixture("session-updates-answered.json")
CDR = load_fixture("cdr-answered.json")
# granian's own lines too, as talkative as they get: its debug level and an access log line per request.
GRANIAN_VERBOSE = ("--log-level", "debug", "--access-log")


def encodings(secret: str) -> set[str]:
    """How ``secret`` could appear in text: raw, JSON-escaped, URL-encoded, and base64 (standard and
    URL-safe) of it inside any longer string (the alignment-independent middle of each encoding)."""
    raw = secret.encode()
    forms = {secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret)}
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * offset + raw).decode()
            # drop the characters that mix in the neighbours' bits (the prefix and the padding tail)
            start = (offset * 4 + 2) // 3
            middle = encoded[start:].rstrip("=")
            middle = middle[: len(middle) - 2]
            if len(middle) >= 12:
                forms.add(middle)
    return {f for f in forms if f}


@dataclass
class Secret:
    name: str
    value: str
    forms: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.forms = encodings(self.value)

    def found_in(self, haystack: str) -> str | None:
        for form in self.forms:
            if form in haystack:
                return form
        return None


@dataclass
class Session:
    """Everything the test saw: responses (with what each may legitimately hand out) and secrets."""

    secrets: list[Secret] = field(default_factory=list)
    # (label, text of status line + headers + body, names of secrets this answer may contain)
    answers: list[tuple[str, str, set[str]]] = field(default_factory=list)

    def add(self, name: str, value: str) -> str:
        assert len(value) >= 12, name
        self.secrets.append(Secret(name, value))
        return value

    def record(self, label: str, response: httpx.Response, may_hold: Iterable[str] = ()) -> httpx.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        self.answers.append((label, f"{response.status_code}\n{headers}\n\n{response.text}", set(may_hold)))
        return response

    def leaks(self, where: str, haystack: str, allowed: Iterable[str] = ()) -> list[str]:
        allowed = set(allowed)
        found = []
        for secret in self.secrets:
            if secret.name in allowed:
                continue
            form = secret.found_in(haystack)
            if form is not None:
                found.append(f"{secret.name} ({form!r}) in {where}")
        return found


def distinctive(tag: str) -> str:
    return f"{tag}-{secrets.token_urlsafe(12)}+/Z="  # '+', '/', '=' make the URL-encoded form differ


async def _ready(child: ChildProcess, url: str) -> None:
    deadline = time.monotonic() + 40.0
    async with httpx.AsyncClient(base_url=url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if not child.running():
                raise AssertionError(f"{child.name} exited: {log_tail(child.log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{child.name} not ready: {log_tail(child.log_path)}")


def test_the_scanner_sees_every_encoding() -> None:
    session = Session()
    value = session.add("probe", distinctive("probe"))
    for prefix in ("", "x", "xy", "xyz"):
        blob = (prefix + value + " tail").encode()
        for text_form in (
            base64.b64encode(blob).decode(),
            base64.urlsafe_b64encode(blob).decode(),
            quote(value, safe=""),
            quote_plus(value),
            json.dumps({"k": prefix + value}),
            f"Authorization: Bearer {value}",
        ):
            assert session.leaks("probe", f"..{text_form}.."), text_form
    assert not session.leaks("probe", base64.b64encode(b"something else entirely").decode())


@dataclass
class Planes:
    cp: str
    engine: str
    env: dict[str, str]
    logs: Path
    children: list[ChildProcess]


@contextlib.asynccontextmanager
async def planes(env: dict[str, str]) -> AsyncIterator[Planes]:
    logs = Path(tempfile.mkdtemp(prefix="vlb-secrets-"))
    cp_port, engine_port = free_port(), free_port()
    children: list[ChildProcess] = []
    try:
        cp = spawn(
            "control-plane",
            [
                *granian_argv("control_plane.app:create_app", "127.0.0.1", cp_port, workers=1),
                *GRANIAN_VERBOSE,
            ],
            logs / "control-plane.log",
            env=env,
            cwd=REPO,
        )
        children.append(cp)
        engine = spawn(
            "engine",
            [
                *granian_argv(
                    "routing_engine.app:create_app",
                    "127.0.0.1",
                    engine_port,
                    1,
                    loop="uvloop",
                    interface="rsgi",
                ),
                *GRANIAN_VERBOSE,
            ],
            logs / "engine.log",
            env={**env, "PROMETHEUS_MULTIPROC_DIR": str(logs / "prom")},
            cwd=REPO,
        )
        (logs / "prom").mkdir()
        children.append(engine)
        cp_url, engine_url = f"http://127.0.0.1:{cp_port}", f"http://127.0.0.1:{engine_port}"
        await _ready(cp, cp_url)
        await _ready(engine, engine_url)
        yield Planes(cp_url, engine_url, env, logs, children)
    finally:
        for child in children:
            child.stop()
        shutil.rmtree(logs / "prom", ignore_errors=True)


async def _stream_messages(nc: nats.NATS, stream: str) -> list[tuple[str, bytes]]:
    """Every message a stream holds (subject, data), read by sequence."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return []
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(NotFoundError):
            msg = await js.get_msg(stream, seq)
            out.append((msg.subject or "", msg.data or b""))
    return out


async def test_secrets_never_leak(schema: str, service_env: dict[str, str], run_id: str) -> None:
    s = Session()
    secret_key = s.add("VLB_SECRET_KEY", Fernet.generate_key().decode())
    snapshot_key = s.add("VLB_SNAPSHOT_KEY", Fernet.generate_key().decode())
    ops_token = s.add("VLB_OPS_TOKEN", distinctive("ops"))
    db_password = s.add("database password", distinctive("dbpw"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VLB_")},
        **service_env,
        "VLB_SECRET_KEY": secret_key,
        "VLB_SNAPSHOT_KEY": snapshot_key,
        "VLB_OPS_TOKEN": ops_token,
        "VLB_LOG_LEVEL": "debug",
        "VLB_LOG_FORMAT": "json",
        "VLB_CONFIG_BUCKET": f"vlb-config-sec-{run_id}",
        "VLB_EVENTS_STREAM": f"VLB_EVENTS_SEC_{run_id}",
        "VLB_EVENTS_SUBJECT_PREFIX": f"vlbsec{run_id}.events",
        "VLB_REDIS_PREFIX": f"vlbt{run_id}sec",
        "VLB_ENGINE_PUBLIC_URL": "",
        "VLB_SNAPSHOT_REPUBLISH_S": "2",
        # The server trusts local connections, so a password in the URL is accepted (and ignored).
        "VLB_DATABASE_URL": make_url(schema).set(password=db_password).render_as_string(hide_password=False),
    }
    password = s.add("user password", distinctive("pw1"))
    wrong_password = s.add("wrong password", distinctive("nope"))
    new_password = s.add("changed password", distinctive("pw2"))
    agent_user = s.add("agent username", distinctive("sfuser"))
    agent_password = s.add("agent password", distinctive("sfpass"))
    wrong_key = s.add("wrong webhook key", "XI" + secrets.token_hex(16).upper())
    viewer_password = s.add("viewer password", distinctive("pwv"))
    viewer_reset = s.add("viewer password reset by the admin", distinctive("pwr"))
    too_long = s.add("a password over the limit", distinctive("long") * 30)
    email = f"sec-{uuid.uuid4().hex[:10]}@example.com"

    async with planes(env) as p, httpx.AsyncClient(base_url=p.cp, timeout=10) as api:
        # --- the admin session ---------------------------------------------------------------------
        reg = {"name": "Sec", "email": email, "password": password, "tenant_name": "Secrets Inc"}
        s.record(
            "register (mismatch)",
            await api.post("/api/register", json={**reg, "password_confirmation": password + "x"}),
        )
        r = s.record(
            "register", await api.post("/api/register", json={**reg, "password_confirmation": password})
        )
        assert r.status_code == 201, r.text
        s.add("registration token", r.json()["token"])
        s.answers[-1][2].add("registration token")
        for _ in range(2):
            r = await api.post("/api/login", json={"email": email, "password": wrong_password})
            assert s.record("failed login", r).status_code == 401
        r = await api.post("/api/login", json={"email": email, "password": password})
        assert r.status_code == 200
        token = s.add("login token", r.json()["token"])
        s.record("login", r, {"login token"})
        auth = {"Authorization": f"Bearer {token}"}

        async def call(method: str, url: str, **kw: Any) -> httpx.Response:
            response = await api.request(method, url, headers=auth, **kw)
            s.record(f"{method} {url}", response)
            assert response.status_code < 500, response.text
            return response

        agent = (
            await call(
                "POST",
                "/api/voice-agents",
                json={
                    "name": "Synthflow",
                    "provider": "synthflow",
                    "service_value": "https://agent.synthflow.ai/secret-test",
                    "username": agent_user,
                    "password": agent_password,
                },
            )
        ).json()
        assert agent["has_credentials"] is True
        await call("GET", f"/api/voice-agents/{agent['id']}")
        await call("GET", "/api/voice-agents")
        await call("PUT", f"/api/voice-agents/{agent['id']}", json={"name": "Synthflow 2", "password": ""})
        await call("POST", f"/api/voice-agents/{agent['id']}/validate")
        domain_name = f"sec-{uuid.uuid4().hex[:8]}.cloudonix.net"
        r = await api.post("/api/domains", json={"domain": domain_name}, headers=auth)
        assert r.status_code == 201, r.text
        domain = r.json()
        s.add("webhook key", domain["webhook_key"])
        s.record("create domain", r, {"webhook key"})
        await call("GET", f"/api/domains/{domain['id']}")
        await call("GET", "/api/domains")
        group = (await call("POST", "/api/agent-groups", json={"name": "G", "strategy": "priority"})).json()
        await call("POST", f"/api/agent-groups/{group['id']}/members", json={"agent_id": agent["id"]})
        await call(
            "POST",
            "/api/inbound-routing-rules",
            json={"pattern": "*", "target_type": "group", "target_id": group["id"]},
        )
        r = await api.post(f"/api/domains/{domain['id']}/rotate-key", headers=auth)
        assert r.status_code == 200, r.text
        key = s.add("rotated webhook key", r.json()["webhook_key"])
        s.record("rotate key", r, {"rotated webhook key"})
        viewer = (
            await call(
                "POST",
                "/api/users",
                json={"name": "Viewer", "email": f"v-{email}", "password": viewer_password, "role": "viewer"},
            )
        ).json()
        await call("PUT", f"/api/users/{viewer['id']}", json={"password": viewer_reset})
        await call("POST", "/api/users", json={"name": "V2", "email": f"w-{email}", "password": too_long})
        await call("GET", "/api/user")
        await call("GET", "/api/users")
        await call("GET", "/api/tenant")
        s.record("metrics", await api.get("/metrics", headers={"Authorization": f"Bearer {ops_token}"}))
        s.record("metrics (no token)", await api.get("/metrics"))

        # --- the call, through the engine --------------------------------------------------------
        async with httpx.AsyncClient(base_url=p.engine, timeout=10) as eng:
            ops = {"Authorization": f"Bearer {ops_token}"}
            for _ in range(300):
                status = (await eng.get("/status", headers=ops)).json()
                if str(agent["tenant_id"]) in status["tenants"]:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # the last write's snapshot (the rule) may follow the first
            s.record("engine status", await eng.get("/status", headers=ops))
            s.record("engine metrics", await eng.get("/metrics", headers=ops))
            session = uuid.uuid4().hex
            inbound = dict(INBOUND, Session=session, CallSid=session, Domain=domain_name)
            app_url = f"/api/voice/application/{domain_name}"
            for bad in ({"Authorization": f"Bearer {wrong_key}"}, {"X-CX-APIKey": wrong_key}):
                r = s.record("webhook (wrong key)", await eng.post(app_url, json=inbound, headers=bad))
                assert r.status_code == 401
            r = await eng.post(app_url, json=inbound, headers={"X-CX-APIKey": key})
            # The answer to Cloudonix carries the agent's credentials: that is what they are for.
            assert r.status_code == 200, r.text
            assert agent_user in r.text, r.text
            s.record("voice application answer", r, {"agent username", "agent password"})
            # ... and the scanner sees them there (it would see them anywhere else).
            assert len(s.leaks("canary", r.text)) == 2
            r = await eng.post(
                f"/api/voice/session/update/{domain_name}",
                content=b'{"token": "' + session.encode() + b'", broken',
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            s.record("session update (malformed)", r)
            for update in SESSION_UPDATES:
                body = dict(
                    update, token=session, domain=domain_name, eventId=f"{session}-{update['status']}"
                )
                r = await eng.post(
                    f"/api/voice/session/update/{domain_name}",
                    json=body,
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert s.record("session update", r).status_code == 204, r.text
            cdr = dict(CDR, domain=domain_name, session=dict(CDR["session"], token=session))
            r = await eng.post(
                f"/api/voice/session/cdr/{domain_name}", json=cdr, headers={"X-CX-APIKey": key}
            )
            assert s.record("cdr", r).status_code == 204

        # --- back in the API: the call's record, timeline, audit; then the password change ---------
        detail: dict[str, Any] = {}
        for _ in range(300):
            r = await api.get(f"/api/calls/{session}", headers=auth)
            if r.status_code == 200 and r.json().get("disposition") == "ANSWER":
                detail = r.json()
                break
            await asyncio.sleep(0.05)
        assert detail, "the call never reached the control plane"
        await call("GET", f"/api/calls/{session}")
        await call("GET", "/api/call-records", params={"per_page": 100})
        await call("GET", "/api/cdr", params={"token": session})
        audit = await call("GET", "/api/webhook-audit", params={"per_page": 100})
        assert audit.json()["meta"]["total"] >= 3
        r = await call(
            "PUT",
            "/api/user/password",
            json={
                "current_password": wrong_password,
                "password": new_password,
                "password_confirmation": new_password,
            },
        )
        assert r.status_code == 422
        r = await call(
            "PUT",
            "/api/user/password",
            json={
                "current_password": password,
                "password": new_password,
                "password_confirmation": new_password,
            },
        )
        assert r.status_code == 200, r.text
        r = await api.post("/api/login", json={"email": email, "password": new_password})
        assert r.status_code == 200
        s.add("second login token", r.json()["token"])
        s.record("login (new password)", r, {"second login token"})
        r = s.record(
            "login (old password)", await api.post("/api/login", json={"email": email, "password": password})
        )
        assert r.status_code == 401
        await call("POST", "/api/logout")

    # The processes are stopped: their logs are complete.
    problems: list[str] = []
    log_lines = 0
    for path in sorted(p.logs.glob("*.log")):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            log_lines += 1
            problems += s.leaks(f"{path.name}:{number}", line)
    assert log_lines > 20, "the planes logged (almost) nothing: is the debug level reaching them?"

    for label, answer, allowed in s.answers:
        problems += s.leaks(f"answer to {label}", answer, allowed)

    nc = await nats.connect(env["VLB_NATS_URL"])
    try:
        events = await _stream_messages(nc, env["VLB_EVENTS_STREAM"])
        assert len(events) >= 3
        for subject, data in events:
            problems += s.leaks(f"event {subject}", data.decode("utf-8", "replace"))
        snapshots = await _stream_messages(nc, f"KV_{env['VLB_CONFIG_BUCKET']}")
        assert snapshots
        decrypted = 0
        for subject, data in snapshots:
            problems += s.leaks(f"config bucket {subject}", data.decode("utf-8", "replace"))
            if not data:
                continue
            snap = (
                msgspec.json.decode(data, type=TenantSnapshot)
                if data[:1] == b"{"
                else msgspec.msgpack.decode(data, type=TenantSnapshot)
            )
            for a in snap.agents:
                if a.credentials:
                    plain = msgspec.msgpack.decode(
                        Fernet(snapshot_key.encode()).decrypt(a.credentials.encode())
                    )
                    assert plain == {"username": agent_user, "password": agent_password}
                    decrypted += 1
        assert decrypted, "no snapshot carried the agent's encrypted credentials"
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(env["VLB_EVENTS_STREAM"])
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_key_value(env["VLB_CONFIG_BUCKET"])
    finally:
        await nc.close()

    redis_values = 0
    store = aioredis.Redis.from_url(env["VLB_REDIS_URL"])
    try:
        async for raw_key in store.scan_iter(match=f"{env['VLB_REDIS_PREFIX']}*", count=1000):
            kind = (await store.type(raw_key)).decode()
            value: Any = {
                "string": store.get,
                "hash": store.hgetall,
                "list": lambda k: store.lrange(k, 0, -1),
                "set": store.smembers,
                "zset": lambda k: store.zrange(k, 0, -1, withscores=True),
            }.get(kind, store.type)
            dumped = repr(await value(raw_key))
            redis_values += 1
            # The idempotency cache keeps each answer for replays with a mark where the agent's
            # credentials go (the engine fills them in): no secret at all in Redis.
            problems += s.leaks(f"redis {raw_key!r}", dumped)
        await store.delete(*[k async for k in store.scan_iter(match=f"{env['VLB_REDIS_PREFIX']}*")])
    finally:
        await store.aclose()

    db = create_async_engine(schema)
    rows = 0
    try:
        async with db.connect() as conn:
            tables = (
                (await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")))
                .scalars()
                .all()
            )
            for table in tables:
                for (row,) in await conn.execute(text(f'SELECT row_to_json(t)::text FROM "{table}" t')):
                    rows += 1
                    problems += s.leaks(f"table {table}", row)
            stored = (
                await conn.execute(
                    text("SELECT username_enc, password_enc FROM voice_agents WHERE id = :id"),
                    {"id": agent["id"]},
                )
            ).one()
        # at rest, encrypted with the secret key
        fernet = Fernet(secret_key.encode())
        assert [fernet.decrypt(v.encode()).decode() for v in stored] == [agent_user, agent_password]
    finally:
        await db.dispose()
    print(
        f"\nscanned {len(s.secrets)} secrets ({sum(len(x.forms) for x in s.secrets)} forms) in {log_lines} log lines, "
        f"{len(s.answers)} answers, {len(events)} events, {len(snapshots)} snapshot revisions, {rows} rows, {redis_values} redis keys"
    )
    assert not problems, "secrets leaked:\n" + "\n".join(sorted(set(problems))) + f"\n(logs in {p.logs})"
    shutil.rmtree(p.logs, ignore_errors=True)
