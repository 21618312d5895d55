"""settings.overflow (issue 15, part 6): after a group's members are exhausted the engine goes on
with the chain (another group by its own strategy, a phone number, an announcement) inside the same
script call, keeping the call's tried-set, with max_attempts the budget of the whole chain; two engine
processes on real Redis never hand out one slot twice."""

from __future__ import annotations

import asyncio
import os
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from routing_engine.app import EngineApp
from routing_engine.balancer import DecideRequest, encode_batch
from shared.enums import EventKind, Strategy
from shared.events import decode_events
from shared.snapshot import (
    SNAPSHOT_DECODER,
    SNAPSHOT_ENCODER,
    GroupSettings,
    GroupSnap,
    MemberSnap,
    OverflowStep,
    TenantSnapshot,
)
from tests.routing_engine.harness import (
    TenantConfig,
    demo_tenant,
    granian_engine,
    load_fixture,
    new_session,
    publish,
    put_snapshot,
)

INBOUND = load_fixture("application-inbound.json")  # To +12125550199: the +1212555* rule -> group A


def overflow_tenant(
    steps: list[OverflowStep], *, max_attempts: int = 5, b_steps: list[OverflowStep] | None = None
) -> TenantConfig:
    """Group A = the vapi agent alone (capacity 1); group B = synthflow and the SIP agent (capacity 1
    each, load_balanced); A's overflow is ``steps`` (group steps name B by ``group_id=-2``)."""
    config = demo_tenant()
    tid = config.tenant_id
    a, b = tid * 10 + 1, tid * 10 + 2
    vapi, synth, sip = tid * 100 + 1, tid * 100 + 2, tid * 100 + 3

    def fix(s: OverflowStep) -> OverflowStep:
        return OverflowStep(type="group", group_id=b) if s.type == "group" and s.group_id == -2 else s

    groups = [
        GroupSnap(
            id=a,
            name="A",
            strategy=Strategy.PRIORITY,
            settings=GroupSettings(
                max_attempts=max_attempts, no_agent_message="All busy.", overflow=[fix(s) for s in steps]
            ),
            members=[MemberSnap(agent_id=vapi, priority=1, capacity=1)],
        ),
        GroupSnap(
            id=b,
            name="B",
            strategy=Strategy.LOAD_BALANCED,
            settings=GroupSettings(overflow=b_steps or []),
            members=[MemberSnap(agent_id=synth, capacity=1), MemberSnap(agent_id=sip, capacity=1)],
        ),
    ]
    return config.bump(groups=groups)


def dialled(text: str) -> str:
    """What an answer dials: the agent's provider / "sip" / the number, or "say" / "hangup"."""
    root = ET.fromstring(text)
    dial = root.find("Dial")
    if dial is None:
        if root.find("Say") is not None or root.find("Play") is not None:
            return "say"
        return "hangup"
    number = dial.find("Number")
    if number is not None:
        return "number:" + (number.text or "")
    service = dial.find("Service")
    if service is not None:
        return service.attrib["provider"]
    return "sip"


def action_path(text: str) -> str:
    action = ET.fromstring(text).find("Dial").attrib["action"]  # type: ignore[union-attr]
    return "/" + action.split("://", 1)[1].split("/", 1)[1]


async def first(client: httpx.AsyncClient, config: TenantConfig, session: str) -> httpx.Response:
    url = f"/api/voice/application/{config.domain}"
    return await client.post(
        url, json=dict(INBOUND, Session=session, Domain=config.domain), headers=config.auth
    )


async def failed(
    client: httpx.AsyncClient, config: TenantConfig, session: str, previous: str, status: str = "no-answer"
) -> httpx.Response:
    body = dict(INBOUND, Session=session, Domain=config.domain, DialCallStatus=status)
    return await client.post(action_path(previous), json=body, headers=config.auth)


