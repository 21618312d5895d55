"""Call-lifecycle fault tests with real processes (issue 5): the control plane killed with SIGKILL while
it consumes call events, and NATS stopped for ten seconds under a steady call load. In both, every call
must end up with exactly one record (terminal, with its agent) and one CDR, and the engine must drop
no event. A private nats-server (with JetStream on its own data dir) carries config and events; the
control plane runs as a granian process on the per-run database; the engine runs in-process on the
shared Redis (per-run prefix). Figures are printed (``pytest -s``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerInfo
from nats.js.errors import NotFoundError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from control_plane.settings import ControlPlaneSettings
from launcher.planes import granian_argv
from launcher.process import ChildProcess, log_tail, spawn
from routing_engine.app import EngineApp
from shared.enums import TERMINAL_STATUSES
from shared.settings import load_settings
from tests.routing_engine.harness import (
    PrivateServer,
    TenantConfig,
    asgi_client,
    demo_tenant,
    engine_settings,
    free_port,
    load_fixture,
    new_session,
    open_bucket,
    put_snapshot,
    running_engine,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONTROL_PLANE_TARGET = "control_plane.app:create_app"
INBOUND = load_fixture("application-inbound.json")
# The fixture is a list (load_fixture is typed for objects); its last update, "answer", is terminal.
ANSWERED = cast(list[dict[str, Any]], load_fixture("session-updates-answered.json"))[-1]
CDR = load_fixture("cdr-answered.json")
TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)
# A fetched batch the killed control plane never acknowledged comes back after this (default 30 s).
ACK_WAIT_S = "2"
CATCH_UP_S = 45.0


# --- the rig: private NATS, in-process engine, tenant, database ----------------------------------


@dataclass
class Rig:
    nats: PrivateServer
    nc: NATS  # the test's own connection to the private server (consumer info)
    engine: EngineApp
    tenant: TenantConfig
    db: AsyncEngine
    cp_env: dict[str, str]
    logs: Path

    @property
    def stream(self) -> str:
        return self.cp_env["VLB_EVENTS_STREAM"]

    @property
    def durable(self) -> str:
        return load_settings(ControlPlaneSettings, env=self.cp_env).events_durable


@contextlib.asynccontextmanager
async def rig(database_url: str, logs: Path) -> AsyncIterator[Rig]:
    server = PrivateServer("nats")
    server.start()
    db = create_async_engine(database_url, pool_size=2)
    nc: NATS | None = None
    config = demo_tenant(tenant_id=900_000 + secrets.randbelow(90_000))
    try:
        # The control plane stores events only for tenants it knows; config_version 0 means its
        # snapshot publisher leaves our (version 1) snapshot in the bucket alone.
        async with db.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO tenants (id, name, settings, config_version, created_at, updated_at) "
                    "VALUES (:id, :name, '{}'::jsonb, 0, now(), now())"
                ),
                {"id": config.tenant_id, "name": f"e2e faults {config.tenant_id}"},
            )
        nc = await nats.connect(
            server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=_quiet
        )
        kv = await open_bucket(nc, os.environ["VLB_CONFIG_BUCKET"])
        await put_snapshot(kv, config.snapshot)
        async with running_engine(engine_settings(nats_url=server.url)) as engine:
            assert await engine.store.wait_for(config.tenant_id, config.snapshot.version, within_s=5.0)
            cp_env = {
                **os.environ,
                "VLB_NATS_URL": server.url,
                "VLB_EVENTS_ACK_WAIT_S": ACK_WAIT_S,
                "VLB_LOG_LEVEL": "warning",
            }
            yield Rig(nats=server, nc=nc, engine=engine, tenant=config, db=db, cp_env=cp_env, logs=logs)
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        with contextlib.suppress(Exception):
            async with db.begin() as conn:  # cascades to the tenant's records, events and CDRs
                await conn.execute(text("DELETE FROM tenants WHERE id = :id"), {"id": config.tenant_id})
        await db.dispose()
        server.cleanup()


async def start_control_plane(r: Rig, name: str) -> ChildProcess:
    """The control plane as a granian process (its lifespan runs the event consumer); ready once
    /health answers."""
    port = free_port()
    child = spawn(
        name,
        granian_argv(CONTROL_PLANE_TARGET, "127.0.0.1", port, workers=1),
        r.logs / f"{name}.log",
        env=r.cp_env,
        cwd=REPO,
    )
    deadline = time.monotonic() + 30.0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1.0) as client:
        while time.monotonic() < deadline:
            if not child.running():
                raise AssertionError(f"{name} exited: {log_tail(child.log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/health")).status_code == 200:
                    return child
            await asyncio.sleep(0.1)
    child.stop()
    raise AssertionError(f"{name} not ready in 30 s: {log_tail(child.log_path)}")


def kill_9(child: ChildProcess) -> None:
    """SIGKILL to the whole granian process group (spawn starts it in its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.process.wait(10)


# --- one call: application request, terminal session update, CDR ---------------------------------


async def one_call(client: httpx.AsyncClient, config: TenantConfig, session: str) -> float:
    """Returns the application request's latency in seconds."""
    domain = config.domain
    call_id = f"{session}@carrier.example"
    inbound = dict(INBOUND, Session=session, CallSid=session, Domain=domain, AccountSid=domain)
    started = time.perf_counter()
    answer = await client.post(f"/api/voice/application/{domain}", json=inbound, headers=config.auth)
    latency = time.perf_counter() - started
    assert answer.status_code == 200, answer.text
    assert b"<Dial" in answer.content, answer.text
    update = dict(ANSWERED, token=session, domain=domain, eventId=f"{session}-answer", callIds=[call_id])
    response = await client.post(f"/api/voice/session/update/{domain}", json=update, headers=config.auth)
    assert response.status_code == 204, response.text
    cdr = dict(
        CDR, domain=domain, call_id=call_id, session=dict(CDR["session"], token=session, domain=domain)
    )
    response = await client.post(f"/api/voice/session/cdr/{domain}", json=cdr, headers=config.auth)
    assert response.status_code == 204, response.text
    return latency


# --- what the database and the stream hold ---------------------------------------------------------


@dataclass
class Counts:
    records: int
    cdrs: int
    events: int
    distinct_events: int
    audit: int
    complete: int  # records in a terminal state with an agent


async def counts(db: AsyncEngine, tenant_id: int) -> Counts:
    async with db.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM call_records WHERE tenant_id = :t),"
                    " (SELECT count(*) FROM cdrs WHERE tenant_id = :t),"
                    " (SELECT count(*) FROM call_events WHERE tenant_id = :t),"
                    " (SELECT count(DISTINCT event_id) FROM call_events WHERE tenant_id = :t),"
                    " (SELECT count(*) FROM webhook_audit WHERE tenant_id = :t),"
                    " (SELECT count(*) FROM call_records WHERE tenant_id = :t"
                    "   AND status = ANY(:terminal) AND agent_id IS NOT NULL)"
                ),
                {"t": tenant_id, "terminal": TERMINAL},
            )
        ).one()
    return Counts(*(int(v) for v in row))


