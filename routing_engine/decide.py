"""The decision pipeline: from a parsed voice-application or dial-status request to the CXML answer.

Rule matching and answer rendering are local (precompiled tables, string concatenation); the one
await is the balancer's Redis script call, which also makes repeated webhooks idempotent.
"""

from __future__ import annotations

from typing import Any

import msgspec

from routing_engine import cxml
from routing_engine.balancer import AGENT_FAILURES, Balancer, DecideRequest, pack_target
from routing_engine.rules import CompiledDomain, CompiledTarget, CompiledTenant, OutboundRoute
from routing_engine.webhooks import VoiceRequest
from shared.events import DecisionTrace
from shared.routing import normalize_number
from shared.snapshot import InboundRuleSnap

DIAL_ENDED = frozenset({"completed", "answered"})
DIAL_FAILED = frozenset({"busy", "no-answer", "noanswer", "failed", "canceled", "cancelled", "unknown"})
# Directions that may also be routed by inbound rules when the called number matches one.
INBOUND_CAPABLE = frozenset({"subscriber", "outbound-api"})


class Decision(msgspec.Struct, kw_only=True, gc=False):
    cxml: str
    outcome: str  # routed | no_agent | no_route | outbound | ended | released
    strategy: str = ""
    stage: str = "app"
    rule_id: int | None = None
    group_id: int | None = None
    agent_id: int | None = None
    attempt: int | None = None
    replay: bool = False
    degraded: bool = False
    split_target: str | None = None  # the traffic-split branch taken ("group:<id>" | "agent:<id>")
    # the kind of settings.overflow step that answered ("group" | "number" | "announcement"), and its
    # 1-based index in the flattened chain
    overflow_step: str | None = None
    overflow_index: int | None = None
    trace: DecisionTrace | None = None  # how it was chosen (explained decisions); None for a replay


def _inbound_rule(
    tenant: CompiledTenant, domain: CompiledDomain, req: VoiceRequest
) -> tuple[InboundRuleSnap | None, str]:
    """The rule that takes the call, and the scheduled rules that matched but were closed
    (DecisionTrace.rules_skipped)."""
    table = tenant.inbound
    if not table.scheduled:
        return table.first_match(req.to_number, req.from_number, domain.id), ""
    skipped: list[InboundRuleSnap] = []
    rule = table.first_match(req.to_number, req.from_number, domain.id, skipped=skipped)
    return rule, ",".join(f"{r.id}:s" for r in skipped)


def _outbound(tenant: CompiledTenant, req: VoiceRequest) -> Decision:
    rule = tenant.outbound.first_match(req.to_number, req.from_number)
    route: OutboundRoute | None = tenant.outbound_routes.get(rule.id) if rule is not None else None
    if route is None or not route.trunks:
        route = tenant.default_route
    if route is None:
        return Decision(cxml=tenant.no_agent, outcome="no_route", strategy="outbound")
    answer = cxml.outbound_answer(
        route.caller_id_override or req.from_number, route.trunks, route.dial_number(req.to_number)
    )
    return Decision(cxml=answer, outcome="outbound", strategy="outbound", rule_id=route.rule_id)


# The longest caller number a stickiness key holds (longer ones are cut: still one key per caller).
STICKY_CALLER_MAX = 64


def sticky_caller(from_number: str) -> str:
    """The caller as a stickiness key part: the normalised number (SPEC §2.4), at most 64 chars."""
    return normalize_number(from_number)[:STICKY_CALLER_MAX] if from_number else ""


# Distinct (domain, base URL, attempt, url_extra) renderings kept per target; more only when requests
# name many hosts (no VLB_ENGINE_PUBLIC_URL): then the cache starts over.
ANSWER_PARTS_KEPT = 64


def _action(base_url: str, domain: CompiledDomain, attempt: int, url_extra: str) -> str:
    """The dial-status URL of an attempt (escaped for an attribute), up to its ``agent=`` value."""
    return f"{base_url}{domain.dial_status_path}?attempt={attempt}&amp;{url_extra}agent="


