"""Inbound-rule schedules and traffic splits in the engine (issue 15, parts 4 and 5): a closed rule
gives way to a later one, a split holds its percents within 1 % over 10,000 calls across two engine
processes sharing real Redis, a call's retries stay on its branch, and the routed event carries it."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter

import httpx
import msgspec
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from routing_engine.app import EngineApp
from routing_engine.rules import Split
from shared.enums import EventKind, Strategy, TargetType
from shared.events import decode_events
from shared.snapshot import (
    SNAPSHOT_DECODER,
    SNAPSHOT_ENCODER,
    GroupSnap,
    InboundRuleSnap,
    MemberSnap,
    RuleSchedule,
    SplitTarget,
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

INBOUND = load_fixture("application-inbound.json")  # To +12125550199: the +1212555* rule
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def split_tenant(percents: tuple[int, int, int] = (50, 30, 20)) -> TenantConfig:
    """The demo tenant whose +1212555* rule splits: group A (vapi, then synthflow: a retry stays in A),
    group B (synthflow alone) and the SIP agent as an agent target."""
    config = demo_tenant()
    tid = config.tenant_id
    a, b, sip = tid * 10 + 1, tid * 10 + 2, tid * 100 + 3
    groups = [
        GroupSnap(
            id=a,
            name="A",
            strategy=Strategy.PRIORITY,
            members=[
                MemberSnap(agent_id=tid * 100 + 1, priority=1),
                MemberSnap(agent_id=tid * 100 + 2, priority=2),
            ],
        ),
        GroupSnap(id=b, name="B", strategy=Strategy.PRIORITY, members=[MemberSnap(agent_id=tid * 100 + 2)]),
    ]
    rule = msgspec.structs.replace(
        config.snapshot.inbound_rules[0],
        targets=[
            SplitTarget(target_type=TargetType.GROUP, target_id=a, percent=percents[0]),
            SplitTarget(target_type=TargetType.GROUP, target_id=b, percent=percents[1]),
            SplitTarget(target_type=TargetType.AGENT, target_id=sip, percent=percents[2]),
        ],
    )
    return config.bump(groups=groups, inbound_rules=[rule, *config.snapshot.inbound_rules[1:]])


def branch_of(cxml: str) -> str:
    """Which branch an answer dials: A's first agent (vapi), B's (synthflow) or the SIP agent."""
    root = ET.fromstring(cxml)
    if root.find("Dial/Sip") is not None:
        return "sip"
    service = root.find("Dial/Service")
    assert service is not None, cxml
    return {"vapi": "A", "synthflow": "B"}[service.attrib["provider"]]


def test_split_rounds_within_one_call_per_process() -> None:
    split = Split(
        targets=(None, None, None), labels=("a", "b", "c"), weights=(50, 30, 20), total=100, current=[0, 0, 0]
    )
    picks = Counter(split.pick(f"s{i}") for i in range(10_000))
    assert picks == {0: 5000, 1: 3000, 2: 2000}
    # Any prefix of the sequence stays within one call of the percents.
    odd = Split(targets=(None, None), labels=("a", "b"), weights=(33, 67), total=100, current=[0, 0])
    seen = Counter[int]()
    for i in range(1, 1001):
        seen[odd.pick(f"t{i}")] += 1
        assert abs(seen[0] - i * 0.33) <= 1
    # A repeated request of one call takes its branch again and moves nothing.
    before = list(odd.current)
    assert odd.pick("t7") == odd.recent["t7"]
    assert odd.current == before


@pytest.mark.timeout(900)  # 10,000 HTTP calls from one Python client: minutes on a loaded 2-core box
async def test_split_holds_within_one_percent_over_10000_calls_on_two_engine_processes(kv: KeyValue) -> None:
    config = split_tenant((50, 30, 20))
    await put_snapshot(kv, config.snapshot)
    url = f"/api/voice/application/{config.domain}"
    with granian_engine(workers=1) as first, granian_engine(workers=1) as second:
        limits = httpx.Limits(max_connections=16)
        async with (
            httpx.AsyncClient(base_url=first, limits=limits, timeout=10) as one,
            httpx.AsyncClient(base_url=second, limits=limits, timeout=10) as two,
        ):
            for engine_client in (one, two):  # both have the snapshot
                for _ in range(200):
                    r = await engine_client.post(
                        url, json=dict(INBOUND, Session=new_session()), headers=config.auth
                    )
                    if r.status_code == 200 and "<Dial" in r.text:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("engine never routed")
            # The warm-up calls moved each process's rotation: count from a fresh snapshot version.
            config = config.bump()
            await put_snapshot(kv, config.snapshot)
            await asyncio.sleep(1.0)

            counts: Counter[str] = Counter()
            per_engine: dict[str, Counter[str]] = {first: Counter(), second: Counter()}
            clients = itertools.cycle([(first, one), (second, two)])
            queue: asyncio.Queue[tuple[str, httpx.AsyncClient, str]] = asyncio.Queue()
            for _ in range(10_000):
                name, engine_client = next(clients)
                queue.put_nowait((name, engine_client, new_session()))

            async def worker() -> None:
                while not queue.empty():
                    name, engine_client, session = queue.get_nowait()
                    r = await engine_client.post(
                        url, json=dict(INBOUND, Session=session), headers=config.auth
                    )
                    assert r.status_code == 200
                    branch = branch_of(r.text)
                    counts[branch] += 1
                    per_engine[name][branch] += 1

            await asyncio.gather(*(worker() for _ in range(24)))
    print(
        f"\nsplit 50/30/20 over 10,000 calls: {dict(counts)}; per process: {[dict(c) for c in per_engine.values()]}"
    )
    assert sum(counts.values()) == 10_000
    for branch, percent in (("A", 50), ("B", 30), ("sip", 20)):
        assert abs(counts[branch] / 10_000 - percent / 100) <= 0.01, counts
        # Smooth weighted round-robin: each process is within a call or two of its share.
        for seen in per_engine.values():
            assert abs(seen[branch] - sum(seen.values()) * percent / 100) <= 2, per_engine


async def test_retries_stay_on_the_branch_and_the_event_carries_it(
    client: httpx.AsyncClient, engine: EngineApp, kv: KeyValue, nats_client: NATS
) -> None:
    config = split_tenant((50, 49, 1))
    await publish(kv, engine, config)
    tid = config.tenant_id
    url = f"/api/voice/application/{config.domain}"
    split = engine.store.state.tenants[tid].inbound_splits[tid * 10 + 1]
    assert split.labels == (f"group:{tid * 10 + 1}", f"group:{tid * 10 + 2}", f"agent:{tid * 100 + 3}")
    # Find a call that takes branch A (vapi first).
    for _ in range(10):
        session = new_session()
        body = dict(INBOUND, Session=session, Domain=config.domain)
        r = await client.post(url, json=body, headers=config.auth)
        if branch_of(r.text) == "A":
            break
    else:
        raise AssertionError("no call took branch A")
    action = ET.fromstring(r.text).find("Dial").attrib["action"]  # type: ignore[union-attr]
    assert f"rule={tid * 10 + 1}&branch=0&agent={tid * 100 + 1}" in action
    # A repeat of the first request answers the same, on the same branch.
    again = await client.post(url, json=body, headers=config.auth)
    assert again.text == r.text
    # Many other calls go by meanwhile (the rotation moves on), then A's agent does not answer:
    # the retry stays in group A (its second member), not another branch.
    for _ in range(5):
        await client.post(url, json=dict(INBOUND, Session=new_session()), headers=config.auth)
    path = action.split("://", 1)[1].split("/", 1)[1]
    retry = await client.post("/" + path, json=dict(body, DialCallStatus="no-answer"), headers=config.auth)
    service = ET.fromstring(retry.text).find("Dial/Service")
    assert service is not None, retry.text
    assert service.attrib["provider"] == "synthflow", retry.text
    retry_action = ET.fromstring(retry.text).find("Dial").attrib["action"]  # type: ignore[union-attr]
    assert "attempt=2&rule=" in retry_action
    assert "branch=0" in retry_action

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
            events += [e for e in decode_events(msg.data) if e.session_token == session]
    except nats.errors.TimeoutError:
        pass
    finally:
        await sub.unsubscribe()
    routed = [e for e in events if e.kind is EventKind.ROUTED]
    dialled = [e for e in events if e.kind is EventKind.DIAL_STATUS]
    assert routed
    assert all(e.split_target == f"group:{tid * 10 + 1}" for e in routed)
    assert dialled
    assert dialled[0].split_target == f"group:{tid * 10 + 1}"
    assert dialled[0].group_id == tid * 10 + 1


def _schedule_now(open_now: bool) -> RuleSchedule:
    """A UTC schedule open all of today (or every other day), whatever the time the test runs."""
    today = datetime.datetime.now(datetime.UTC).weekday()
    days = [DAYS[today]] if open_now else [d for i, d in enumerate(DAYS) if i != today]
    return RuleSchedule(timezone="UTC", days=days)


async def test_a_closed_rule_gives_way_to_the_after_hours_rule(
    client: httpx.AsyncClient, engine: EngineApp, kv: KeyValue
) -> None:
    config = demo_tenant()
    tid = config.tenant_id
    business = msgspec.structs.replace(config.snapshot.inbound_rules[0], schedule=_schedule_now(False))
    after_hours = InboundRuleSnap(
        id=tid * 10 + 9,
        pattern="+1212555*",
        target_type=TargetType.AGENT,
        target_id=tid * 100 + 3,
        priority=50,
    )
    config = config.bump(inbound_rules=[business, after_hours])
    await publish(kv, engine, config)
    url = f"/api/voice/application/{config.domain}"
    r = await client.post(url, json=dict(INBOUND, Session=new_session()), headers=config.auth)
    assert ET.fromstring(r.text).find("Dial/Sip") is not None  # the after-hours agent
    assert f"rule={tid * 10 + 9}" not in r.text  # no schedule on it: the plain URL

    business = msgspec.structs.replace(business, schedule=_schedule_now(True))
    config = config.bump(inbound_rules=[business, after_hours])
    await publish(kv, engine, config)
    r = await client.post(url, json=dict(INBOUND, Session=new_session()), headers=config.auth)
    assert ET.fromstring(r.text).find("Dial/Service[@provider='vapi']") is not None
    assert re.search(rf"rule={tid * 10 + 1}&amp;agent=", r.text)  # pinned: retries stay with this rule


async def test_a_retry_stays_with_its_scheduled_rule_after_it_closes(
    client: httpx.AsyncClient, engine: EngineApp, kv: KeyValue
) -> None:
    config = demo_tenant()
    tid = config.tenant_id
    business = msgspec.structs.replace(config.snapshot.inbound_rules[0], schedule=_schedule_now(True))
    after_hours = InboundRuleSnap(
        id=tid * 10 + 9,
        pattern="+1212555*",
        target_type=TargetType.AGENT,
        target_id=tid * 100 + 3,
        priority=50,
    )
    config = config.bump(inbound_rules=[business, after_hours])
    await publish(kv, engine, config)
    url = f"/api/voice/application/{config.domain}"
    body = dict(INBOUND, Session=new_session())
    r = await client.post(url, json=body, headers=config.auth)
    action = ET.fromstring(r.text).find("Dial").attrib["action"]  # type: ignore[union-attr]
    # The schedule closes while the first agent rings.
    closed = msgspec.structs.replace(business, schedule=_schedule_now(False))
    config = config.bump(inbound_rules=[closed, after_hours])
    await publish(kv, engine, config)
    path = "/" + action.split("://", 1)[1].split("/", 1)[1]
    retry = await client.post(path, json=dict(body, DialCallStatus="busy"), headers=config.auth)
    assert ET.fromstring(retry.text).find("Dial/Service[@provider='synthflow']") is not None, retry.text


def test_a_snapshot_without_the_new_fields_still_loads() -> None:
    config = demo_tenant()
    raw = msgspec.to_builtins(config.snapshot)
    for rule in raw["inbound_rules"]:
        rule.pop("schedule", None)
        rule.pop("targets", None)
    snap = SNAPSHOT_DECODER.decode(msgspec.msgpack.encode(raw))
    assert isinstance(snap, TenantSnapshot)
    assert all(r.schedule is None and r.targets == [] for r in snap.inbound_rules)
    assert SNAPSHOT_DECODER.decode(SNAPSHOT_ENCODER.encode(snap)) == snap
