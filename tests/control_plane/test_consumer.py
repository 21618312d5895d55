"""The call-event consumer on real NATS JetStream and PostgreSQL: a whole call published as the engines
publish it (duplicates, out of order) becomes one record, one CDR, an ordered timeline and audit rows;
redelivery and a restart mid-stream change nothing; a poison message does not stall it; NATS being
down does not hold up start."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx
import msgspec
import nats
import pytest
from litestar import Litestar
from nats.aio.client import Client as NATS
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from control_plane.db.models import CallRecord, CallTimelineEntry, Cdr, WebhookAudit
from control_plane.events.consumer import EventConsumer, ensure_stream
from control_plane.events.writer import write_events
from control_plane.settings import ControlPlaneSettings
from shared.enums import EventKind
from shared.events import EVENT_ENCODER, CallEvent, event_subject
from tests.control_plane.conftest import Account

K = EventKind
START_MS = 1768089515449  # the answered-call fixture's times (tests/fixtures/cloudonix)
ANSWER_MS = 1768089523120
END_MS = 1768089611301


def new_token() -> str:
    return uuid.uuid4().hex


def full_call(
    tenant_id: int,
    token: str,
    *,
    domain: str = "acme.cloudonix.net",
    agent_id: int = 11,
    group_id: int = 22,
    rule_id: int = 33,
    start_ms: int = START_MS,
    answer_ms: int = ANSWER_MS,
    end_ms: int = END_MS,
    disposition: str = "ANSWERED",
    engine: str = "engine-a",
) -> list[CallEvent]:
    """A routed, answered call: the decision, 10 session updates (2 exact repeats, 3 late ones), the
    <Dial action> and the CDR, in the order the engines might publish them."""
    t0 = start_ms / 1000

    def ev(kind: EventKind, suffix: str, at: float, **kw: Any) -> CallEvent:
        return CallEvent(
            event_id=f"{tenant_id}:{token}:{suffix}",
            kind=kind,
            tenant_id=tenant_id,
            domain=domain,
            session_token=token,
            occurred_at=at,
            engine_id=engine,
            **kw,
        )

    def update(status: str, at: float, suffix: str | None = None, **kw: Any) -> CallEvent:
        return ev(
            K.SESSION_UPDATE,
            f"su:{suffix or status}",
            at,
            status=status,
            direction="inbound",
            from_number="+14155550100",
            to_number="+15551234567",
            call_start_ms=start_ms,
            outcome="recorded",
            payload={"status": status, "token": token},
            **kw,
        )

    routed = ev(
        K.ROUTED,
        "app",
        t0 + 0.2,
        direction="inbound",
        from_number="+14155550100",
        to_number="+15551234567",
        caller_name="Alice",
        rule_id=rule_id,
        group_id=group_id,
        agent_id=agent_id,
        attempt=1,
        outcome="routed",
        latency_us=180,
        payload={"session": token},
    )
    new = update("new", t0 + 0.1)
    processing = update("processing", t0 + 2)
    ringing = update("ringing", t0 + 4)
    connected = update("connected", (answer_ms / 1000) + 0.1, call_answer_ms=answer_ms)
    answer = update(
        "answer",
        end_ms / 1000 + 0.1,
        call_answer_ms=answer_ms,
        call_end_ms=end_ms,
        call_id=f"call-{token[:8]}",
    )
    dial = ev(K.DIAL_STATUS, "dial-1", end_ms / 1000 + 0.05, status="completed", outcome="ended",
              agent_id=agent_id, attempt=1, latency_us=90)  # fmt: skip
    cdr = ev(
        K.CDR,
        "cdr",
        end_ms / 1000 + 1,
        direction="inbound",
        from_number="+14155550100",
        to_number="+15551234567",
        disposition=disposition,
        call_start_ms=start_ms,
        call_answer_ms=answer_ms,
        call_end_ms=end_ms,
        duration=round((end_ms - start_ms) / 1000),
        billsec=round((end_ms - answer_ms) / 1000),
        call_id=f"call-{token[:8]}",
        payload={"disposition": disposition, "apikey": "***"},
    )
    late = [
        update("ringing", end_ms / 1000 + 2, suffix="ringing:late"),
        update("processing", end_ms / 1000 + 3, suffix="processing:late"),
        update("connected", end_ms / 1000 + 4, suffix="connected:late", call_answer_ms=answer_ms),
    ]
    # Out of order: the end arrives before the middle; two exact repeats.
    return [routed, new, answer, ringing, processing, connected, new, dial, cdr, connected, *late]


def unique_ids(events: Iterable[CallEvent]) -> set[str]:
    return {e.event_id for e in events}


@pytest.fixture
async def nc(cp_settings: ControlPlaneSettings) -> AsyncIterator[NATS]:
    client = await nats.connect(cp_settings.nats_url)
    yield client
    await client.close()


@pytest.fixture
async def db(cp_settings: ControlPlaneSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(cp_settings.database_url, pool_size=2)
    yield engine
    await engine.dispose()


def own_stream(cp_settings: ControlPlaneSettings, **kw: Any) -> ControlPlaneSettings:
    """Settings with a stream of the test's own, so the app's consumer never sees its events."""
    tag = uuid.uuid4().hex[:8]
    return msgspec.structs.replace(
        cp_settings,
        events_stream=f"{cp_settings.events_stream}_{tag}",
        events_subject_prefix=f"{cp_settings.events_subject_prefix}{tag}",
        events_durable=f"test-{tag}",
        **kw,
    )


async def publish(
    nc: NATS, settings: ControlPlaneSettings, events: Iterable[CallEvent], msg_id_suffix: str = ""
) -> None:
    js = nc.jetstream()
    await ensure_stream(js, settings.events_stream, f"{settings.events_subject_prefix}.>")
    for e in events:
        await js.publish(
            event_subject(settings.events_subject_prefix, e.tenant_id, e.kind),
            EVENT_ENCODER.encode(e),
            headers={"Nats-Msg-Id": e.event_id + msg_id_suffix},
        )


async def drop_stream(nc: NATS, settings: ControlPlaneSettings) -> None:
    with contextlib.suppress(Exception):  # already gone
        await nc.jetstream().delete_stream(settings.events_stream)


async def wait_for(check: Callable[[], Any], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def drained(consumer: EventConsumer) -> bool:
    """Every message of the stream delivered and acknowledged."""
    sub = consumer._sub
    if sub is None:
        return False
    info = await sub.consumer_info()
    return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq > 0


async def count(db: AsyncEngine, model: Any, token: str) -> int:
    async with db.connect() as conn:
        return int(
            await conn.scalar(select(func.count()).select_from(model).where(model.session_token == token))
            or 0
        )


async def call_state(account: Account, token: str) -> dict[str, Any]:
    response = await account.get(f"/api/calls/{token}")
    assert response.status_code == 200, response.text
    body = dict(response.json())
    cdrs = (await account.get("/api/cdr", params={"token": token})).json()["data"]
    audit = (await account.get("/api/webhook-audit", params={"session_token": token, "per_page": 200})).json()
    return {"call": body, "cdrs": cdrs, "audit": audit["data"]}


async def test_a_full_call_becomes_one_record(
    account: Account, cp_settings: ControlPlaneSettings, nc: NATS, db: AsyncEngine
) -> None:
    settings = own_stream(cp_settings)
    token = new_token()
    events = full_call(account.tenant_id, token)
    await publish(nc, settings, events)
    consumer = EventConsumer(settings)
    await consumer.start()
    try:
        await wait_for(lambda: drained(consumer))
    finally:
        await consumer.stop()
        await drop_stream(nc, settings)

    state = await call_state(account, token)
    call = state["call"]
    assert call["status"] == "completed"
    assert call["agent_id"] == 11
    assert call["group_id"] == 22
    assert call["rule_id"] == 33
    assert call["attempts"] == 1
    assert call["direction"] == "inbound"
    assert call["from_number"] == "+14155550100"
    assert call["to_number"] == "+15551234567"
    assert call["caller_name"] == "Alice"
    assert call["start_time"] == "2026-01-10T23:58:35.449000Z"
    assert call["answer_time"] == "2026-01-10T23:58:43.120000Z"
    assert call["end_time"] == "2026-01-11T00:00:11.301000Z"
    assert call["duration"] == 96
    assert call["billsec"] == 88
    assert call["disposition"] == "ANSWER"

    timeline = call["timeline"]
    assert len(timeline) == len(unique_ids(events)) == 11
    times = [t["occurred_at"] for t in timeline]
    assert times == sorted(times)
    assert {t["source"] for t in timeline} == {"engine-a"}
    assert [t["kind"] for t in timeline][:2] == ["session_update", "routed"]
    assert call["routing_attempts"] == [
        {
            "attempt": 1,
            "agent_id": 11,
            "group_id": 22,
            "rule_id": 33,
            "outcome": "routed",
            "dial_status": "completed",
            "at": timeline[1]["occurred_at"],
            "overflow_step": None,
        }
    ]

    assert len(state["cdrs"]) == 1
    cdr = state["cdrs"][0]
    assert cdr["disposition"] == "ANSWER"
    assert cdr["duration_seconds"] == 96
    assert cdr["billsec"] == 88
    assert cdr["call_id"] == f"call-{token[:8]}"
    assert cdr["session_token"] == token
    assert len(state["audit"]) == 11
    assert {a["event_type"] for a in state["audit"]} == {"routed", "session_update", "dial_status", "cdr"}
    assert await count(db, CallRecord, token) == 1
    assert consumer.persisted == 11
    assert consumer.poison == 0


async def test_redelivery_and_a_restart_change_nothing(
    account: Account, cp_settings: ControlPlaneSettings, nc: NATS, db: AsyncEngine
) -> None:
    settings = own_stream(cp_settings, events_batch=3, events_ack_wait_s=1.0)
    tokens = [new_token() for _ in range(3)]
    events = [e for t in tokens for e in full_call(account.tenant_id, t)]
    await publish(nc, settings, events)
    first = EventConsumer(settings)
    await first.start()
    try:
        await wait_for(lambda: _persisted_at_least(first, 4))
    finally:
        await first.stop()  # mid-stream: some batches written, the rest not yet fetched
    assert first.persisted < len(unique_ids(events))

    second = EventConsumer(settings)
    await second.start()
    try:
        await wait_for(lambda: drained(second))
        before = [await call_state(account, t) for t in tokens]
        # The same events again under new message ids: JetStream stores them, the writer drops them.
        await publish(nc, settings, events, msg_id_suffix=":again")
        await wait_for(lambda: drained(second))
        assert second.duplicates >= len(unique_ids(events))
    finally:
        await second.stop()
        await drop_stream(nc, settings)
    after = [await call_state(account, t) for t in tokens]
    assert after == before
    for t, state in zip(tokens, after, strict=True):
        assert state["call"]["status"] == "completed"
        assert len(state["call"]["timeline"]) == 11
        assert await count(db, CallRecord, t) == 1
        assert await count(db, Cdr, t) == 1
        assert await count(db, CallTimelineEntry, t) == 11
        assert await count(db, WebhookAudit, t) == 11


async def _persisted_at_least(consumer: EventConsumer, n: int) -> bool:
    return consumer.persisted >= n


async def test_writing_after_a_commit_whose_ack_was_lost_is_a_no_op(
    account: Account, cp_settings: ControlPlaneSettings, db: AsyncEngine
) -> None:
    """What a redelivery after a crash between commit and ack does: the same batch written again."""
    token = new_token()
    events = full_call(account.tenant_id, token)
    async with db.begin() as conn, AsyncSession(bind=conn) as session:
        first = await write_events(session, events)
        await session.flush()
    assert first.written == 11
    assert first.duplicates == 0
    before = await call_state(account, token)
    async with db.begin() as conn, AsyncSession(bind=conn) as session:
        again = await write_events(session, list(reversed(events)))
    assert again.written == 0
    assert again.duplicates == 11
    assert await call_state(account, token) == before


async def test_a_poison_message_does_not_stall_the_stream(
    account: Account, cp_settings: ControlPlaneSettings, nc: NATS
) -> None:
    settings = own_stream(cp_settings)
    token = new_token()
    js = nc.jetstream()
    await ensure_stream(js, settings.events_stream, f"{settings.events_subject_prefix}.>")
    subject = f"{settings.events_subject_prefix}.{account.tenant_id}.session_update"
    await js.publish(subject, b"\xc1 not msgpack", headers={"Nats-Msg-Id": "poison-1"})
    await js.publish(subject, EVENT_ENCODER.encode({"kind": "session_update"}), headers={"Nats-Msg-Id": "p2"})
    events = full_call(account.tenant_id, token)[:2]
    # Decodes, but no database can store a time in the year 3 billion.
    absurd = msgspec.structs.replace(events[1], event_id=f"{events[1].event_id}:absurd", occurred_at=1e17)
    await publish(nc, settings, [events[0], absurd, events[1]])
    consumer = EventConsumer(settings)
    await consumer.start()
    try:
        await wait_for(lambda: drained(consumer))
    finally:
        await consumer.stop()
        await drop_stream(nc, settings)
    assert consumer.poison == 3
    call = (await account.get(f"/api/calls/{token}")).json()
    assert call["status"] == "connecting"
    assert len(call["timeline"]) == 2


async def test_events_of_a_tenant_that_is_gone_are_dropped(
    account: Account, cp_settings: ControlPlaneSettings, db: AsyncEngine
) -> None:
    token = new_token()
    events = full_call(account.tenant_id, token)[:1] + full_call(987654321, token)[:1]
    async with db.begin() as conn, AsyncSession(bind=conn) as session:
        result = await write_events(session, events)
    assert result.orphans == 1
    assert result.written == 1


async def test_start_does_not_wait_for_nats(cp_settings: ControlPlaneSettings) -> None:
    settings = msgspec.structs.replace(own_stream(cp_settings), nats_url="nats://127.0.0.1:1")
    consumer = EventConsumer(settings, connect_timeout_s=0.5)
    started = time.perf_counter()
    await consumer.start()
    assert time.perf_counter() - started < 0.5
    await asyncio.sleep(0.3)
    assert consumer.running
    await consumer.stop()
    assert not consumer.running


async def test_the_app_consumer_persists_the_runs_stream(
    account: Account, cp_settings: ControlPlaneSettings, nc: NATS, cp_app: Litestar
) -> None:
    """The consumer the app starts in its lifespan reads the per-run stream."""
    token = new_token()
    await publish(nc, cp_settings, full_call(account.tenant_id, token))

    async def visible() -> bool:
        response = await account.get(f"/api/calls/{token}")
        return response.status_code == 200 and len(response.json()["timeline"]) == 11

    await wait_for(visible)
    # /metrics answers a client on the control plane's own host (or the ops token): shared/ops_access.py
    local = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cp_app, client=("127.0.0.1", 40000)), base_url="http://cp.test"
    )
    async with local:
        assert (await account.client.get("/metrics")).status_code == 401  # the test client is not local
        metrics = (await local.get("/metrics")).text
    assert "vlb_cp_events_consumer_lag " in metrics
    assert 'vlb_cp_events_persisted_total{kind="session_update"}' in metrics


async def test_a_database_outage_loses_nothing(
    account: Account, cp_settings: ControlPlaneSettings, nc: NATS
) -> None:
    """With PostgreSQL unreachable nothing is acknowledged or thrown away; once it answers (here: a
    consumer on the same durable with the right URL) every event is stored."""
    settings = own_stream(cp_settings, events_ack_wait_s=1.0)
    token = new_token()
    await publish(nc, settings, full_call(account.tenant_id, token))
    down = EventConsumer(
        msgspec.structs.replace(settings, database_url="postgresql+psycopg://postgres@127.0.0.1:1/x")
    )
    await down.start()
    try:
        await wait_for(lambda: _failed(down))
    finally:
        await down.stop()
    assert down.poison == 0
    assert down.persisted == 0

    up = EventConsumer(settings)
    await up.start()
    try:
        await wait_for(lambda: drained(up))
    finally:
        await up.stop()
        await drop_stream(nc, settings)
    call = (await account.get(f"/api/calls/{token}")).json()
    assert call["status"] == "completed"
    assert len(call["timeline"]) == 11


async def _failed(consumer: EventConsumer) -> bool:
    return consumer.failures > 0


async def test_a_call_split_over_batches_ends_as_written_at_once(
    account: Account, cp_settings: ControlPlaneSettings, db: AsyncEngine
) -> None:
    """The writer folds a call before its upsert only when the batch holds its routing decision; a
    call new to the database without one goes in as a placeholder, and a routing decision may come
    after its record exists. Every split ends as the whole call written in one batch does."""
    from control_plane.analytics.aggregates import drift

    reference = new_token()
    async with db.begin() as conn, AsyncSession(bind=conn) as session:
        await write_events(session, full_call(account.tenant_id, reference))
    expected = await call_state(account, reference)
    for split in (
        lambda es: ([e for e in es if e.kind is not K.ROUTED], [e for e in es if e.kind is K.ROUTED]),
        lambda es: (es[1:3], es[3:], es[:1]),
        lambda es: ([es[0]], es[1:]),
    ):
        token = new_token()
        for part in split(full_call(account.tenant_id, token)):
            async with db.begin() as conn, AsyncSession(bind=conn) as session:
                await write_events(session, part)
        state = await call_state(account, token)
        for name in ("status", "agent_id", "group_id", "direction", "from_number", "caller_name", "start_time",
                     "answer_time", "end_time", "duration", "billsec", "disposition", "attempts"):  # fmt: skip
            assert state["call"][name] == expected["call"][name], name
        assert len(state["call"]["timeline"]) == 11
        assert await count(db, CallRecord, token) == 1
    async with AsyncSession(db) as session, session.begin():
        assert await drift(session, account.tenant_id) == 0