async def test_the_chain_walks_group_number_announcement_with_one_tried_set(
    client: httpx.AsyncClient, engine: EngineApp, kv: KeyValue
) -> None:
    steps = [
        OverflowStep(type="group", group_id=-2),
        OverflowStep(type="number", number="+15550001111"),
        OverflowStep(type="announcement", message="Nobody is free.", play_url="https://x.example/a.mp3"),
    ]
    config = overflow_tenant(steps, max_attempts=6)
    await publish(kv, engine, config)
    s = new_session()
    r1 = await first(client, config, s)
    assert dialled(r1.text) == "vapi"
    r2 = await failed(client, config, s, r1.text)  # A exhausted -> B (its own strategy)
    assert dialled(r2.text) in ("synthflow", "sip")
    r3 = await failed(client, config, s, r2.text)
    assert {dialled(r2.text), dialled(r3.text)} == {"synthflow", "sip"}  # B's other member, never vapi again
    r4 = await failed(client, config, s, r3.text)
    assert dialled(r4.text) == "number:+15550001111"
    r5 = await failed(client, config, s, r4.text)  # the number is dialled once per call
    assert dialled(r5.text) == "say"
    assert "<Play>https://x.example/a.mp3</Play><Say>Nobody is free.</Say><Hangup/>" in r5.text
    # a repeat of a dial-status answers the same (idempotent, from the call's hash)
    again = await failed(client, config, s, r3.text)
    assert again.text == r4.text


async def test_overflow_on_the_first_request_when_the_group_is_full(
    client: httpx.AsyncClient, engine: EngineApp, kv: KeyValue
) -> None:
    config = overflow_tenant(
        [OverflowStep(type="group", group_id=-2), OverflowStep(type="announcement", message="Later, please.")]
    )
    await publish(kv, engine, config)
    answers = [dialled((await first(client, config, new_session())).text) for _ in range(5)]
    # A holds one call, B two, then the announcement
    assert answers[0] == "vapi"
    assert sorted(answers[1:3]) == ["sip", "synthflow"]
    assert answers[3:] == ["say", "say"]


async def test_the_budget_covers_the_whole_chain(
    client: httpx.AsyncClient, engine: EngineApp, kv: KeyValue
) -> None:
    config = overflow_tenant(
        [OverflowStep(type="group", group_id=-2), OverflowStep(type="number", number="+15550002222")],
        max_attempts=2,
    )
    await publish(kv, engine, config)
    s = new_session()
    r1 = await first(client, config, s)
    r2 = await failed(client, config, s, r1.text)
    assert dialled(r2.text) in ("synthflow", "sip")
    r3 = await failed(client, config, s, r2.text)  # attempt 3 > max_attempts 2: the no-agent answer
    assert "All busy." in r3.text


async def test_a_chain_continues_through_the_next_groups_own_overflow(
    client: httpx.AsyncClient, engine: EngineApp, kv: KeyValue
) -> None:
    config = overflow_tenant(
        [OverflowStep(type="group", group_id=-2)],
        b_steps=[OverflowStep(type="number", number="+15550003333")],
    )
    await publish(kv, engine, config)
    s = new_session()
    answers = [dialled((await first(client, config, new_session())).text) for _ in range(3)]
    assert answers[0] == "vapi"
    r = await first(client, config, s)
    assert dialled(r.text) == "number:+15550003333"


async def test_the_overflow_step_is_in_the_routed_event(
    client: httpx.AsyncClient, engine: EngineApp, kv: KeyValue, nats_client: NATS
) -> None:
    config = overflow_tenant([OverflowStep(type="group", group_id=-2)])
    await publish(kv, engine, config)
    tid = config.tenant_id
    s = new_session()
    r1 = await first(client, config, s)
    r2 = await failed(client, config, s, r1.text)
    assert dialled(r2.text) in ("synthflow", "sip")
    prefix = os.environ["VLB_EVENTS_SUBJECT_PREFIX"]
    for _ in range(100):
        if engine.events.pending == 0:
            break
        await asyncio.sleep(0.02)
    sub = await nats_client.jetstream().subscribe(f"{prefix}.{tid}.>", ordered_consumer=True)
    events = []
    try:
        while True:
            msg = await sub.next_msg(timeout=0.5)
            events += [e for e in decode_events(msg.data) if e.session_token == s]
    except nats.errors.TimeoutError:
        pass
    finally:
        await sub.unsubscribe()
    routed = [e for e in events if e.kind is EventKind.ROUTED]
    dials = [e for e in events if e.kind is EventKind.DIAL_STATUS]
    assert routed
    assert routed[0].overflow_step is None
    assert routed[0].group_id == tid * 10 + 1
    assert dials
    assert dials[0].overflow_step == "1:group"
    assert dials[0].group_id == tid * 10 + 2  # the group whose agent took the call
    assert dials[0].outcome == "routed"


