"""The compiled routing tables the hot path reads: one CompiledTenant per TenantSnapshot (rules
pre-sorted, patterns pre-compiled, targets resolved, CXML fragments pre-rendered) and a domain → tenant
map. A RoutingState is immutable once built; the snapshot watcher swaps in a new one with one
reference assignment."""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from cryptography.fernet import Fernet

from routing_engine import cxml
from routing_engine.balancer import Candidate
from shared.routing import RuleTable, build_inbound_table, build_outbound_table
from shared.snapshot import (
    GroupSettings,
    InboundRuleSnap,
    OutboundRuleSnap,
    OutlierSettings,
    TenantSnapshot,
)

log = structlog.get_logger("routing_engine.rules")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# An agent rule target behaves like a one-member group with these settings.
_SINGLE_AGENT_SETTINGS = GroupSettings(fallback_enabled=False, max_attempts=1)


# The options of a target that has none (shared: encoded as an empty map).
NO_OPTS: dict[str, Any] = {}


def outlier_opts(o: OutlierSettings, members: int) -> dict[str, Any]:
    """``settings.outlier`` as balancer.lua reads it: the ``ol_*`` keys, and ``ol_cfg``, the same in
    one string the script keeps in the call's hash (so a release, which has no target, can judge the
    call's end by the group's settings)."""
    rate = o.failure_rate or 0.0
    allow = 1 if o.allow_eject_all else 0
    cfg = (
        f"{o.consecutive_failures}|{rate}|{o.window_s}|{o.min_calls}|{o.base_ejection_s}|"
        f"{o.max_ejection_s}|{o.max_ejected_percent}|{o.short_call_s}|{allow}|{members}"
    )
    return {
        "ol_n": o.consecutive_failures,
        "ol_rate": rate,
        "ol_win": o.window_s,
        "ol_min": o.min_calls,
        "ol_base": o.base_ejection_s,
        "ol_max": o.max_ejection_s,
        "ol_pct": o.max_ejected_percent,
        "ol_short": o.short_call_s,
        "ol_all": allow,
        "ol_cfg": cfg,
    }


@dataclass(frozen=True, slots=True)
class CompiledDomain:
    id: int
    name: str
    key_hash: str
    networks: tuple[IpNetwork, ...]
    max_requests_per_second: float | None
    # Path of the dial-status webhook for this domain, to which the base URL is prefixed per request.
    dial_status_path: str


@dataclass(frozen=True, slots=True)
class CompiledTarget:
    """What a rule sends the call to, ready for the balancer: an agent ("single") or a group."""

    kind: str  # "agent" | "group"
    target_id: int
    strategy: str
    group_id: int
    window_hours: int
    max_attempts: int
    fallback_enabled: bool
    ring_timeout_s: int
    candidates: tuple[Candidate, ...]
    fragments: tuple[cxml.AgentFragment, ...]  # parallel to candidates
    no_agent: str  # full CXML
    sticky_s: int = 0  # caller stickiness (s), 0 = off
    rotate: bool = True  # priority: rotate among equal priorities
    # The balancer's per-target options (balancer.lua reads them as the target's last element): the
    # ``ol_*`` keys when the group has ``settings.outlier``; one shared empty map otherwise.
    opts: dict[str, Any] = field(default_factory=lambda: NO_OPTS)
    # What the dial-status URL carries besides attempt and agent ("rule=<id>&amp;branch=<i>&amp;" for
    # the copies made per scheduled or split rule, so the call's retries stay with its rule and branch
    # even when the schedule has closed meanwhile); "" for the shared per-group targets.
    url_extra: str = ""
    # settings.overflow flattened (a group step is followed by that group's own chain; groups appear
    # once, the chain ends at an announcement): ("group", CompiledTarget) | ("number", number) |
    # ("announcement", cxml).
    overflow: tuple[tuple[str, Any], ...] = ()
    # The decision trace's static parts (shared.events.DecisionTrace): the candidates in the order of
    # the script's codes ("g5:11,12" for a group, "11" for an agent), the overflow chain's after them
    # ("g5:11,12/g7:21,22/n/a"), and the members left out at compile time with why ("13:d,14:k").
    trace_members: str = ""
    trace_excluded: str = ""
    # (dial-status path, base URL, attempt, url_extra) -> the balancer's request template for that
    # rendering (decide._rendered: each candidate's answer split around the caller id, the overflow
    # chain, the target packed for the script): what stays the same from call to call is made once.
    rendered: dict[tuple[Any, ...], Any] = field(default_factory=dict, compare=False, repr=False)