async def tokens(db: AsyncEngine, table: str, tenant_id: int) -> list[str]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(f"SELECT session_token FROM {table} WHERE tenant_id = :t"),
            {"t": tenant_id},
        )
        return [str(t) for (t,) in rows]


async def consumer_info(r: Rig) -> ConsumerInfo | None:
    try:
        info: ConsumerInfo = await r.nc.jetstream(timeout=2.0).consumer_info(r.stream, r.durable)
    except (NotFoundError, TimeoutError, nats.errors.Error):
        return None
    return info


async def wait_until(check: Callable[[], Awaitable[bool]], within_s: float, what: str) -> float:
    """Seconds until ``check`` passes; fails after ``within_s``."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within_s:
            raise AssertionError(f"{what}: not within {within_s:.0f} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def caught_up(r: Rig, expected: int) -> bool:
    """Every call stored and the durable consumer has nothing pending or unacknowledged."""
    c = await counts(r.db, r.tenant.tenant_id)
    if c.records < expected or c.cdrs < expected or c.complete < expected:
        return False
    info = await consumer_info(r)
    return info is not None and info.num_pending == 0 and info.num_ack_pending == 0


async def assert_every_call_once(r: Rig, sessions: list[str]) -> Counts:
    c = await counts(r.db, r.tenant.tenant_id)
    n = len(sessions)
    records = await tokens(r.db, "call_records", r.tenant.tenant_id)
    cdrs = await tokens(r.db, "cdrs", r.tenant.tenant_id)
    assert sorted(records) == sorted(sessions), "a call without its record, or one recorded twice"
    assert sorted(cdrs) == sorted(sessions), "a call without its CDR, or one stored twice"
    assert c.records == n
    assert c.cdrs == n
    assert c.complete == n, f"{n - c.complete} records not terminal or without an agent"
    assert c.events == c.distinct_events, "duplicate call events"
    # routed + session update + CDR per call, each on the timeline and in the audit once.
    assert c.events == 3 * n
    assert c.audit == 3 * n
    agents = {a.id for a in r.tenant.snapshot.agents}
    async with r.db.connect() as conn:
        stored = {
            int(a)
            for (a,) in await conn.execute(
                text("SELECT DISTINCT agent_id FROM call_records WHERE tenant_id = :t"),
                {"t": r.tenant.tenant_id},
            )
        }
    assert stored <= agents, stored
    assert r.engine.events.dropped == 0
    return c


# --- the tests -------------------------------------------------------------------------------------


async def test_control_plane_killed_mid_consumption(schema: str, tmp_path: Path) -> None:
    calls = 1000
    kill_at_records = 250
    async with rig(schema, tmp_path) as r:
        children: list[ChildProcess] = []
        try:
            children.append(await start_control_plane(r, "cp-first"))
            sessions = [new_session() for _ in range(calls)]
            killed: dict[str, Any] = {}

            async def killer() -> None:
                while True:
                    c = await counts(r.db, r.tenant.tenant_id)
                    if c.records >= kill_at_records:
                        kill_9(children[0])
                        killed.update(records=c.records, at=time.monotonic())
                        return
                    await asyncio.sleep(0.05)

            killing = asyncio.create_task(killer())
            gate = asyncio.Semaphore(16)

            async def bounded(session: str) -> float:
                async with gate:
                    return await one_call(client, r.tenant, session)

            started = time.monotonic()
            async with asgi_client(r.engine) as client:
                await asyncio.gather(*(bounded(s) for s in sessions))
            sent_s = time.monotonic() - started
            await asyncio.wait_for(killing, 30.0)
            assert not children[0].running()
            at_kill = await consumer_info(r)
            stored_at_kill = await counts(r.db, r.tenant.tenant_id)
            assert stored_at_kill.records < calls, "the control plane finished before it was killed"
            await wait_until(lambda: _true(r.engine.events.pending == 0), 20.0, "engine buffer drained")

            restarted = time.monotonic()
            children.append(await start_control_plane(r, "cp-second"))
            caught = await wait_until(lambda: caught_up(r, calls), CATCH_UP_S, "consumer caught up")
            c = await assert_every_call_once(r, sessions)
            print(
                f"\nkill -9 control plane: {calls} calls sent in {sent_s:.1f} s "
                f"({calls / sent_s:.0f} calls/s, {3 * calls} events); killed at {killed['records']} "
                f"records; then unacked in flight {at_kill.num_ack_pending if at_kill else '?'}, "
                f"pending {at_kill.num_pending if at_kill else '?'}; stored right after the kill: "
                f"{stored_at_kill.records} records / {stored_at_kill.events} events; second control "
                f"plane caught up {caught:.1f} s after it was ready "
                f"({time.monotonic() - restarted:.1f} s from its start); final: {c.records} records, "
                f"{c.cdrs} CDRs, {c.events} events ({c.distinct_events} distinct), {c.audit} audit rows; "
                f"engine published {r.engine.events.published}, dropped {r.engine.events.dropped}"
            )
        finally:
            for child in reversed(children):
                child.stop(grace_s=5.0)


async def test_nats_stopped_for_ten_seconds_under_load(schema: str, tmp_path: Path) -> None:
    rate = 40  # calls per second
    duration_s = 14.0
    stop_at_s, start_at_s = 2.0, 12.0
    calls = int(rate * duration_s)
    async with rig(schema, tmp_path) as r:
        cp: ChildProcess | None = None
        try:
            cp = await start_control_plane(r, "cp")
            sessions = [new_session() for _ in range(calls)]
            peak = 0
            sampling = True

            async def sample() -> None:
                nonlocal peak
                while sampling:
                    peak = max(peak, r.engine.events.pending)
                    await asyncio.sleep(0.02)

            marks: dict[str, float] = {}

            async def outage(t0: float) -> None:
                await asyncio.sleep(max(0.0, t0 + stop_at_s - time.monotonic()))
                await asyncio.to_thread(r.nats.stop)
                marks["stopped"] = time.monotonic()
                await asyncio.sleep(max(0.0, t0 + start_at_s - time.monotonic()))
                await asyncio.to_thread(r.nats.start)  # same port, same data dir: the stream survives
                marks["started"] = time.monotonic()

            sampler = asyncio.create_task(sample())
            async with asgi_client(r.engine) as client:
                t0 = time.monotonic()
                chaos = asyncio.create_task(outage(t0))
                tasks: list[asyncio.Task[float]] = []
                for i, session in enumerate(sessions):
                    await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                    tasks.append(asyncio.create_task(one_call(client, r.tenant, session)))
                latencies = await asyncio.gather(*tasks)
                sent_s = time.monotonic() - t0
                await chaos
            restarted = marks["started"]
            await wait_until(lambda: _true(r.engine.events.pending == 0), 30.0, "engine buffer drained")
            engine_drained = time.monotonic() - restarted
            sampling = False
            await sampler
            await wait_until(lambda: caught_up(r, calls), CATCH_UP_S, "consumer caught up")
            caught = time.monotonic() - restarted
            c = await assert_every_call_once(r, sessions)
            assert peak > 0, "nothing was buffered while NATS was down"
            ordered = sorted(latencies)
            print(
                f"\nNATS stopped {marks['started'] - marks['stopped']:.1f} s under load: {calls} calls "
                f"in {sent_s:.1f} s ({calls / sent_s:.0f} calls/s, {3 * calls} events); events buffered "
                f"at peak {peak}; after NATS was back: engine buffer drained in {engine_drained:.1f} s, "
                f"consumer caught up in {caught:.1f} s; application "
                f"request p50 {ordered[len(ordered) // 2] * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms; "
                f"final: {c.records} records, {c.cdrs} CDRs, {c.events} events, "
                f"dropped {r.engine.events.dropped}"
            )
        finally:
            if cp is not None:
                cp.stop(grace_s=5.0)


async def _true(value: bool) -> bool:
    return value


async def _quiet(exc: Exception) -> None:
    """The test's own NATS client: connection errors during the outage are expected, not logged."""