def _rendered(
    target: CompiledTarget,
    domain: CompiledDomain,
    base_url: str,
    attempt: int,
    url_extra: str | None = None,
) -> DecideRequest:
    """The target's request template for this rendering: per candidate its answer (as if it were
    chosen) split where the caller id goes, the overflow chain rendered, and the whole target packed
    for the script (balancer.pack_target), all made once and kept in the target. ``url_extra`` (an
    overflow group's: the rule's that took the call) defaults to the target's. Per decision only the
    call's own fields are filled in (``msgspec.structs.replace``)."""
    if url_extra is None:
        url_extra = target.url_extra
    cache = target.rendered
    key = (domain.dial_status_path, base_url, attempt, url_extra)
    template = cache.get(key)
    if template is None:
        if len(cache) >= ANSWER_PARTS_KEPT:
            cache.clear()
        action = _action(base_url, domain, attempt, url_extra)
        answers = tuple(
            cxml.agent_answer_parts(fragment, action + str(cand.agent_id), target.ring_timeout_s)
            for cand, fragment in zip(target.candidates, target.fragments, strict=True)
        )
        template = DecideRequest(
            tenant_id=0,
            session="",
            stage="app",
            strategy=target.strategy,
            group_id=target.group_id,
            window_hours=target.window_hours,
            max_attempts=target.max_attempts,
            fallback_enabled=target.fallback_enabled,
            candidates=target.candidates,
            answers=answers,
            no_agent=target.no_agent,
            sticky_s=target.sticky_s,
            rotate=target.rotate,
            opts=target.opts,
            overflow=_overflow(target, domain, base_url, attempt, url_extra) if target.overflow else (),
        )
        template = cache[key] = msgspec.structs.replace(template, packed=pack_target(template))
    return template


def _overflow(
    target: CompiledTarget, domain: CompiledDomain, base_url: str, attempt: int, url_extra: str
) -> tuple[Any, ...]:
    """settings.overflow as balancer.lua takes it (DecideRequest.overflow) for this rendering."""
    steps: list[Any] = []
    for kind, value in target.overflow:
        if kind == "group":
            steps.append(_rendered(value, domain, base_url, attempt, url_extra))
        elif kind == "number":
            action = _action(base_url, domain, attempt, url_extra)
            steps.append("N" + cxml.number_answer(value, action, target.ring_timeout_s))
        else:
            steps.append("A" + value)
    return tuple(steps)