# Sessions whose split branch each Split remembers (a repeated webhook of one call on this process keeps
# its branch); the oldest is forgotten first.
SPLIT_SESSIONS_KEPT = 4096


@dataclass(slots=True, eq=False)
class Split:
    """An inbound rule's traffic split (SPEC §5 ``targets``): one branch per call, by smooth weighted
    round-robin over the percents (nginx's algorithm): over any run of calls on one engine process each
    branch's share is within one call of its percent, so N processes together are within N calls, far
    inside 1 % of 10,000 (a random choice would drift by about 0.5 % of the calls, one standard
    deviation, and often by more than 1 %). No Redis: the state is this process's.

    A repeated first request of a call on this process gets its branch again (the balancer's script
    answers the same CXML anyway, on any replica); dial-status requests carry the branch in their URL.
    """

    targets: tuple[CompiledTarget | None, ...]  # None: that branch's target is missing or disabled
    labels: tuple[str, ...]  # "group:<id>" | "agent:<id>", as the call record's split_target column
    weights: tuple[int, ...]
    total: int
    current: list[int]
    branches: str = ""  # the labels in order, comma-separated (the decision trace's ``branches``)
    recent: dict[str, int] = field(default_factory=dict)

    def pick(self, session: str) -> int:
        branch = self.recent.get(session)
        if branch is not None:
            return branch
        current = self.current
        weights = self.weights
        best = 0
        for i in range(len(weights)):
            current[i] += weights[i]
            if current[i] > current[best]:
                best = i
        current[best] -= self.total
        recent = self.recent
        if len(recent) >= SPLIT_SESSIONS_KEPT:
            del recent[next(iter(recent))]
        recent[session] = best
        return best


@dataclass(frozen=True, slots=True)
class OutboundRoute:
    rule_id: int | None
    trunks: list[str]
    caller_id_override: str | None
    strip_prefix: str | None
    add_prefix: str | None

    def dial_number(self, number: str) -> str:
        if self.strip_prefix and number.startswith(self.strip_prefix):
            number = number[len(self.strip_prefix) :]
        if self.add_prefix:
            number = self.add_prefix + number
        return number


@dataclass(frozen=True, slots=True)
class CompiledTenant:
    tenant_id: int
    version: int
    compiled_at: float
    applied_at: float
    inbound: RuleTable[InboundRuleSnap]
    outbound: RuleTable[OutboundRuleSnap]
    # Target per inbound rule id; None when the target is missing or disabled (→ no-agent answer).
    inbound_targets: dict[int, CompiledTarget | None]
    # Traffic splits per inbound rule id (rules with ``targets``); empty when no rule splits.
    inbound_splits: dict[int, Split]
    # Rules a dial-status URL may name (those with a schedule or a split), by id.
    pinned_rules: dict[int, InboundRuleSnap]
    outbound_routes: dict[int, OutboundRoute]
    default_route: OutboundRoute | None
    domains: tuple[CompiledDomain, ...]
    aliases: dict[str, CompiledDomain]  # lower-cased domain names and aliases
    no_agent: str
    fallback: str
    problems: tuple[str, ...] = ()
    # Credential attributes per agent id (as a string), for cxml.fill_secrets.
    secrets: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RoutingState:
    tenants: dict[int, CompiledTenant] = field(default_factory=dict)
    domains: dict[str, tuple[CompiledTenant, CompiledDomain]] = field(default_factory=dict)

    def find_domain(self, name: str) -> tuple[CompiledTenant, CompiledDomain] | None:
        return self.domains.get(name.lower())


def dial_status_path(domain: str) -> str:
    return f"/api/voice/application/{domain}/dial-status"


def _compile_domains(snap: TenantSnapshot, problems: list[str]) -> tuple[CompiledDomain, ...]:
    out: list[CompiledDomain] = []
    for d in snap.domains:
        networks: list[IpNetwork] = []
        for cidr in d.allowed_networks:
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                problems.append(f"domain {d.name}: ignoring invalid network {cidr!r}")
        out.append(
            CompiledDomain(
                id=d.id,
                name=d.name,
                key_hash=d.key_hash.lower(),
                networks=tuple(networks),
                max_requests_per_second=d.max_requests_per_second,
                dial_status_path=cxml.escape(dial_status_path(d.name)),
            )
        )
    return tuple(out)


