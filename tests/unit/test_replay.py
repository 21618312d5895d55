"""The replay simulation (shared/replay.py): each strategy's semantics on simulated counters."""

from __future__ import annotations

from collections import Counter
from typing import Any

from shared.enums import Strategy, TargetType
from shared.replay import ReplayCall, replay
from shared.snapshot import (
    AgentSnap,
    GroupSettings,
    GroupSnap,
    InboundRuleSnap,
    MemberSnap,
    RuleSchedule,
    SplitTarget,
    TenantSnapshot,
)

T0 = 1_790_000_000.0  # a Tuesday-ish epoch; the schedule test picks its own instants


def snap(
    strategy: Strategy,
    members: list[MemberSnap],
    settings: GroupSettings | None = None,
    rules: list[InboundRuleSnap] | None = None,
    extra_groups: list[GroupSnap] | None = None,
    disabled: frozenset[int] = frozenset(),
) -> TenantSnapshot:
    agent_ids = {m.agent_id for m in members} | {m.agent_id for g in extra_groups or [] for m in g.members}
    return TenantSnapshot(
        tenant_id=1,
        version=1,
        compiled_at=0,
        agents=[
            AgentSnap(id=a, name=f"a{a}", provider="vapi", service_value="", enabled=a not in disabled)
            for a in sorted(agent_ids)
        ],
        groups=[
            GroupSnap(
                id=1, name="g", strategy=strategy, settings=settings or GroupSettings(), members=members
            ),
            *(extra_groups or []),
        ],
        inbound_rules=rules
        or [InboundRuleSnap(id=1, pattern="*", target_type=TargetType.GROUP, target_id=1)],
    )


def calls(n: int, gap: float = 60, length: float = 30, **kw: Any) -> list[ReplayCall]:
    return [
        ReplayCall(
            session_token=f"s{i:05d}",
            to_number="+15550000",
            start=T0 + i * gap,
            end=T0 + i * gap + length,
            **kw,
        )
        for i in range(n)
    ]


def agents(outcomes: list[Any]) -> list[int | None]:
    return [o.agent_id for o in outcomes]


def test_round_robin_cycles_in_priority_id_order() -> None:
    s = snap(Strategy.ROUND_ROBIN, [MemberSnap(agent_id=3), MemberSnap(agent_id=1), MemberSnap(agent_id=2)])
    assert agents(replay(s, calls(7))) == [1, 2, 3, 1, 2, 3, 1]


def test_capacity_holds_the_slot_until_the_recorded_end() -> None:
    s = snap(
        Strategy.PRIORITY,
        [MemberSnap(agent_id=1, capacity=1), MemberSnap(agent_id=2, priority=2, capacity=1)],
    )
    # three calls overlapping: 1, then 2, then none free; the fourth starts after the first ended.
    cs = [
        ReplayCall(session_token="a", start=T0, end=T0 + 100),
        ReplayCall(session_token="b", start=T0 + 10, end=T0 + 100),
        ReplayCall(session_token="c", start=T0 + 20, end=T0 + 30),
        ReplayCall(session_token="d", start=T0 + 100, end=T0 + 110),
    ]
    out = replay(s, cs)
    assert agents(out) == [1, 2, None, 1]
    assert [o.rule_id for o in out] == [1, 1, 1, 1]
    assert [o.group_id for o in out] == [1, 1, 1, 1]


def test_priority_rotates_among_equal_priorities_unless_told_not_to() -> None:
    members = [MemberSnap(agent_id=1), MemberSnap(agent_id=2), MemberSnap(agent_id=5, priority=2)]
    assert agents(replay(snap(Strategy.PRIORITY, members), calls(4))) == [1, 2, 1, 2]
    fixed = snap(Strategy.PRIORITY, members, GroupSettings(rotate_same_priority=False))
    assert agents(replay(fixed, calls(4))) == [1, 1, 1, 1]


def test_load_balanced_evens_the_window_and_disabled_agents_are_left_out() -> None:
    members = [MemberSnap(agent_id=1), MemberSnap(agent_id=2), MemberSnap(agent_id=3)]
    out = agents(replay(snap(Strategy.LOAD_BALANCED, members), calls(9)))
    assert Counter(out) == {1: 3, 2: 3, 3: 3}
    out = agents(replay(snap(Strategy.LOAD_BALANCED, members, disabled=frozenset({2})), calls(8)))
    assert Counter(out) == {1: 4, 3: 4}


