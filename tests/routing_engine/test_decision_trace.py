"""Explained decisions (issue 15 part 7): the per-candidate codes balancer.lua returns with each
decision (real Redis), the engine's counters by reason, and the control plane's decoding of a trace."""

from __future__ import annotations

import os
from typing import Any

import redis.asyncio as aioredis

from control_plane.calls.decisions import explain
from routing_engine import metrics
from routing_engine.balancer import Balancer, Candidate, DecideRequest, encode_batch, pack_target
from shared.events import DecisionTrace


def request(tenant: int, session: str, caps: tuple[int, ...], **kw: Any) -> DecideRequest:
    cands = tuple(Candidate(agent_id=i + 1, priority=i + 1, capacity=c) for i, c in enumerate(caps))
    fields: dict[str, Any] = {
        "tenant_id": tenant,
        "session": session.rjust(32, "0"),
        "stage": "app",
        "strategy": "priority",
        "group_id": 3,
        "window_hours": 24,
        "max_attempts": 3,
        "fallback_enabled": True,
        "candidates": cands,
        "answers": tuple((f"<Dial>{c.agent_id}</Dial>", "") for c in cands),
        "no_agent": "<Hangup/>",
    }
    fields.update(kw)
    return DecideRequest(**fields)


async def test_codes_name_full_tried_free_and_unknown(redis_client: aioredis.Redis) -> None:
    b = Balancer(redis_client, prefix=os.environ["VLB_REDIS_PREFIX"])
    caps = (1, 0, 2, 0)
    first = await b.decide(request(1501, "t1", caps))
    # the priority choice stopped at agent 1: agent 3's capacity was not counted ('-'), the unlimited
    # ones are free whatever
    assert (first.agent_id, first.trace) == (1, "c.-.")
    second = await b.decide(request(1501, "t2", caps))
    assert (second.agent_id, second.trace) == (2, "fc-.")
    # the fallback of call t2 after agent 2 failed: agent 2 tried, agent 1 still full, agent 3 chosen
    retry = await b.decide(request(1501, "t2", caps, stage="dial-1", failed_agent=2))
    assert (retry.agent_id, retry.trace) == (3, "ftc.")
    # a repeat of the same webhook is answered from Redis: no trace
    again = await b.decide(request(1501, "t2", caps, stage="dial-1", failed_agent=2))
    assert again.replay
    assert again.trace == ""
    # max_attempts reached: nothing looked at
    done = await b.decide(request(1501, "t2", caps, stage="dial-3", failed_agent=3))
    assert (done.agent_id, done.trace) == (None, "!M")
    # a group whose members are all unlimited: '*' (all free, the event's agent chosen)
    free = await b.decide(request(1501, "t3", (0, 0, 0)))
    assert (free.agent_id, free.trace) == (1, "*")
    # heads sent with their shared start once are answered whole, caller id in place
    heads = tuple(
        (f'<Response><Dial action="https://e/x?agent={a}"', f"><Sip>{a}</Sip></Dial></Response>")
        for a in (1, 2)
    )
    whole = await b.decide(request(1502, "t4", (0, 0), answers=heads, caller=' callerId="+1555"'))
    assert (
        whole.cxml
        == '<Response><Dial action="https://e/x?agent=1" callerId="+1555"><Sip>1</Sip></Dial></Response>'
    )


async def test_round_robin_codes_show_its_walk(redis_client: aioredis.Redis) -> None:
    """A round_robin trace marks exactly the candidates its rotation walked past ('f', 't', 'e') up to
    the one chosen, from where the rotation stood; the others are '-' even when known full or tried,
    so consecutive traces tile the rotation (loadtests/soak.py counts turns from them)."""
    b = Balancer(redis_client, prefix=os.environ["VLB_REDIS_PREFIX"])
    caps = (1, 1, 1, 1)

    async def rr(session: str, **kw: Any) -> tuple[int | None, str]:
        got = await b.decide(request(1503, session, caps, strategy="round_robin", **kw))
        return got.agent_id, got.trace

    assert await rr("r1") == (1, "c---")
    assert await rr("r2") == (2, "-c--")
    assert await rr("r3") == (3, "--c-")
    assert await rr("r4") == (4, "---c")
    # every member full: the walk went all the way round (the rotation stays after agent 4)
    assert await rr("r5") == (None, "ffff")
    assert await b.release(1503, "r2".rjust(32, "0"), reason="test", ended=True)
    # from agent 1 (after 4): 1 full, 2 chosen; 3 and 4 (full) were not looked at
    assert await rr("r6") == (2, "fc--")
    # r6's dial of agent 2 failed: its slot is free again but tried; from agent 3 round to 2
    assert await rr("r6", stage="dial-1", failed_agent=2) == (None, "ftff")
    assert await b.release(1503, "r4".rjust(32, "0"), reason="test", ended=True)
    # the walk wraps: from agent 3 (after 2), 3 full, 4 chosen; 1 and 2 not looked at
    assert await rr("r7") == (4, "--fc")


