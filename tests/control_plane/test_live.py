"""WS /api/live against the control plane as production serves it (granian, over real HTTP), a real
engine (granian) fed config through the API, and the shared NATS, Redis and PostgreSQL.

Each tenant sees its own call events only, within 200 ms of the webhook reaching the engine; a client
that stops reading is dropped with 1013 while the others keep receiving; a missing or bad token closes
with 4401; the token may come as the first message; stats agree with the engines' Redis state; a NATS
outage keeps the clients and the feed resumes after it."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from typing import Any

import httpx
import nats
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from control_plane.settings import ControlPlaneSettings
from shared.enums import EventKind
from shared.events import CallEvent, decode_events, encode_events
from shared.redis_keys import TenantKeys
from tests.control_plane.live_harness import (
    CDR,
    INBOUND,
    STEPS,
    LiveReader,
    LiveTenant,
    ServedPlane,
    cdr,
    granian_control_plane,
    open_live,
    register,
    routable_tenant,
    route_call,
    served_fixtures,
    small_buffer_socket,
    webhook,
    whole_call,
    ws_url,
)
from tests.routing_engine.harness import PrivateServer

pytestmark = pytest.mark.slow

LIVE_ENV = {
    "VLB_LIVE_STATS_INTERVAL_S": "0.5",
    "VLB_LIVE_CLIENT_QUEUE": "1000",
    "VLB_LIVE_AUTH_TIMEOUT_S": "1",
    "VLB_LIVE_AGENTS_CACHE_S": "0.5",
}
LATENCY_LIMIT_S = 0.2
# The event kind behind each frame type of a whole call.
FRAME_KIND = {
    "call.routed": "routed",
    "call.status": "session_update",
    "call.ended": "session_update",
    "cdr.received": "cdr",
}
LONG_NUMBER = "+1" + "5" * 1000


plane, engine_url, api, engine = served_fixtures(LIVE_ENV)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def test_each_tenant_sees_only_its_own_events_within_200_ms(
    api: httpx.AsyncClient, engine: httpx.AsyncClient, cp_settings: ControlPlaneSettings
) -> None:
    a = await routable_tenant(api, engine, "Alpha")
    b = await routable_tenant(api, engine, "Bravo")
    feeds = {a.tenant_id: await open_live(api.base_url.__str__().rstrip("/"), a.token)}
    feeds[b.tenant_id] = await open_live(str(api.base_url).rstrip("/"), b.token)
    # The test's own core subscription: when each event reached NATS (to tell the engine's part of a
    # delay from the feed's).
    nc = await nats.connect(cp_settings.nats_url)
    on_nats: dict[tuple[str, str], float] = {}

    async def seen(msg: Any) -> None:
        now = time.perf_counter()
        for event in decode_events(msg.data):
            on_nats.setdefault((event.session_token, event.kind.value), now)

    stalls: list[tuple[float, float]] = []  # (when, how long) the test's own loop was late

    async def watch_loop() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            late = time.perf_counter() - before - 0.01
            if late > 0.05:
                stalls.append((before, late))

    watcher = asyncio.create_task(watch_loop())
    await nc.subscribe(f"{cp_settings.events_subject_prefix}.*.*", cb=seen)
    await nc.flush()
    try:
        sent: dict[tuple[int, str], dict[str, float]] = {}
        for _ in range(10):
            for t in (a, b):
                session, times = await whole_call(engine, t)
                sent[(t.tenant_id, session)] = times
                await asyncio.sleep(0.02)
        latencies: list[float] = []
        after_nats: list[float] = []  # the feed's own part: on NATS → read by the client
        for (tenant_id, session), times in sent.items():
            reader = feeds[tenant_id]
            for frame_type, at in times.items():
                frame = await reader.wait_for(
                    lambda body, s=session, k=frame_type: body.get("session_token") == s and body["type"] == k
                )
                latency = frame.at - at
                kind = FRAME_KIND[frame_type]
                nats_at = on_nats.get((session, kind))
                assert latency < LATENCY_LIMIT_S, (
                    f"{frame_type} of {session}: {latency * 1000:.0f} ms after the webhook; it was on "
                    f"NATS after {(nats_at - at) * 1000 if nats_at else float('nan'):.0f} ms; test loop stalls "
                    f"{[(round(w - at, 3), round(d, 3)) for w, d in stalls]}"
                )
                if nats_at is not None:
                    after_nats.append(frame.at - nats_at)
                latencies.append(latency)
        for t in (a, b):
            hello = feeds[t.tenant_id].frames[0].body
            assert hello == {"type": "hello", "tenant_id": t.tenant_id, "stats_interval_s": 0.5}
            shown = {f.body["session_token"] for f in feeds[t.tenant_id].frames if "session_token" in f.body}
            assert shown, "no events"
            assert shown <= t.sessions, f"tenant {t.tenant_id} saw another tenant's calls"
            assert feeds[t.tenant_id].close_code is None
        # One call's frames, field by field.
        (tenant_id, session), _times = next(iter(sent.items()))
        t = a if tenant_id == a.tenant_id else b
        frames = [f.body for f in feeds[tenant_id].frames if f.body.get("session_token") == session]
        assert [f["type"] for f in frames] == [k for _, k in STEPS]
        routed, connected, ended, record = frames
        assert routed["status"] == "connecting"
        assert routed["direction"] == "inbound"
        assert routed["from"] == INBOUND["From"]
        assert routed["to"] == INBOUND["To"]
        assert routed["agent_id"] in t.agent_ids
        assert routed["group_id"] == t.group_id
        assert routed["rule_id"] == t.rule_id
        assert routed["attempt"] == 1
        assert routed["outcome"] == "routed"
        assert routed["at"].endswith("Z")
        assert len(routed["at"]) == len("2026-12-01T16:40:00.123Z")
        assert connected["status"] == "connected"
        assert ended["status"] == "completed"
        assert record["status"] == "completed"
        assert record["disposition"] == "ANSWER"
        assert (record["duration"], record["billsec"]) == (CDR["duration"], CDR["billsec"])
        expected_keys = {
            "type", "at", "session_token", "status", "direction", "from", "to", "agent_id", "group_id",
            "rule_id", "attempt", "outcome", "disposition", "duration", "billsec",
        }  # fmt: skip
        assert all(set(f) == expected_keys for f in frames)
        print(
            f"\nlive feed: {len(latencies)} events, webhook sent → frame read: "
            f"p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms; on NATS → frame read: p50 "
            f"{statistics.median(after_nats) * 1000:.1f} ms, p99 {percentile(after_nats, 0.99) * 1000:.1f} ms"
        )
    finally:
        watcher.cancel()
        await nc.close()
        for reader in feeds.values():
            await reader.stop()


def redis_active(prefix: str, t: LiveTenant) -> Any:
    """The test's own count of the live slots: ZCOUNT above now of each agent's active set."""

    async def count() -> dict[str, int]:
        client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        try:
            keys = TenantKeys(prefix, t.tenant_id)
            now_ms = int(time.time() * 1000)
            out = {}
            for agent_id in t.agent_ids:
                n = await client.zcount(keys.active(agent_id), f"({now_ms}", "+inf")
                if n:
                    out[str(agent_id)] = int(n)
            return out
        finally:
            await client.aclose()

    return count()


async def test_stats_follow_the_engines_redis_state(
    api: httpx.AsyncClient, engine: httpx.AsyncClient, cp_settings: ControlPlaneSettings
) -> None:
    t = await routable_tenant(api, engine, "Stats")
    # Keep the calls and the stats read inside one minute (calls_last_minute is then exact).
    if time.time() % 60 > 45:
        await asyncio.sleep(61 - time.time() % 60)
    reader = await open_live(str(api.base_url).rstrip("/"), t.token)
    try:
        first = reader.of_type("stats")[0]
        assert first["active_calls"] == 0
        assert first["per_agent_active"] == {}
        assert first["calls_last_minute"] == 0  # the warm-up call matched no rule
        sessions = [uuid.uuid4().hex for _ in range(3)]
        for session in sessions:
            await route_call(engine, t, session)
        expected = await redis_active(cp_settings.redis_prefix, t)
        assert sum(expected.values()) == 3
        frame = await reader.wait_for(lambda b: b["type"] == "stats" and b["active_calls"] == 3)
        assert frame.body["per_agent_active"] == expected
        assert frame.body["calls_last_minute"] == 3
        assert set(frame.body) == {"type", "at", "active_calls", "calls_last_minute", "per_agent_active"}

        # Their CDRs end them: the slots are released and the stats drop.
        for session in sessions[:2]:
            assert (await webhook(engine, t, "cdr", cdr(t, session))).status_code == 204
        frame = await reader.wait_for(lambda b: b["type"] == "stats" and b["active_calls"] == 1)
        assert frame.body["per_agent_active"] == await redis_active(cp_settings.redis_prefix, t)
        assert frame.body["calls_last_minute"] == 3
        stats = reader.of_type("stats")
        assert len(stats) >= 3
    finally:
        await reader.stop()


async def test_a_client_that_stops_reading_is_dropped_and_the_others_keep_receiving(
    api: httpx.AsyncClient, plane: ServedPlane, cp_settings: ControlPlaneSettings
) -> None:
    t = await register(api, "Slow")
    fast = await open_live(plane.url, t.token)
    # A client that reads its hello, then nothing: its small receive buffer backs the server up soon.
    slow = await connect(
        ws_url(plane.url, t.token), sock=small_buffer_socket(plane.url), max_queue=1, open_timeout=10
    )
    assert '"hello"' in str(await slow.recv())
    nc = await nats.connect(cp_settings.nats_url)
    subject = f"{cp_settings.events_subject_prefix}.{t.tenant_id}.session_update"
    sent = 0

    async def burst(n: int = 32) -> None:
        nonlocal sent
        events = [
            CallEvent(
                event_id=uuid.uuid4().hex,
                kind=EventKind.SESSION_UPDATE,
                tenant_id=t.tenant_id,
                domain="slow.example",
                session_token=f"slow-{sent + i}",
                occurred_at=time.time(),
                status="ringing",
                # ~2 KB frames: the kernel's socket buffers (about 1 MB here) fill after ~500 of them
                # rather than thousands (the writer stores the numbers cut to their columns).
                from_number=LONG_NUMBER,
                to_number=LONG_NUMBER,
            )
            for i in range(n)
        ]
        sent += n
        await nc.publish(subject, encode_events(events))
        await asyncio.sleep(0.03)  # ~1,000 events/s, in the engine's batches

    try:
        dropped = False
        for _ in range(200):  # the slow one's queue (1,000 frames) fills after the kernel's buffers
            await burst()
            if sent % 320 == 0:
                metrics = (await api.get("/metrics")).text
                dropped = any(
                    line.startswith("vlb_cp_live_dropped_total") and float(line.split()[-1]) >= 1
                    for line in metrics.splitlines()
                )
                if dropped:
                    break
        assert dropped, f"the slow client was not dropped after {sent} events"
        assert fast.close_code is None, (len(fast.frames), sent)
        for _ in range(10):  # the fast one keeps receiving after the drop
            await burst()
        await fast.wait_for(lambda b: b.get("session_token") == f"slow-{sent - 1}")
        tokens = [f.body["session_token"] for f in fast.frames if f.body["type"] == "call.status"]
        assert tokens == [f"slow-{i}" for i in range(sent)]  # every event, in order
        assert fast.close_code is None
        # The slow client, reading again, finds what the kernel held and then the close: 1013.
        read = 0
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(slow.recv(), 5)
                read += 1
        assert slow.close_code == 1013
        assert slow.close_reason == "did not keep up: reconnect"
        assert read < sent
        print(f"\nslow client: dropped after {sent} events sent, it had read {read} of them")
    finally:
        await fast.stop()
        await slow.close()
        await nc.close()


async def close_code_of(url: str, first: str | None = None) -> int | None:
    async with connect(url, open_timeout=10) as ws:
        if first is not None:
            await ws.send(first)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed:
            pass
        return ws.close_code


async def test_a_missing_or_bad_token_closes_with_4401(api: httpx.AsyncClient, plane: ServedPlane) -> None:
    t = await register(api, "Auth")
    token_id = t.token.split("|")[0]
    assert await close_code_of(ws_url(plane.url, "not-a-token")) == 4401
    assert await close_code_of(ws_url(plane.url, f"{token_id}|wrong-secret")) == 4401
    assert await close_code_of(ws_url(plane.url, "")) == 4401
    started = time.perf_counter()
    assert await close_code_of(ws_url(plane.url)) == 4401  # nothing sent within the auth timeout (1 s)
    assert 0.9 < time.perf_counter() - started < 4
    assert await close_code_of(ws_url(plane.url), '{"token": "9|nope"}') == 4401
    assert await close_code_of(ws_url(plane.url), "not json") == 4401
    # A logged-out (revoked) token no longer opens the feed.
    other = await register(api, "Revoked")
    logout = await api.post("/api/logout", headers={"Authorization": f"Bearer {other.token}"})
    assert logout.status_code in (200, 204), logout.text
    assert await close_code_of(ws_url(plane.url, other.token)) == 4401


async def test_the_token_may_come_as_the_first_message(api: httpx.AsyncClient, plane: ServedPlane) -> None:
    t = await register(api, "First")
    async with connect(ws_url(plane.url), open_timeout=10) as ws:
        await ws.send(f'{{"token": "{t.token}"}}')
        reader = LiveReader(ws).start()
        hello = await reader.wait_for(lambda b: b["type"] == "hello")
        assert hello.body == {"type": "hello", "tenant_id": t.tenant_id, "stats_interval_s": 0.5}
        stats = await reader.wait_for(lambda b: b["type"] == "stats")
        assert stats.body["active_calls"] == 0
        await ws.send("anything else is ignored")
        await reader.wait_for(lambda b: b["type"] == "stats" and b is not stats.body)
        assert reader.close_code is None


async def test_the_feed_keeps_its_clients_through_a_nats_outage(
    api: httpx.AsyncClient, cp_settings: ControlPlaneSettings
) -> None:
    server = PrivateServer("nats")
    server.start()
    try:
        with granian_control_plane(env={**LIVE_ENV, "VLB_NATS_URL": server.url}) as private_plane:
            t = await register(api, "Outage")  # the shared plane's API: same database
            late = await register(api, "Late")  # its first client joins while NATS is down
            reader = await open_live(private_plane.url, t.token)
            nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
            prefix = cp_settings.events_subject_prefix

            async def publish(tenant: LiveTenant, session: str) -> None:
                event = CallEvent(
                    event_id=uuid.uuid4().hex,
                    kind=EventKind.ROUTED,
                    tenant_id=tenant.tenant_id,
                    domain="outage.example",
                    session_token=session,
                    occurred_at=time.time(),
                    outcome="routed",
                )
                await nc.publish(f"{prefix}.{tenant.tenant_id}.routed", encode_events([event]))

            late_reader: LiveReader | None = None
            try:
                await publish(t, "before")
                await reader.wait_for(lambda b: b.get("session_token") == "before")
                server.stop()
                await asyncio.sleep(1.0)
                stats_during = len(reader.of_type("stats"))
                late_reader = await open_live(
                    private_plane.url, late.token
                )  # hello and stats: no NATS needed
                await asyncio.sleep(1.5)
                assert len(reader.of_type("stats")) > stats_during  # stats go on (Redis)
                assert reader.close_code is None
                server.start()
                # nats-py reconnects both sides and subscribes again: both feeds resume.
                for tenant, feed in ((t, reader), (late, late_reader)):
                    deadline = time.monotonic() + 20
                    n = 0
                    while True:
                        n += 1
                        if nc.is_connected:
                            await publish(tenant, f"after-{n}")
                        try:
                            await feed.wait_for(
                                lambda b: str(b.get("session_token")).startswith("after-"), 0.5
                            )
                            break
                        except AssertionError:
                            assert time.monotonic() < deadline, (
                                f"tenant {tenant.tenant_id}'s feed did not resume"
                            )
                    assert feed.close_code is None
            finally:
                await reader.stop()
                if late_reader is not None:
                    await late_reader.stop()
                await nc.close()
    finally:
        server.cleanup()


def live_gauge(metrics: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(f"{name} "))


async def test_a_dead_client_leaves_and_its_tenant_is_unsubscribed(
    api: httpx.AsyncClient, plane: ServedPlane
) -> None:
    t = await register(api, "Dead")
    before = (await api.get("/metrics")).text
    clients, tenants = live_gauge(before, "vlb_cp_live_clients"), live_gauge(before, "vlb_cp_live_tenants")
    reader = await open_live(plane.url, t.token)
    during = (await api.get("/metrics")).text
    assert live_gauge(during, "vlb_cp_live_clients") == clients + 1
    assert live_gauge(during, "vlb_cp_live_tenants") == tenants + 1
    reader.ws.transport.abort()  # gone without a close handshake
    deadline = time.monotonic() + 5
    while True:
        after = (await api.get("/metrics")).text
        if live_gauge(after, "vlb_cp_live_clients") == clients:
            break
        assert time.monotonic() < deadline, "the dead client is still counted"
        await asyncio.sleep(0.1)
    assert live_gauge(after, "vlb_cp_live_tenants") == tenants  # its last client: unsubscribed


async def test_every_worker_serves_the_feed(
    api: httpx.AsyncClient, cp_settings: ControlPlaneSettings
) -> None:
    """Two granian workers: clients land on both, each worker subscribes for the tenant on its own,
    and every client gets every event and the same stats."""
    t = await register(api, "Workers")
    with granian_control_plane(workers=2, env=LIVE_ENV) as two:
        nc = await nats.connect(cp_settings.nats_url)
        readers: list[LiveReader] = []
        try:
            # Connections opened together spread over the workers (they accept from one socket) once
            # both are up (/health answered from the first).
            for _ in range(10):
                readers += await asyncio.gather(*(open_live(two.url, t.token) for _ in range(4)))
                per_worker = two.connections_per_worker()
                if len(per_worker) == 2:
                    break
                await asyncio.sleep(1)
            assert len(per_worker) == 2, f"every client landed on one worker: {per_worker}"
            event = CallEvent(
                event_id=uuid.uuid4().hex,
                kind=EventKind.ROUTED,
                tenant_id=t.tenant_id,
                domain="workers.example",
                session_token="to-every-worker",
                occurred_at=time.time(),
                outcome="routed",
                agent_id=1,
            )
            prefix = cp_settings.events_subject_prefix
            await nc.publish(f"{prefix}.{t.tenant_id}.routed", encode_events([event]))
            for reader in readers:
                frame = await reader.wait_for(lambda b: b.get("session_token") == "to-every-worker")
                assert frame.body["type"] == "call.routed"
                assert sum(1 for f in reader.frames if f.body.get("session_token") == "to-every-worker") == 1
        finally:
            await nc.close()
            for reader in readers:
                await reader.stop()