def test_a_snapshot_without_overflow_still_loads() -> None:
    config = demo_tenant()
    raw = msgspec_without_overflow(config.snapshot)
    snap = SNAPSHOT_DECODER.decode(raw)
    assert snap.groups[0].settings.overflow == []


def msgspec_without_overflow(snap: TenantSnapshot) -> bytes:
    import msgspec

    data: dict[str, Any] = msgspec.to_builtins(snap)
    for g in data["groups"]:
        g["settings"].pop("overflow", None)
    return SNAPSHOT_ENCODER.encode(data)


def test_overflow_groups_are_packed_inline_once_per_batch() -> None:
    import msgspec

    from routing_engine.balancer import Candidate

    cands = (Candidate(agent_id=1, priority=1, capacity=0),)
    answers = (("<a>", ""),)
    b = DecideRequest(
        tenant_id=1,
        session="",
        stage="app",
        strategy="priority",
        group_id=2,
        window_hours=24,
        max_attempts=3,
        fallback_enabled=True,
        candidates=cands,
        answers=answers,
        no_agent="x",
    )
    steps = (b, "A<r/>")
    reqs = [
        DecideRequest(
            tenant_id=1,
            session=f"s{i}",
            stage="app",
            strategy="priority",
            group_id=1,
            window_hours=24,
            max_attempts=3,
            fallback_enabled=True,
            candidates=cands,
            answers=answers,
            no_agent="y",
            overflow=steps,
        )
        for i in range(3)
    ]
    out = msgspec.msgpack.decode(encode_batch(reqs))
    assert out[0] == 1  # one target for the three requests, its overflow group inline
    assert out[1] == 0  # no seed: nothing random
    assert out[2][1] == 1
    ovf = out[2][-1]["ovf"]
    assert ovf[0][1] == 2  # group B's own target: its group id
    assert ovf[0][6] == "1"  # and its agent
    assert ovf[1] == "A<r/>"
    assert [out[3 + 7 * i + 2] for i in range(3)] == [1, 1, 1]


async def test_two_engine_processes_share_the_chain_atomically(kv: KeyValue) -> None:
    config = overflow_tenant(
        [OverflowStep(type="group", group_id=-2), OverflowStep(type="announcement", message="Full.")]
    )
    await put_snapshot(kv, config.snapshot)
    url = f"/api/voice/application/{config.domain}"
    with granian_engine(workers=2) as engine_url:
        async with httpx.AsyncClient(
            base_url=engine_url, limits=httpx.Limits(max_connections=16), timeout=10
        ) as http:
            probe = demo_tenant()
            await put_snapshot(kv, probe.snapshot)
            ok = 0
            for _ in range(200):  # both workers have the snapshots
                r = await http.post(
                    f"/api/voice/application/{probe.domain}",
                    json=dict(INBOUND, Session=new_session()),
                    headers=probe.auth,
                )
                ok = ok + 1 if r.status_code == 200 and "<Dial" in r.text else 0
                if ok >= 10:
                    break
                await asyncio.sleep(0.05)
            assert ok >= 10

            async def call() -> str:
                r = await http.post(url, json=dict(INBOUND, Session=new_session()), headers=config.auth)
                assert r.status_code == 200, r.text
                return dialled(r.text)

            answers = await asyncio.gather(*(call() for _ in range(24)))
    # three slots in all (A: 1, B: 2): exactly three calls got an agent, the rest the announcement
    assert sorted(a for a in answers if a != "say") == ["sip", "synthflow", "vapi"], answers
    assert answers.count("say") == 21