def test_least_active_and_weighted_are_deterministic() -> None:
    members = [MemberSnap(agent_id=1, weight=300), MemberSnap(agent_id=2, weight=100)]
    w = snap(Strategy.WEIGHTED, members)
    first = agents(replay(w, calls(2000)))
    assert first == agents(replay(w, calls(2000)))
    share = Counter(first)[1] / 2000
    assert 0.70 < share < 0.80
    la = snap(Strategy.LEAST_ACTIVE, members)
    # overlapping calls: least active alternates as slots fill
    out = agents(replay(la, calls(4, gap=1, length=1000)))
    assert Counter(out) == {1: 2, 2: 2}


def test_stickiness_keeps_the_callers_agent() -> None:
    members = [MemberSnap(agent_id=1), MemberSnap(agent_id=2)]
    s = snap(Strategy.ROUND_ROBIN, members, GroupSettings(sticky_hours=1))
    cs = [
        ReplayCall(session_token=f"s{i}", from_number=caller, start=T0 + i * 60, end=T0 + i * 60 + 10)
        for i, caller in enumerate(["+1 (415) 555-0001", "+14155550002", "+14155550001", "+14155550001"])
    ]
    assert agents(replay(s, cs)) == [1, 2, 1, 1]
    plain = snap(Strategy.ROUND_ROBIN, members)
    assert agents(replay(plain, cs)) == [1, 2, 1, 2]


def test_split_and_schedule_at_the_calls_start() -> None:
    g2 = GroupSnap(id=2, name="b", strategy=Strategy.PRIORITY, members=[MemberSnap(agent_id=9)])
    rules = [
        InboundRuleSnap(
            id=1,
            pattern="*",
            target_type=TargetType.GROUP,
            target_id=1,
            targets=[
                SplitTarget(target_type=TargetType.GROUP, target_id=1, percent=50),
                SplitTarget(target_type=TargetType.GROUP, target_id=2, percent=50),
            ],
        )
    ]
    s = snap(Strategy.PRIORITY, [MemberSnap(agent_id=1)], rules=rules, extra_groups=[g2])
    out = replay(s, calls(4))
    assert [o.split_target for o in out] == ["group:1", "group:2", "group:1", "group:2"]
    assert agents(out) == [1, 9, 1, 9]

    # A rule open only on Saturdays (UTC) and a catch-all after it.
    sat = 1_790_380_800.0  # 2026-09-26 00:00 UTC, a Saturday
    rules = [
        InboundRuleSnap(
            id=1,
            pattern="*",
            target_type=TargetType.GROUP,
            target_id=2,
            priority=1,
            schedule=RuleSchedule(timezone="UTC", days=["sat"]),
        ),
        InboundRuleSnap(id=2, pattern="*", target_type=TargetType.GROUP, target_id=1, priority=2),
    ]
    s = snap(Strategy.PRIORITY, [MemberSnap(agent_id=1)], rules=rules, extra_groups=[g2])
    cs = [
        ReplayCall(session_token="fri", start=sat - 60, end=sat - 30),
        ReplayCall(session_token="sat", start=sat + 60, end=sat + 90),
    ]
    out = replay(s, cs)
    assert [o.rule_id for o in out] == [2, 1]
    assert agents(out) == [1, 9]


def test_no_rule_and_agent_targets() -> None:
    rules = [InboundRuleSnap(id=7, pattern="+1555*", target_type=TargetType.AGENT, target_id=1)]
    s = snap(Strategy.PRIORITY, [MemberSnap(agent_id=1)], rules=rules)
    cs = [
        ReplayCall(session_token="x", to_number="+15551", start=T0, end=T0 + 5),
        ReplayCall(session_token="y", to_number="+4420", start=T0 + 1, end=T0 + 5),
    ]
    out = replay(s, cs)
    assert (out[0].rule_id, out[0].group_id, out[0].agent_id) == (7, None, 1)
    assert (out[1].rule_id, out[1].agent_id) == (None, None)
