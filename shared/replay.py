"""Replay (issue #15 part 8): recent inbound calls run through a routing configuration in process,
with simulated counters only. Pure: no I/O, no Redis.

The simulation walks the calls in start order. Each call matches the first rule (``shared.routing``
tables, schedules checked at the call's start), takes a split branch (the engine's smooth weighted
round-robin, per rule), and picks an agent by the group's strategy with the engine's semantics
(``routing_engine/balancer.lua``): enabled members of an enabled group whose agent is enabled and whose
simulated active calls are below capacity; stickiness first when ``sticky_hours`` is set; priority with
rotation among equal priorities, round_robin, load_balanced over a rolling ``window_hours`` of the
simulated choices, weighted and least_active with a fixed seed. A chosen agent holds its slot from the
call's start to its recorded end (an agent's slots count across every group, as in Redis).

Left out, on purpose: outlier ejection (the replay has no dial outcomes to judge), fallback attempts
after a failed dial (the records do not say how a different agent would have answered), and the live
counters of before the first replayed call (every run starts from empty counters, the same for the
current and the draft configuration, so the comparison is fair).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

import msgspec

from shared.routing import build_inbound_table, normalize_number
from shared.snapshot import GroupSnap, MemberSnap, TenantSnapshot

# The seed of weighted / least_active random draws: a replay answers the same every time.
REPLAY_SEED = 1515


class ReplayCall(msgspec.Struct, kw_only=True, frozen=True):
    """One recorded inbound call, as the replay needs it."""

    session_token: str
    from_number: str = ""
    to_number: str = ""
    domain_id: int | None = None
    start: float  # epoch seconds
    end: float  # epoch seconds (>= start)


class ReplayOutcome(msgspec.Struct, kw_only=True, frozen=True):
    """Where one call goes under one configuration."""

    rule_id: int | None = None
    group_id: int | None = None
    agent_id: int | None = None
    split_target: str | None = None


@dataclass(slots=True)
class _Sim:
    snap: TenantSnapshot
    rng: random.Random = field(default_factory=lambda: random.Random(REPLAY_SEED))
    # agent -> sorted list of end times of its live slots
    active: dict[int, list[float]] = field(default_factory=dict)
    # agent -> choice times (for load_balanced windows)
    chosen: dict[int, list[float]] = field(default_factory=dict)
    rr: dict[int, tuple[int, int]] = field(default_factory=dict)  # group -> (priority, agent)
    pr: dict[tuple[int, int], int] = field(default_factory=dict)  # (group, priority) -> agent
    sticky: dict[tuple[int, str], tuple[int, float]] = field(default_factory=dict)  # -> (agent, until)
    split_state: dict[int, list[int]] = field(default_factory=dict)

    def active_at(self, agent: int, now: float) -> int:
        ends = self.active.get(agent)
        if not ends:
            return 0
        # drop slots over by now
        cut = bisect.bisect_right(ends, now)
        if cut:
            del ends[:cut]
        return len(ends)

    def window_calls(self, agent: int, now: float, hours: int) -> int:
        times = self.chosen.get(agent)
        if not times:
            return 0
        # minute resolution, as the engine's buckets: the current minute and the hours*60-1 before it
        since = (now // 60 - hours * 60 + 1) * 60
        return len(times) - bisect.bisect_left(times, since)

    def take(self, agent: int, start: float, end: float) -> None:
        bisect.insort(self.active.setdefault(agent, []), end)
        self.chosen.setdefault(agent, []).append(start)


def _members(snap: TenantSnapshot, group: GroupSnap) -> list[MemberSnap]:
    if not group.enabled:
        return []
    enabled = {a.id for a in snap.agents if a.enabled}
    return sorted((m for m in group.members if m.agent_id in enabled), key=lambda m: (m.priority, m.agent_id))


def _caller(call: ReplayCall) -> str:
    # the engine's stickiness key part (routing_engine.decide.sticky_caller)
    return normalize_number(call.from_number)[:64] if call.from_number else ""


def _free(sim: _Sim, m: MemberSnap, now: float) -> bool:
    return m.capacity == 0 or sim.active_at(m.agent_id, now) < m.capacity


def _pick(sim: _Sim, group: GroupSnap, members: list[MemberSnap], call: ReplayCall) -> MemberSnap | None:
    now = call.start
    gs = group.settings
    free = [m for m in members if _free(sim, m, now)]
    if not free:
        return None
    caller = _caller(call)
    if gs.sticky_hours and caller:
        hit = sim.sticky.get((group.id, caller))
        if hit is not None and hit[1] > now:
            for m in free:
                if m.agent_id == hit[0]:
                    return m
    strategy = group.strategy.value
    if strategy == "priority":
        first = free[0]
        level = [m for m in members if m.priority == first.priority]
        if not gs.rotate_same_priority or len(level) == 1:
            return first
        prev = sim.pr.get((group.id, first.priority))
        if prev is None:
            choice = first
        else:
            start = next((i for i, m in enumerate(level) if m.agent_id > prev), 0)
            choice = first
            for k in range(len(level)):
                cand = level[(start + k) % len(level)]
                if cand is first or _free(sim, cand, now):
                    choice = cand
                    break
        sim.pr[(group.id, first.priority)] = choice.agent_id
        return choice
    if strategy == "round_robin":
        last = sim.rr.get(group.id)
        start = 0
        if last is not None:
            start = next((i for i, m in enumerate(members) if (m.priority, m.agent_id) > last), 0)
        for k in range(len(members)):
            cand = members[(start + k) % len(members)]
            if _free(sim, cand, now):
                sim.rr[group.id] = (cand.priority, cand.agent_id)
                return cand
        return None
    caps = {m.capacity for m in members}
    differ = len(caps) > 1
    maxcap = max(caps) or 1

    def cap_of(m: MemberSnap) -> int:
        if not differ:
            return 1
        return m.capacity or maxcap

    if strategy == "load_balanced":
        best, best_calls, best_cap = free[0], -1, 1
        for m in free:
            calls = sim.window_calls(m.agent_id, now, gs.window_hours)
            if best_calls < 0 or calls * best_cap < best_calls * cap_of(m):
                best, best_calls, best_cap = m, calls, cap_of(m)
        return best
    if strategy == "weighted":
        total = sum(m.weight for m in free)
        if len(free) == 1 or total < 1:
            return free[0]
        x = sim.rng.randint(1, total)
        for m in free:
            x -= m.weight
            if x <= 0:
                return m
        return free[-1]
    if strategy == "least_active":
        ties: list[MemberSnap] = []
        best_act, best_cap = 0, 1
        for m in free:
            act, cap = sim.active_at(m.agent_id, now), cap_of(m)
            if not ties or act * best_cap < best_act * cap:
                ties, best_act, best_cap = [m], act, cap
            elif act * best_cap == best_act * cap:
                ties.append(m)
        if len(ties) == 1:
            return ties[0]
        a, b = sim.rng.sample(range(len(ties)), 2)

        def room(m: MemberSnap) -> float:
            return float("inf") if m.capacity == 0 else m.capacity - sim.active_at(m.agent_id, now)

        return ties[b] if room(ties[b]) > room(ties[a]) else ties[a]
    return free[0]


def _split_branch(sim: _Sim, rule_id: int, weights: list[int]) -> int:
    current = sim.split_state.setdefault(rule_id, [0] * len(weights))
    best = 0
    for i, w in enumerate(weights):
        current[i] += w
        if current[i] > current[best]:
            best = i
    current[best] -= sum(weights)
    return best


def replay(snap: TenantSnapshot, calls: list[ReplayCall]) -> list[ReplayOutcome]:
    """Each call's outcome under ``snap``, in the order of ``calls`` (simulated in start order)."""
    sim = _Sim(snap=snap)
    table = build_inbound_table(snap.inbound_rules)
    groups = {g.id: g for g in snap.groups}
    members = {g.id: _members(snap, g) for g in snap.groups}
    enabled_agents = {a.id for a in snap.agents if a.enabled}
    out: list[ReplayOutcome | None] = [None] * len(calls)
    order = sorted(range(len(calls)), key=lambda i: (calls[i].start, calls[i].session_token))
    for i in order:
        call = calls[i]
        rule = table.first_match(call.to_number, call.from_number, call.domain_id, now=call.start)
        if rule is None:
            out[i] = ReplayOutcome()
            continue
        target_type, target_id, label = rule.target_type.value, rule.target_id, None
        if rule.targets:
            branch = rule.targets[_split_branch(sim, rule.id, [t.percent for t in rule.targets])]
            target_type, target_id = branch.target_type.value, branch.target_id
            label = f"{target_type}:{target_id}"
        agent: int | None = None
        group_id: int | None = None
        if target_type == "agent":
            # a single agent: unlimited capacity, as the engine's "single" target
            agent = target_id if target_id in enabled_agents else None
        else:
            group = groups.get(target_id)
            if group is not None:
                group_id = group.id
                member = _pick(sim, group, members[group.id], call)
                if member is not None:
                    agent = member.agent_id
                    if group.settings.sticky_hours and call.from_number:
                        until = call.start + group.settings.sticky_hours * 3600
                        sim.sticky[(group.id, _caller(call))] = (agent, until)
        if agent is not None:
            sim.take(agent, call.start, max(call.end, call.start))
        out[i] = ReplayOutcome(rule_id=rule.id, group_id=group_id, agent_id=agent, split_target=label)
    return [o if o is not None else ReplayOutcome() for o in out]
