"""The decision pipeline: from a parsed voice-application or dial-status request to the CXML answer.

Rule matching and answer rendering are local (precompiled tables, string concatenation); the one
await is the balancer's Redis script call, which also makes repeated webhooks idempotent.
"""

from __future__ import annotations

from typing import Any

import msgspec

from routing_engine import cxml
from routing_engine.balancer import AGENT_FAILURES, Balancer, DecideRequest
from routing_engine.rules import CompiledDomain, CompiledTarget, CompiledTenant, OutboundRoute
from routing_engine.webhooks import VoiceRequest
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


def _inbound_rule(
    tenant: CompiledTenant, domain: CompiledDomain, req: VoiceRequest
) -> InboundRuleSnap | None:
    return tenant.inbound.first_match(req.to_number, req.from_number, domain.id)


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


# Distinct (domain, base URL, attempt) renderings kept per target; more only when requests name many
# hosts (no VLB_ENGINE_PUBLIC_URL): then the cache starts over.
ANSWER_PARTS_KEPT = 64


def _answer_parts(
    target: CompiledTarget,
    domain: CompiledDomain,
    base_url: str,
    attempt: int,
    url_extra: str | None = None,
) -> tuple[tuple[str, str], ...]:
    """Per candidate, its answer (as if it were chosen) split where the caller id goes; ``url_extra``
    (an overflow group's: the rule's that took the call) defaults to the target's."""
    cache = target.answer_parts
    if url_extra is None:
        url_extra = target.url_extra
    key = (
        (domain.dial_status_path, base_url, attempt)
        if url_extra == target.url_extra
        else (
            domain.dial_status_path,
            base_url,
            attempt,
            url_extra,
        )
    )
    parts = cache.get(key)
    if parts is None:
        if len(cache) >= ANSWER_PARTS_KEPT:
            cache.clear()
        action = f"{base_url}{domain.dial_status_path}?attempt={attempt}&amp;{url_extra}agent="
        parts = cache[key] = tuple(
            cxml.agent_answer_parts(fragment, action + str(cand.agent_id), target.ring_timeout_s)
            for cand, fragment in zip(target.candidates, target.fragments, strict=True)
        )
    return parts


def _overflow(target: CompiledTarget, domain: CompiledDomain, base_url: str, attempt: int) -> tuple[Any, ...]:
    """settings.overflow as balancer.lua takes it (DecideRequest.overflow) for this attempt."""
    steps: list[Any] = []
    for kind, value in target.overflow:
        if kind == "group":
            g: CompiledTarget = value
            steps.append(
                DecideRequest(
                    tenant_id=0,
                    session="",
                    stage="app",
                    strategy=g.strategy,
                    group_id=g.group_id,
                    window_hours=g.window_hours,
                    max_attempts=g.max_attempts,
                    fallback_enabled=g.fallback_enabled,
                    candidates=g.candidates,
                    answers=_answer_parts(g, domain, base_url, attempt, target.url_extra),
                    no_agent=g.no_agent,
                    sticky_s=g.sticky_s,
                    rotate=g.rotate,
                    opts=g.opts,
                )
            )
        elif kind == "number":
            action = f"{base_url}{domain.dial_status_path}?attempt={attempt}&amp;{target.url_extra}agent="
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
    ) -> Decision:
        result = await self.balancer.decide(
            DecideRequest(
                tenant_id=tenant.tenant_id,
                session=req.session,
                stage=stage,
                strategy=target.strategy,
                group_id=target.group_id,
                window_hours=target.window_hours,
                max_attempts=target.max_attempts,
                fallback_enabled=target.fallback_enabled,
                candidates=target.candidates,
                answers=_answer_parts(target, domain, base_url, attempt),
                no_agent=target.no_agent,
                caller=cxml.caller_attr(cxml.escape(req.from_number)),
                failed_agent=failed_agent,
                from_number=sticky_caller(req.from_number) if target.sticky_s else "",
                sticky_s=target.sticky_s,
                rotate=target.rotate,
                fail_status=fail_status,
                opts=target.opts,
                overflow=_overflow(target, domain, base_url, attempt) if target.overflow else (),
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
        )

    async def voice(
        self, tenant: CompiledTenant, domain: CompiledDomain, req: VoiceRequest, base_url: str
    ) -> Decision:
        """The first request of a call."""
        direction = req.direction
        if direction and direction != "inbound" and direction not in INBOUND_CAPABLE:
            direction = "inbound"  # unknown directions are treated as the common case
        rule = _inbound_rule(tenant, domain, req)
        if rule is None:
            if direction in INBOUND_CAPABLE:
                return _outbound(tenant, req)
            return Decision(cxml=tenant.no_agent, outcome="no_route")
        split_target: str | None = None
        if tenant.inbound_splits and rule.targets:
            split = tenant.inbound_splits[rule.id]
            branch = split.pick(req.session)
            target = split.targets[branch]
            split_target = split.labels[branch]
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
            )
        return await self._choose(
            tenant, domain, req, rule, target, base_url, "app", 1, None, split_target=split_target
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
        if req.rule_id is not None:
            # The scheduled or split rule that took the call: its retries stay with it (and its branch)
            # even when its schedule has closed since.
            rule = tenant.pinned_rules.get(req.rule_id)
        if rule is None:
            rule = _inbound_rule(tenant, domain, req)
        target: CompiledTarget | None = None
        split_target: str | None = None
        if rule is not None:
            split = tenant.inbound_splits.get(rule.id) if rule.targets else None
            if split is not None:
                branch = req.branch
                if branch is None or not 0 <= branch < len(split.targets):
                    branch = split.pick(req.session)
                target = split.targets[branch]
                split_target = split.labels[branch]
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
        )