class Decider:
    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer

    async def _choose(
        self,
        tenant: CompiledTenant,
        domain: CompiledDomain,
        req: VoiceRequest,
        rule: InboundRuleSnap,
        target: CompiledTarget,
        base_url: str,
        stage: str,
        attempt: int,
        failed_agent: int | None,
        fail_status: str = "",
        split_target: str | None = None,
        rules_skipped: str = "",
        branches: str = "",
    ) -> Decision:
        result = await self.balancer.decide(
            msgspec.structs.replace(
                _rendered(target, domain, base_url, attempt),
                tenant_id=tenant.tenant_id,
                session=req.session,
                stage=stage,
                caller=cxml.caller_attr(cxml.escape(req.from_number)),
                failed_agent=failed_agent,
                from_number=sticky_caller(req.from_number) if target.sticky_s else "",
                fail_status=fail_status,
            )
        )
        text = result.cxml
        group_id = target.group_id or None
        overflow_step: str | None = None
        if result.overflow_step:
            kind, value = target.overflow[result.overflow_step - 1]
            overflow_step = kind
            if kind == "group":
                group_id = value.group_id
        if cxml.SECRET_MARK in text:  # an agent with credentials: Redis kept a mark for them
            text = cxml.fill_secrets(text, tenant.secrets)
        # a number step is dialled like an agent (routed, no agent id); an announcement ends the call
        outcome = "routed" if result.agent_id is not None or overflow_step == "number" else "no_agent"
        return Decision(
            cxml=text,
            outcome=outcome,
            strategy=target.strategy,
            stage=stage,
            rule_id=rule.id,
            group_id=group_id,
            agent_id=result.agent_id,
            attempt=result.attempt,
            replay=result.replay,
            degraded=result.degraded,
            split_target=split_target,
            overflow_step=overflow_step,
            overflow_index=result.overflow_step or None,
            trace=None
            if result.replay
            else DecisionTrace(
                members=target.trace_members,
                codes=result.trace,
                excluded=target.trace_excluded,
                rules_skipped=rules_skipped,
                branches=branches,
            ),
        )

    async def voice(
        self, tenant: CompiledTenant, domain: CompiledDomain, req: VoiceRequest, base_url: str
    ) -> Decision:
        """The first request of a call."""
        direction = req.direction
        if direction and direction != "inbound" and direction not in INBOUND_CAPABLE:
            direction = "inbound"  # unknown directions are treated as the common case
        rule, rules_skipped = _inbound_rule(tenant, domain, req)
        if rule is None:
            if direction in INBOUND_CAPABLE:
                return _outbound(tenant, req)
            return Decision(
                cxml=tenant.no_agent,
                outcome="no_route",
                trace=DecisionTrace(members="", codes="", rules_skipped=rules_skipped)
                if rules_skipped
                else None,
            )
        split_target: str | None = None
        branches = ""
        if tenant.inbound_splits and rule.targets:
            split = tenant.inbound_splits[rule.id]
            branch = split.pick(req.session)
            target = split.targets[branch]
            split_target = split.labels[branch]
            branches = split.branches
        else:
            target = tenant.inbound_targets.get(rule.id)
        if target is None or not (target.candidates or target.overflow):
            no_agent = target.no_agent if target is not None else tenant.no_agent
            return Decision(
                cxml=no_agent,
                outcome="no_agent",
                rule_id=rule.id,
                strategy=target.strategy if target is not None else "",
                split_target=split_target,
                trace=DecisionTrace(
                    members="",
                    codes="",
                    excluded=target.trace_excluded if target is not None else "",
                    rules_skipped=rules_skipped,
                    branches=branches,
                ),
            )
        return await self._choose(
            tenant,
            domain,
            req,
            rule,
            target,
            base_url,
            "app",
            1,
            None,
            split_target=split_target,
            rules_skipped=rules_skipped,
            branches=branches,
        )

    async def dial_status(
        self, tenant: CompiledTenant, domain: CompiledDomain, req: VoiceRequest, base_url: str
    ) -> Decision:
        """The ``<Dial action>`` callback of attempt ``req.attempt``."""
        status = req.dial_call_status or ""
        stage = f"dial-{req.attempt}"
        if status in DIAL_ENDED:
            if status == "completed":
                # The agent leg is over; "answered" may still be live, so its slot stays held.
                await self.balancer.release(tenant.tenant_id, req.session, reason=status)
            return Decision(
                cxml=cxml.HANGUP, outcome="ended", stage=stage, agent_id=req.agent_id, attempt=req.attempt
            )
        rule: InboundRuleSnap | None = None
        rules_skipped = ""
        if req.rule_id is not None:
            # The scheduled or split rule that took the call: its retries stay with it (and its branch)
            # even when its schedule has closed since.
            rule = tenant.pinned_rules.get(req.rule_id)
        if rule is None:
            rule, rules_skipped = _inbound_rule(tenant, domain, req)
        target: CompiledTarget | None = None
        split_target: str | None = None
        branches = ""
        if rule is not None:
            split = tenant.inbound_splits.get(rule.id) if rule.targets else None
            if split is not None:
                branch = req.branch
                if branch is None or not 0 <= branch < len(split.targets):
                    branch = split.pick(req.session)
                target = split.targets[branch]
                split_target = split.labels[branch]
                branches = split.branches
            else:
                target = tenant.inbound_targets.get(rule.id)
        may_retry = (
            status in DIAL_FAILED
            and rule is not None
            and target is not None
            and target.fallback_enabled
            and req.attempt < target.max_attempts
            and (target.candidates or target.overflow)
        )
        if may_retry:
            assert rule is not None
            assert target is not None
            return await self._choose(
                tenant,
                domain,
                req,
                rule,
                target,
                base_url,
                stage,
                req.attempt + 1,
                req.agent_id,
                AGENT_FAILURES.get(status, ""),
                split_target=split_target,
                rules_skipped=rules_skipped,
                branches=branches,
            )
        failure = AGENT_FAILURES.get(status)
        # A failed dial that is not retried still counts against its agent (settings.outlier).
        outcome = (
            f"f:{failure}:{req.agent_id or ''}" if failure and target is not None and target.opts else ""
        )
        await self.balancer.release(
            tenant.tenant_id, req.session, reason=status or "unknown", outcome=outcome
        )
        return Decision(
            cxml=target.no_agent if target is not None else tenant.no_agent,
            outcome="no_agent",
            strategy=target.strategy if target is not None else "",
            stage=stage,
            rule_id=rule.id if rule is not None else None,
            group_id=(target.group_id or None) if target is not None else None,
            attempt=req.attempt,
            split_target=split_target,
            trace=_stopped(target, req.attempt, status, rules_skipped, branches),
        )


def _stopped(
    target: CompiledTarget | None, attempt: int, status: str, rules_skipped: str, branches: str
) -> DecisionTrace | None:
    """The trace of a failed dial that is not retried: why no candidate was looked at."""
    if target is None or status not in DIAL_FAILED:
        return None
    if not target.fallback_enabled:
        codes = "!F"
    elif attempt >= target.max_attempts:
        codes = "!M"
    else:  # nothing left to try (no candidate, no overflow)
        codes = ""
    return DecisionTrace(
        members=target.trace_members,
        codes=codes,
        excluded=target.trace_excluded,
        rules_skipped=rules_skipped,
        branches=branches,
    )
