"""Outlier ejection (settings.outlier, SPEC §5) with TWO engine processes (granian, one worker each)
sharing the real Redis: failures noted by one engine eject the agent for the other, back-off grows on
repeats, the agent returns on probation, short answered calls count, the max-ejected-percent and
last-agent guards hold, and the ejection reaches the events stream (timeline, live feed) and metrics.
Requests alternate between the two engines throughout."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue
from redis.asyncio import Redis

from routing_engine.balancer import Balancer, Candidate, DecideRequest, OutlierNote
from routing_engine.rules import outlier_opts
from shared.events import decode_events
from shared.redis_keys import TenantKeys
from shared.snapshot import GroupSettings, GroupSnap, MemberSnap, OutlierSettings
from tests.conftest import REDIS_URL
from tests.routing_engine.harness import (
    PrivateServer,
    TenantConfig,
    asgi_client,
    demo_tenant,
    engine_settings,
    granian_engine,
    new_session,
    publish,
    put_snapshot,
    running_engine,
)

AGENT = re.compile(r"agent=(\d+)")
TO = "+12125550199"


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[str, str]]:
    with granian_engine(workers=1) as a, granian_engine(workers=1) as b:
        yield a, b


@pytest.fixture
async def clients(engines: tuple[str, str]) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=engines[0], timeout=5) as a,
        httpx.AsyncClient(base_url=engines[1], timeout=5) as b,
    ):
        yield [a, b]


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


class Calls:
    """Drives calls for one tenant, alternating between the two engines."""

    def __init__(self, clients: list[httpx.AsyncClient], config: TenantConfig) -> None:
        self.clients = clients
        self.config = config
        self._next = itertools.cycle(range(len(clients)))
        self.app = f"/api/voice/application/{config.domain}"

    def client(self) -> httpx.AsyncClient:
        return self.clients[next(self._next)]

    async def start(self, session: str | None = None) -> tuple[str, int | None]:
        session = session or new_session()
        r = await self.client().post(
            self.app,
            json={"Session": session, "From": "+14155550100", "To": TO, "Direction": "inbound"},
            headers=self.config.auth,
        )
        assert r.status_code == 200, r.text
        m = AGENT.search(r.text)
        return session, int(m.group(1)) if m else None

    async def dial_status(self, session: str, attempt: int, agent: int, status: str) -> int | None:
        r = await self.client().post(
            f"{self.app}/dial-status?attempt={attempt}&agent={agent}",
            json={
                "Session": session,
                "From": "+14155550100",
                "To": TO,
                "Direction": "inbound",
                "DialCallStatus": status,
            },
            headers=self.config.auth,
        )
        assert r.status_code == 200, r.text
        m = AGENT.search(r.text)
        return int(m.group(1)) if m else None

    async def cdr(self, session: str, billsec: int, disposition: str = "ANSWER") -> None:
        r = await self.client().post(
            f"/api/voice/session/cdr/{self.config.domain}",
            json={
                "timestamp": int(time.time()),
                "from": "+14155550100",
                "to": TO,
                "disposition": disposition,
                "duration": billsec + 2,
                "billsec": billsec,
                "call_id": f"{session}@carrier",
                "domain": self.config.domain,
                "session": {"token": session},
            },
            headers=self.config.auth,
        )
        assert r.status_code == 204, r.text

    async def session_update_answered(self, session: str, talk_ms: int) -> None:
        now = int(time.time() * 1000)
        r = await self.client().post(
            f"/api/voice/session/update/{self.config.domain}",
            json={
                "eventId": f"{session}-end",
                "token": session,
                "domain": self.config.domain,
                "status": "answer",
                "callStartTime": now - talk_ms - 3000,
                "callAnswerTime": now - talk_ms,
                "callEndTime": now,
            },
            headers=self.config.auth,
        )
        assert r.status_code == 204, r.text


def outlier_tenant(
    outlier: OutlierSettings, *, members: int = 3, max_attempts: int = 3, priority_pct: int | None = None
) -> TenantConfig:
    config = demo_tenant()
    tid = config.tenant_id
    group = config.snapshot.groups[0]
    group = GroupSnap(
        id=group.id,
        name=group.name,
        strategy=group.strategy,  # priority: calls go to the first free member
        settings=GroupSettings(max_attempts=max_attempts, outlier=outlier),
        members=[MemberSnap(agent_id=tid * 100 + i, priority=i) for i in range(1, members + 1)],
    )
    return config.bump(groups=[group])


async def publish_to_both(kv: KeyValue, calls: Calls) -> None:
    """Put the snapshot and wait until both engines route with it (a run of calls on each)."""
    await put_snapshot(kv, calls.config.snapshot)
    ok = 0
    for _ in range(200):
        session = new_session()
        r = await calls.client().post(
            calls.app,
            json={"Session": session, "From": "+14155550100", "To": TO, "Direction": "inbound"},
            headers=calls.config.auth,
        )
        routed = r.status_code == 200 and AGENT.search(r.text) is not None
        if routed:  # a routed call holds a slot; free it so the test starts from zero
            await calls.cdr(session, 0, disposition="CANCEL")
        ok = ok + 1 if routed else 0
        if ok >= 6:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the engines did not load the snapshot")


async def ejection(redis: Redis, config: TenantConfig, agent: int) -> tuple[int, int, str] | None:
    keys = TenantKeys(os.environ["VLB_REDIS_PREFIX"], config.tenant_id)
    raw = await redis.hget(f"{keys.base}olx:{config.snapshot.groups[0].id}", str(agent))
    if raw is None:
        return None
    until, k, reason, _at, _session = raw.decode().split("|", 4)
    return int(until), int(k), reason


@pytest.fixture
async def outlier_events(nats_client: NATS) -> AsyncIterator[list[dict[str, object]]]:
    got: list[dict[str, object]] = []

    async def on(msg: object) -> None:
        for event in decode_events(msg.data):  # type: ignore[attr-defined]
            got.append(msgspec.to_builtins(event))

    sub = await nats_client.subscribe(f"{os.environ['VLB_EVENTS_SUBJECT_PREFIX']}.*.outlier", cb=on)
    yield got
    await sub.unsubscribe()


async def ejected_soon(redis: Redis, config: TenantConfig, agent: int) -> tuple[int, int, str]:
    """The agent's ejection record once it appears (session updates and CDRs are applied after their
    204 answer)."""
    for _ in range(100):
        found = await ejection(redis, config, agent)
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"agent {agent} was not ejected")


async def settled() -> None:
    """Long enough for the session updates and CDRs just answered to be applied."""
    await asyncio.sleep(0.3)


async def wait_for(predicate: object, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_ejection_backoff_probation_and_return(
    clients: list[httpx.AsyncClient],
    kv: KeyValue,
    redis: Redis,
    outlier_events: list[dict[str, object]],
) -> None:
    config = outlier_tenant(
        OutlierSettings(consecutive_failures=2, base_ejection_s=1, max_ejection_s=4, max_ejected_percent=100)
    )
    calls = Calls(clients, config)
    await publish_to_both(kv, calls)
    tid = config.tenant_id
    a1, a2 = tid * 100 + 1, tid * 100 + 2

    # two busy dials in a row (each dial-status on the other engine) eject a1
    s1, agent = await calls.start()
    assert agent == a1
    assert await calls.dial_status(s1, 1, a1, "busy") == a2
    assert await ejection(redis, config, a1) is None  # one failure: still in
    s2, agent = await calls.start()
    assert agent == a1
    before = int(time.time() * 1000)
    assert await calls.dial_status(s2, 1, a1, "busy") == a2
    ejected = await ejection(redis, config, a1)
    assert ejected is not None
    until, k, reason = ejected
    assert k == 1
    assert reason == "consecutive:busy"
    assert 900 <= until - before <= 1600
    # out of selection on both engines
    for _ in range(4):
        _, agent = await calls.start()
        assert agent == a2

    # the event of the call whose failure ejected it
    await wait_for(lambda: any(e["outcome"] == "ejected" for e in outlier_events))
    event = next(e for e in outlier_events if e["outcome"] == "ejected")
    assert event["session_token"] == s2
    assert event["agent_id"] == a1
    assert event["tenant_id"] == tid
    assert event["status"] == "consecutive:busy"

    # back on probation after its back-off: one failure re-ejects with the next (doubled) back-off
    await asyncio.sleep(max(0, until / 1000 - time.time()) + 0.1)
    s3, agent = await calls.start()
    assert agent == a1
    before = int(time.time() * 1000)
    assert await calls.dial_status(s3, 1, a1, "no-answer") == a2
    ejected = await ejection(redis, config, a1)
    assert ejected is not None
    until, k, reason = ejected
    assert (k, reason) == (2, "probation:no_answer")
    assert 1900 <= until - before <= 2600

    # after it, a success on probation brings it back for good (the record goes, the streak resets)
    await asyncio.sleep(max(0, until / 1000 - time.time()) + 0.1)
    s4, agent = await calls.start()
    assert agent == a1
    assert await calls.dial_status(s4, 1, a1, "answered") is None
    await calls.cdr(s4, 60)
    await settled()
    assert await ejection(redis, config, a1) is None
    await wait_for(lambda: any(e["outcome"] == "returned" for e in outlier_events))
    # one new failure is not enough again (the streak restarted)
    s5, agent = await calls.start()
    assert agent == a1
    assert await calls.dial_status(s5, 1, a1, "failed") == a2
    assert await ejection(redis, config, a1) is None

    # a repeated dial-status counts once
    assert await calls.dial_status(s5, 1, a1, "failed") == a2
    assert await ejection(redis, config, a1) is None

    text = (await clients[0].get("/metrics")).text + (await clients[1].get("/metrics")).text
    assert 'vlb_engine_outlier_ejections_total{failure="busy",trigger="consecutive"}' in text
    assert "vlb_engine_outlier_returns_total" in text


async def test_short_calls_and_failed_last_attempts_count(
    clients: list[httpx.AsyncClient], kv: KeyValue, redis: Redis
) -> None:
    config = outlier_tenant(
        OutlierSettings(consecutive_failures=3, short_call_s=5, base_ejection_s=30, max_ejected_percent=100),
        max_attempts=1,
    )
    calls = Calls(clients, config)
    await publish_to_both(kv, calls)
    a1 = config.tenant_id * 100 + 1
    # a short answered call (CDR billsec 1 s), a short one by its session update, and a failed dial
    # that is not retried (max_attempts 1: the release path) make three failures in a row
    s1, agent = await calls.start()
    assert agent == a1
    await calls.cdr(s1, 1)
    await calls.cdr(s1, 1)  # a repeat is dropped
    await settled()
    s2, agent = await calls.start()
    assert agent == a1
    await calls.session_update_answered(s2, 800)
    await calls.cdr(s2, 1)  # the same call's CDR does not count it twice
    await settled()
    assert await ejection(redis, config, a1) is None
    s3, agent = await calls.start()
    assert agent == a1
    assert await calls.dial_status(s3, 1, a1, "busy") is None  # no retry: the no-agent answer
    ejected = await ejection(redis, config, a1)
    assert ejected is not None
    assert ejected[2] == "consecutive:busy"

    # a long answered call resets the streak of another agent
    a2 = config.tenant_id * 100 + 2
    s4, agent = await calls.start()
    assert agent == a2
    await calls.cdr(s4, 2)  # short
    await settled()
    s5, agent = await calls.start()
    assert agent == a2
    await calls.cdr(s5, 30)  # long: success
    await settled()
    s6, agent = await calls.start()
    await calls.cdr(s6, 1)
    await settled()
    s7, agent = await calls.start()
    await calls.cdr(s7, 1)
    await settled()
    assert await ejection(redis, config, a2) is None  # 2 in a row since the success


async def test_max_ejected_percent_and_last_agent_guards(
    clients: list[httpx.AsyncClient], kv: KeyValue, redis: Redis
) -> None:
    # 3 members, at most 50 %: one agent may be out, never two
    config = outlier_tenant(
        OutlierSettings(consecutive_failures=1, base_ejection_s=60, max_ejected_percent=50)
    )
    calls = Calls(clients, config)
    await publish_to_both(kv, calls)
    tid = config.tenant_id
    a1, a2, a3 = tid * 100 + 1, tid * 100 + 2, tid * 100 + 3
    s1, agent = await calls.start()
    assert agent == a1
    assert await calls.dial_status(s1, 1, a1, "busy") == a2
    assert await ejection(redis, config, a1) is not None
    assert await calls.dial_status(s1, 2, a2, "busy") == a3
    assert await ejection(redis, config, a2) is None  # 2 of 3 would be 67 %
    _, agent = await calls.start()
    assert agent == a2

    # 2 members, 100 % allowed, but never the last one unless allow_eject_all
    for allow in (False, True):
        config = outlier_tenant(
            OutlierSettings(
                consecutive_failures=1, base_ejection_s=60, max_ejected_percent=100, allow_eject_all=allow
            ),
            members=2,
        )
        calls = Calls(clients, config)
        await publish_to_both(kv, calls)
        b1, b2 = config.tenant_id * 100 + 1, config.tenant_id * 100 + 2
        s, agent = await calls.start()
        assert agent == b1
        assert await calls.dial_status(s, 1, b1, "busy") == b2
        assert await calls.dial_status(s, 2, b2, "busy") is None
        assert await ejection(redis, config, b1) is not None
        if allow:
            assert await ejection(redis, config, b2) is not None
            assert (await calls.start())[1] is None  # everyone is out: the no-agent answer
        else:
            assert await ejection(redis, config, b2) is None
            assert (await calls.start())[1] == b2


async def test_failure_rate_over_window(clients: list[httpx.AsyncClient], kv: KeyValue, redis: Redis) -> None:
    config = outlier_tenant(
        OutlierSettings(
            consecutive_failures=100,
            failure_rate=0.5,
            min_calls=4,
            window_s=60,
            short_call_s=5,
            max_ejected_percent=100,
        )
    )
    calls = Calls(clients, config)
    await publish_to_both(kv, calls)
    a1 = config.tenant_id * 100 + 1
    # fail, ok, fail: 2 of 3 (below min_calls); then fail: 3 of 4 > 50 % -> out
    for billsec in (1, 30, 1):
        session, agent = await calls.start()
        assert agent == a1
        await calls.cdr(session, billsec)
        await settled()
    assert await ejection(redis, config, a1) is None
    session, agent = await calls.start()
    await calls.cdr(session, 1)
    ejected = await ejected_soon(redis, config, a1)
    assert ejected[2] == "failure_rate:short_call"


async def test_degraded_mode_ignores_ejections(private_redis: PrivateServer, kv: KeyValue) -> None:
    """Redis down: a group with outlier settings is still routed (the local view ignores ejection),
    failed dials move on to the next agent, and nothing crashes; Redis back: ejection works again."""
    server = private_redis
    settings = engine_settings(redis_url=server.url)
    config = outlier_tenant(
        OutlierSettings(consecutive_failures=1, base_ejection_s=60, max_ejected_percent=100)
    )
    a1, a2 = config.tenant_id * 100 + 1, config.tenant_id * 100 + 2
    async with running_engine(settings) as app, asgi_client(app) as c:
        await publish(kv, app, config)
        calls = Calls([c], config)
        server.stop()
        for _ in range(3):
            session, agent = await calls.start()
            assert agent == a1  # every member is eligible: no ejection without Redis
            assert await calls.dial_status(session, 1, a1, "busy") == a2
        assert app.balancer.degraded_total >= 6
        server.start()
        await asyncio.sleep(1.1)  # the balancer retries Redis after its pause
        session, agent = await calls.start()
        assert agent == a1
        assert await calls.dial_status(session, 1, a1, "busy") == a2
        assert app.balancer.degraded_total < app.balancer.decisions_total
        _, agent = await calls.start()
        assert agent == a2  # ejected by the failure Redis saw


async def test_an_ejection_inside_a_coalesced_batch_holds_for_the_rest_of_it(redis: Redis) -> None:
    """Many calls decided in one script call: the failure that ejects an agent is seen by the
    decisions after it in the same batch (the per-script ejection cache), and a group without outlier
    settings sharing the agent still chooses it."""
    balancer = Balancer(redis, prefix=os.environ["VLB_REDIS_PREFIX"], in_flight=1)
    notes: list[OutlierNote] = []
    balancer.outlier_sink = lambda _t, _s, note: notes.append(note)
    tenant = 990_000 + int(time.time()) % 10_000
    cands = (Candidate(agent_id=1, priority=1, capacity=0), Candidate(agent_id=2, priority=2, capacity=0))
    opts = outlier_opts(
        OutlierSettings(consecutive_failures=1, base_ejection_s=60, max_ejected_percent=100), 2
    )

    def req(session: str, stage: str = "app", failed: int | None = None, group: int = 1) -> DecideRequest:
        return DecideRequest(
            tenant_id=tenant,
            session=session,
            stage=stage,
            strategy="priority",
            group_id=group,
            window_hours=24,
            max_attempts=3,
            fallback_enabled=True,
            candidates=cands,
            answers=(("<a1/>", ""), ("<a2/>", "")),
            no_agent="<none/>",
            failed_agent=failed,
            fail_status="busy" if failed else "",
            opts=opts if group == 1 else {},
        )

    first = await balancer.decide(req("s" * 32))
    assert first.agent_id == 1
    # one batch: the failed dial (ejects 1, moves on to 2), then new calls of group 1 and group 2
    batch = [req("s" * 32, "dial-1", 1)] + [req(f"n{i:031d}") for i in range(5)] + [req("g" * 32, group=2)]
    results = await balancer._decide_batch(tenant, batch)
    assert [r.agent_id for r in results] == [2, 2, 2, 2, 2, 2, 1]
    assert [(n.kind, n.agent_id, n.reason, n.ejections) for n in notes] == [
        ("ejected", 1, "consecutive:busy", 1)
    ]
    # a replay of the failed dial's stage answers the same and notes nothing again
    again = await balancer._decide_batch(tenant, [req("s" * 32, "dial-1", 1)])
    assert (again[0].agent_id, again[0].replay) == (2, True)
    assert len(notes) == 1