def test_packed_targets_splice_into_batches() -> None:
    import msgspec

    req = request(1, "p1", (0, 0))
    packed = pack_target(req)
    templated = msgspec.structs.replace(req, packed=packed)
    out = msgspec.msgpack.decode(encode_batch([templated, msgspec.structs.replace(templated, session="p2")]))
    assert out[0] == 1  # one target for both requests
    assert out[2][:6] == ["priority", 3, 24, 3, True, 2]
    assert out[2][6:12] == ["1", 1, 0, "2", 2, 0]  # agent, priority, capacity per candidate
    assert out[2][-1] == {"unl": 1}
    long = request(
        1,
        "h",
        (0, 0),
        answers=(("<Response><Dial action=x?agent=1", "t1"), ("<Response><Dial action=x?agent=2", "t2")),
    )
    packed_long = msgspec.msgpack.decode(encode_batch([long]))[2]
    assert packed_long[-1]["hp"] == "<Response><Dial action=x?agent="  # sent once
    assert packed_long[12:16] == ["1", "t1", "2", "t2"]
    weighted = msgspec.msgpack.decode(encode_batch([request(1, "w", (0, 5), strategy="weighted")]))
    assert weighted[1] != 0  # a seed: the weighted choice draws
    assert weighted[2][-1]["w"] == [100, 100]


def test_explain_decodes_every_code() -> None:
    stored = {
        "members": "g5:11,12,13,14/g7:21,22/n/a",
        "codes": "ftef/t.-/t/c",
        "excluded": "15:d,16:k",
        "rules_skipped": "3:s,4:s",
        "branches": "group:5,group:9",
        "split_target": "group:5",
        "overflow_step": "4:announcement",
        "snapshot_version": 12,
    }
    d = explain(stored, 8, None)
    assert d.rule_id == 8
    assert d.snapshot_version == 12
    assert d.traced
    got = {(c.agent_id, c.group_id, c.step): (c.result, c.reason) for c in d.candidates}
    assert got == {
        (11, 5, 0): ("skipped", "full"),
        (12, 5, 0): ("skipped", "tried"),
        (13, 5, 0): ("skipped", "ejected"),
        (14, 5, 0): ("skipped", "full"),
        (21, 7, 1): ("skipped", "tried"),
        (22, 7, 1): ("eligible", None),
        (15, 5, 0): ("skipped", "disabled"),
        (16, 5, 0): ("skipped", "credentials"),
    }
    assert [(s.step, s.kind, s.result, s.reason) for s in d.overflow_steps] == [
        (2, "number", "skipped", "tried"),
        (3, "announcement", "chosen", None),
    ]
    assert [(r.rule_id, r.reason) for r in d.rules_skipped] == [
        (3, "outside_schedule"),
        (4, "outside_schedule"),
    ]
    assert d.split_branch == "group:5"
    assert [(b.target, b.reason) for b in d.branches_skipped] == [("group:9", "not_in_split_branch")]
    assert d.overflow_step == "4:announcement"


def test_explain_star_stop_and_untraced() -> None:
    star = explain({"members": "g5:11,12,13", "codes": "*"}, 1, 12)
    assert [(c.agent_id, c.result) for c in star.candidates] == [
        (11, "eligible"),
        (12, "chosen"),
        (13, "eligible"),
    ]
    stopped = explain({"members": "g5:11,12", "codes": "!M"}, 1, None)
    assert stopped.stopped == "max_attempts"
    assert {c.result for c in stopped.candidates} == {"not_checked"}
    untraced = explain({"members": "g5:11", "codes": ""}, 1, 11)
    assert untraced.traced is False
    overflow_unwalked = explain({"members": "g5:11/g7:21/n", "codes": "c"}, 1, 11)
    assert [(c.agent_id, c.result) for c in overflow_unwalked.candidates] == [
        (11, "chosen"),
        (21, "not_reached"),
    ]
    assert overflow_unwalked.overflow_steps[0].result == "not_reached"


def _value(counter: Any, reason: str) -> float:
    return float(counter.labels(reason)._value.get())


def test_metrics_count_reasons_once_per_decision() -> None:
    full0 = _value(metrics.CANDIDATES_SKIPPED, "full")
    tried0 = _value(metrics.CANDIDATES_SKIPPED, "tried")
    disabled0 = _value(metrics.CANDIDATES_SKIPPED, "disabled")
    sched0 = _value(metrics.RULES_SKIPPED, "outside_schedule")
    branch0 = _value(metrics.RULES_SKIPPED, "not_in_split_branch")
    trace = DecisionTrace(
        members="g5:11,12,13",
        codes="ftc",
        excluded="14:d",
        rules_skipped="3:s",
        branches="group:5,group:6,agent:9",
    )
    for _ in range(3):
        metrics.note_trace(trace)
    metrics.note_trace(DecisionTrace(members="g5:11,12", codes="!M"))
    metrics.flush()
    assert _value(metrics.CANDIDATES_SKIPPED, "full") - full0 == 3
    assert _value(metrics.CANDIDATES_SKIPPED, "tried") - tried0 == 3
    assert _value(metrics.CANDIDATES_SKIPPED, "disabled") - disabled0 == 3
    assert _value(metrics.RULES_SKIPPED, "outside_schedule") - sched0 == 3
    assert _value(metrics.RULES_SKIPPED, "not_in_split_branch") - branch0 == 6