def compile_tenant(snap: TenantSnapshot, fernet: Fernet | None) -> CompiledTenant:
    """Compile a snapshot; raises PatternError on a pattern the grammar refuses."""
    problems: list[str] = []
    settings = snap.settings
    tenant_no_agent = cxml.no_agent_answer(settings.no_agent_action, settings.no_agent_message)

    fragments: dict[int, cxml.AgentFragment] = {}
    secrets: dict[str, str] = {}
    left_out: dict[int, str] = {}  # agent id -> why it is no candidate (a DecisionTrace code)
    for agent in snap.agents:
        if not agent.enabled:
            left_out[agent.id] = "d"
            continue
        try:
            creds = cxml.decrypt_credentials(agent.credentials, fernet)
        except cxml.CredentialsError as exc:
            problems.append(f"agent {agent.id}: {exc}; left out of routing")
            left_out[agent.id] = "k"
            continue
        fragments[agent.id] = cxml.agent_fragment(agent.provider, agent.service_value, creds, agent.id)
        if fragments[agent.id].secret:
            secrets[str(agent.id)] = fragments[agent.id].secret

    groups: dict[int, CompiledTarget] = {}
    for group in snap.groups:
        gs = group.settings
        message = gs.no_agent_message if gs.no_agent_message is not None else settings.no_agent_message
        members = sorted(
            (m for m in group.members if m.agent_id in fragments),
            key=lambda m: (m.priority, m.agent_id),
        )
        if not group.enabled:
            members = []
            excluded = ",".join(f"{m.agent_id}:g" for m in group.members)
        else:
            excluded = ",".join(
                f"{m.agent_id}:{left_out.get(m.agent_id, 'd')}"
                for m in group.members
                if m.agent_id not in fragments
            )
        groups[group.id] = CompiledTarget(
            kind="group",
            target_id=group.id,
            strategy=str(group.strategy.value),
            group_id=group.id,
            window_hours=gs.window_hours,
            max_attempts=gs.max_attempts,
            fallback_enabled=gs.fallback_enabled,
            ring_timeout_s=gs.ring_timeout_s,
            candidates=tuple(
                Candidate(agent_id=m.agent_id, priority=m.priority, capacity=m.capacity, weight=m.weight)
                for m in members
            ),
            fragments=tuple(fragments[m.agent_id] for m in members),
            no_agent=cxml.no_agent_answer(gs.no_agent_action, message),
            sticky_s=gs.sticky_hours * 3600,
            rotate=gs.rotate_same_priority,
            opts=outlier_opts(gs.outlier, len(members)) if gs.outlier is not None else NO_OPTS,
            trace_members=f"g{group.id}:" + ",".join(str(m.agent_id) for m in members),
            trace_excluded=excluded,
        )

    settings_of = {g.id: g.settings for g in snap.groups}

    def chain(group_id: int) -> tuple[tuple[str, Any], ...]:
        steps: list[tuple[str, Any]] = []
        seen = {group_id}

        def walk(gid: int) -> bool:  # False once an announcement ended the chain
            for step in settings_of[gid].overflow:
                if step.type == "group":
                    g = step.group_id
                    if g is None or g in seen or g not in groups:
                        continue
                    seen.add(g)
                    steps.append(("group", groups[g]))
                    if not walk(g):
                        return False
                elif step.type == "number" and step.number:
                    steps.append(("number", step.number))
                elif step.type == "announcement":
                    steps.append(("announcement", cxml.announcement_answer(step.message, step.play_url)))
                    return False
            return True

        walk(group_id)
        return tuple(steps)

    own_members = {gid: t.trace_members for gid, t in groups.items()}  # before any chain is added

    def chain_members(target: CompiledTarget, steps: tuple[tuple[str, Any], ...]) -> str:
        out = target.trace_members
        for kind, value in steps:
            if kind == "group":
                out += "/" + own_members[value.group_id]
            else:
                out += "/n" if kind == "number" else "/a"
        return out

    for gid in [g.id for g in snap.groups if g.settings.overflow]:
        steps = chain(gid)
        groups[gid] = dataclasses.replace(
            groups[gid], overflow=steps, trace_members=chain_members(groups[gid], steps)
        )

    def agent_target(agent_id: int) -> CompiledTarget | None:
        fragment = fragments.get(agent_id)
        if fragment is None:
            return None
        s = _SINGLE_AGENT_SETTINGS
        return CompiledTarget(
            kind="agent",
            target_id=agent_id,
            strategy="single",
            group_id=0,
            window_hours=s.window_hours,
            max_attempts=s.max_attempts,
            fallback_enabled=s.fallback_enabled,
            ring_timeout_s=s.ring_timeout_s,
            candidates=(Candidate(agent_id=agent_id, priority=1, capacity=0),),
            fragments=(fragment,),
            no_agent=tenant_no_agent,
            trace_members=str(agent_id),
        )

    def target_of(target_type: str, target_id: int) -> CompiledTarget | None:
        if target_type == "agent":
            return agent_target(target_id)
        return groups.get(target_id)

    def pinned(base: CompiledTarget | None, url_extra: str) -> CompiledTarget | None:
        # A copy that renders its own dial-status URL (and so keeps its own rendering cache).
        return None if base is None else dataclasses.replace(base, url_extra=url_extra, rendered={})

    inbound_targets: dict[int, CompiledTarget | None] = {}
    inbound_splits: dict[int, Split] = {}
    pinned_rules: dict[int, InboundRuleSnap] = {}
    for rule in snap.inbound_rules:
        target = target_of(rule.target_type.value, rule.target_id)
        if rule.schedule is not None or rule.targets:
            pinned_rules[rule.id] = rule
            target = pinned(target, f"rule={rule.id}&amp;")
        inbound_targets[rule.id] = target
        if rule.targets:
            branches: list[CompiledTarget | None] = []
            for i, branch in enumerate(rule.targets):
                base = target_of(branch.target_type.value, branch.target_id)
                branches.append(pinned(base, f"rule={rule.id}&amp;branch={i}&amp;"))
            weights = tuple(b.percent for b in rule.targets)
            labels = tuple(f"{b.target_type.value}:{b.target_id}" for b in rule.targets)
            inbound_splits[rule.id] = Split(
                targets=tuple(branches),
                labels=labels,
                branches=",".join(labels),
                weights=weights,
                total=sum(weights),
                current=[0] * len(weights),
            )

    trunk_names = {t.id: t.cloudonix_trunk for t in snap.trunks if t.enabled}
    defaults = sorted(
        (t for t in snap.trunks if t.enabled and t.is_default), key=lambda t: (t.priority, t.id)
    )
    default_route = (
        OutboundRoute(
            rule_id=None,
            trunks=[defaults[0].cloudonix_trunk],
            caller_id_override=None,
            strip_prefix=None,
            add_prefix=None,
        )
        if defaults
        else None
    )
    outbound_routes: dict[int, OutboundRoute] = {}
    for orule in snap.outbound_rules:
        trunks = [trunk_names[t] for t in orule.trunk_ids if t in trunk_names]
        if not trunks and default_route is not None:
            trunks = list(default_route.trunks)
        outbound_routes[orule.id] = OutboundRoute(
            rule_id=orule.id,
            trunks=trunks,
            caller_id_override=orule.caller_id_override,
            strip_prefix=orule.strip_prefix,
            add_prefix=orule.add_prefix,
        )

    domains = _compile_domains(snap, problems)
    aliases: dict[str, CompiledDomain] = {}
    by_id = {d.id: d for d in domains}
    for d in snap.domains:
        for name in (d.name, *d.aliases):
            if name:
                aliases[name.lower()] = by_id[d.id]

    return CompiledTenant(
        tenant_id=snap.tenant_id,
        version=snap.version,
        compiled_at=snap.compiled_at,
        applied_at=time.time(),
        # The same builders as the control plane's dry run, so both planes decide identically.
        inbound=build_inbound_table(snap.inbound_rules),
        outbound=build_outbound_table(snap.outbound_rules),
        inbound_targets=inbound_targets,
        inbound_splits=inbound_splits,
        pinned_rules=pinned_rules,
        outbound_routes=outbound_routes,
        default_route=default_route,
        domains=domains,
        aliases=aliases,
        no_agent=tenant_no_agent,
        fallback=cxml.fallback_answer(settings.fallback_cxml),
        problems=tuple(problems),
        secrets=secrets,
    )


def build_state(tenants: dict[int, CompiledTenant]) -> RoutingState:
    """A new state from the given tenants. A name claimed by two tenants goes to the lower tenant id
    (the control plane keeps names unique; this only makes a transient overlap deterministic)."""
    domains: dict[str, tuple[CompiledTenant, CompiledDomain]] = {}
    for tenant_id in sorted(tenants, reverse=True):
        tenant = tenants[tenant_id]
        for name, domain in tenant.aliases.items():
            domains[name] = (tenant, domain)
    return RoutingState(tenants=dict(tenants), domains=domains)
