"""The replay: load the tenant's current routing configuration and its recent inbound calls, apply
the draft (validated as the config API validates it, written nowhere), simulate both with
``shared.replay`` and compare. Reads only: no row is changed, no Redis key is touched."""

from __future__ import annotations

import datetime
import re
from typing import Any, TypeVar

import anyio.to_thread
import msgspec
from msgspec import UnsetType

from control_plane.db.models import (
    AgentGroup,
    AgentGroupMember,
    CallRecord,
    Domain,
    InboundRoutingRule,
    VoiceAgent,
)
from control_plane.errors import FieldError
from control_plane.groups.schemas import GroupCreateIn, GroupUpdateIn, MemberIn, MembersReplaceIn
from control_plane.groups.service import parse_settings
from control_plane.replay.schemas import (
    SAMPLE_SIZE,
    AgentCount,
    ChangedCall,
    Count,
    GroupCount,
    Outcome,
    ReplayIn,
    ReplayOut,
    RuleCount,
)
from control_plane.routing import service as rules
from control_plane.routing.schemas import InboundRuleCreateIn, InboundRuleUpdateIn
from control_plane.snapshots.compile import inbound_rule_snap
from control_plane.tenancy import TenantScope
from shared.enums import Strategy, TargetType
from shared.replay import ReplayCall, ReplayOutcome, replay
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

T = TypeVar("T")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
NOTES = [
    "outlier ejection is not simulated (the records hold no dial outcome per simulated agent)",
    "only each call's first decision is simulated: no fallback attempts after a failed dial",
    "counters start empty for both runs: live window counts, rotation pointers and stickiness of "
    "before the first replayed call are not used",
]


def _convert(raw: Any, kind: type[T], where: str) -> T:
    """``raw`` as ``kind`` or a 422 naming ``where.<field>``."""
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = where
        if "$." in message:
            field += "." + message.split("$.", 1)[1].rstrip("`")
        if unknown := _UNKNOWN_FIELD.search(message):
            field += "." + unknown.group(1)
        raise FieldError((field, message)) from exc


def _errors(exc: FieldError) -> list[dict[str, str]]:
    extra = exc.extra
    return [e for e in extra if isinstance(e, dict)] if isinstance(extra, list) else []


def _prefixed(exc: FieldError, where: str) -> FieldError:
    return FieldError(*[(f"{where}.{e['field']}", e["message"]) for e in _errors(exc)])


def _split_item(raw: Any, where: str) -> tuple[int | None, bool, dict[str, Any]]:
    """(id, delete, the other fields) of a draft item."""
    if not isinstance(raw, dict):
        raise FieldError((where, "Expected `object`"))
    body = dict(raw)
    item_id = body.pop("id", None)
    delete = body.pop("delete", False)
    if item_id is not None and (not isinstance(item_id, int) or isinstance(item_id, bool) or item_id < 1):
        raise FieldError((f"{where}.id", "Expected `int` >= 1"))
    if not isinstance(delete, bool):
        raise FieldError((f"{where}.delete", "Expected `bool`"))
    if delete and item_id is None:
        raise FieldError((f"{where}.delete", "only an item with an id can be deleted"))
    return item_id, delete, body


async def _current(scope: TenantScope) -> TenantSnapshot:
    s = scope.session

    async def rows(model: Any) -> list[Any]:
        return list((await s.scalars(scope.select(model).order_by(model.id))).all())

    agents = await rows(VoiceAgent)
    groups = await rows(AgentGroup)
    members = await rows(AgentGroupMember)
    inbound = await rows(InboundRoutingRule)
    by_group: dict[int, list[MemberSnap]] = {}
    for m in members:
        by_group.setdefault(m.group_id, []).append(
            MemberSnap(agent_id=m.agent_id, priority=m.priority, capacity=m.capacity, weight=m.weight)
        )
    group_snaps = []
    for g in groups:
        try:
            strategy = Strategy(g.strategy)
            known = {f.name for f in msgspec.structs.fields(GroupSettings)}
            settings = msgspec.convert(
                {k: v for k, v in (g.settings or {}).items() if k in known}, GroupSettings, strict=False
            )
        except (ValueError, msgspec.ValidationError):
            continue  # as the snapshot compiler: left out of routing
        group_snaps.append(
            GroupSnap(
                id=g.id,
                name=g.name,
                strategy=strategy,
                enabled=g.enabled,
                settings=settings,
                members=by_group.get(g.id, []),
            )
        )
    return TenantSnapshot(
        tenant_id=scope.tenant_id,
        version=0,
        compiled_at=0.0,
        agents=[
            AgentSnap(id=a.id, name=a.name, provider=a.provider, service_value="", enabled=a.enabled)
            for a in agents
        ],
        groups=group_snaps,
        inbound_rules=[inbound_rule_snap(r) for r in inbound],
    )


async def _members(scope: TenantScope, raw: Any, where: str, agent_ids: set[int]) -> list[MemberSnap]:
    parsed = _convert({"members": raw}, MembersReplaceIn, where[: -len(".members")]).members
    seen: set[int] = set()
    out = []
    for j, m in enumerate(parsed):
        if m.agent_id not in agent_ids:
            raise FieldError((f"{where}[{j}].agent_id", f"voice agent {m.agent_id} does not exist"))
        if m.agent_id in seen:
            raise FieldError((f"{where}[{j}].agent_id", f"agent {m.agent_id} is listed twice"))
        seen.add(m.agent_id)
        out.append(_member_snap(m))
    return out


def _member_snap(m: MemberIn) -> MemberSnap:
    return MemberSnap(agent_id=m.agent_id, priority=m.priority, capacity=m.capacity, weight=m.weight)


def _settings(raw: dict[str, Any], where: str) -> GroupSettings:
    try:
        return parse_settings(raw)
    except FieldError as exc:
        raise _prefixed(exc, where) from exc


async def _draft_groups(
    scope: TenantScope, current: TenantSnapshot, items: list[dict[str, Any]], names: dict[int, str]
) -> list[GroupSnap]:
    groups = {g.id: g for g in current.groups}
    stored = {g.id: g for g in (await scope.session.scalars(scope.select(AgentGroup))).all()}
    agent_ids = {a.id for a in current.agents}
    new_id = 0
    for i, raw in enumerate(items):
        where = f"config.groups[{i}]"
        item_id, delete, body = _split_item(raw, where)
        members_raw = body.pop("members", None)
        if item_id is not None and item_id not in stored:
            raise FieldError((f"{where}.id", f"agent group {item_id} does not exist"))
        if delete:
            groups.pop(item_id, None)  # type: ignore[arg-type]
            continue
        if item_id is None:
            data = _convert(body, GroupCreateIn, where)
            if not data.name.strip():
                raise FieldError((f"{where}.name", "name must not be blank"))
            new_id -= 1
            names[new_id] = data.name.strip()
            members = (
                await _members(scope, members_raw, f"{where}.members", agent_ids)
                if members_raw is not None
                else []
            )
            groups[new_id] = GroupSnap(
                id=new_id,
                name=data.name.strip(),
                strategy=data.strategy,
                enabled=data.enabled,
                settings=_settings(data.settings, where),
                members=members,
            )
            continue
        update = _convert(body, GroupUpdateIn, where)
        row = stored[item_id]
        base = groups.get(item_id) or GroupSnap(id=item_id, name=row.name, strategy=Strategy.LOAD_BALANCED)
        changes: dict[str, Any] = {}
        if not isinstance(update.name, UnsetType):
            if not update.name.strip():
                raise FieldError((f"{where}.name", "name must not be blank"))
            changes["name"] = update.name.strip()
            names[item_id] = changes["name"]
        if not isinstance(update.strategy, UnsetType):
            changes["strategy"] = update.strategy
        if not isinstance(update.enabled, UnsetType):
            changes["enabled"] = update.enabled
        if not isinstance(update.settings, UnsetType):
            changes["settings"] = _settings({**(row.settings or {}), **update.settings}, where)
        if members_raw is not None:
            changes["members"] = await _members(scope, members_raw, f"{where}.members", agent_ids)
        groups[item_id] = msgspec.structs.replace(base, **changes)
    return list(groups.values())


async def _draft_rules(
    scope: TenantScope, current: TenantSnapshot, items: list[dict[str, Any]], new_groups: int
) -> list[InboundRuleSnap]:
    rules_by_id = {r.id: r for r in current.inbound_rules}
    new_id = 0
    for i, raw in enumerate(items):
        where = f"config.inbound_rules[{i}]"
        item_id, delete, body = _split_item(raw, where)
        if item_id is not None and item_id not in rules_by_id:
            raise FieldError((f"{where}.id", f"inbound routing rule {item_id} does not exist"))
        if delete:
            rules_by_id.pop(item_id, None)  # type: ignore[arg-type]
            continue
        # a new draft group as the target: target_id -1, -2, …
        draft_target: int | None = None
        tid = body.get("target_id")
        if isinstance(tid, int) and not isinstance(tid, bool) and tid < 0:
            if body.get("target_type") != TargetType.GROUP.value or -tid > new_groups:
                raise FieldError(
                    (f"{where}.target_id", f"{tid} names no new group of config.groups (-1 is the first)")
                )
            draft_target = tid
            body = {**body, "target_id": 1}
        try:
            if item_id is None:
                snap = await _new_rule(scope, _convert(body, InboundRuleCreateIn, where), draft_target)
                new_id -= 1
                rules_by_id[new_id] = msgspec.structs.replace(snap, id=new_id)
            else:
                update = _convert(body, InboundRuleUpdateIn, where)
                rules_by_id[item_id] = await _changed_rule(scope, rules_by_id[item_id], update, draft_target)
        except FieldError as exc:
            if any(str(e.get("field", "")).startswith("config.") for e in _errors(exc)):
                raise
            raise _prefixed(exc, where) from exc
    return list(rules_by_id.values())


async def _target(scope: TenantScope, target_type: str, target_id: int, draft: int | None) -> int:
    if draft is not None:
        return draft
    if await rules.target_name(scope, target_type, target_id) is None:
        label = "voice agent" if target_type == TargetType.AGENT else "agent group"
        raise FieldError(("target_id", f"{label} {target_id} does not exist"))
    return target_id


async def _domain(scope: TenantScope, domain_id: int | None) -> None:
    if domain_id is not None and await scope.find(Domain, domain_id) is None:
        raise FieldError(("domain_id", f"domain {domain_id} does not exist"))


async def _new_rule(scope: TenantScope, data: InboundRuleCreateIn, draft: int | None) -> InboundRuleSnap:
    pattern = rules.check_pattern("pattern", data.pattern, required=True)
    assert pattern is not None
    caller = rules.check_pattern("caller_pattern", data.caller_pattern, required=False)
    schedule = rules.check_schedule(data.schedule)
    targets: list[SplitTarget] = []
    if data.targets:
        if data.target_type is not None or data.target_id is not None:
            raise FieldError(
                ("targets", "give either targets (a split) or target_type and target_id, not both")
            )
        targets = msgspec.convert(await rules.check_targets(scope, data.targets), list[SplitTarget])
        target_type, target_id = targets[0].target_type, targets[0].target_id
    else:
        if data.target_type is None:
            raise FieldError(("target_type", "target_type is required (or targets, for a split)"))
        if data.target_id is None:
            raise FieldError(("target_id", "target_id is required (or targets, for a split)"))
        target_type = data.target_type
        target_id = await _target(scope, data.target_type.value, data.target_id, draft)
    await _domain(scope, data.domain_id)
    return InboundRuleSnap(
        id=0,
        name=(data.name or "").strip() or None,
        pattern=pattern,
        caller_pattern=caller,
        target_type=target_type,
        target_id=target_id,
        priority=data.priority,
        enabled=data.enabled,
        domain_id=data.domain_id,
        schedule=msgspec.convert(schedule, RuleSchedule) if schedule is not None else None,
        targets=targets,
    )


async def _changed_rule(
    scope: TenantScope, rule: InboundRuleSnap, data: InboundRuleUpdateIn, draft: int | None
) -> InboundRuleSnap:
    c: dict[str, Any] = {}
    if not isinstance(data.pattern, UnsetType):
        c["pattern"] = rules.check_pattern("pattern", data.pattern, required=True) or rule.pattern
    if not isinstance(data.caller_pattern, UnsetType):
        c["caller_pattern"] = rules.check_pattern("caller_pattern", data.caller_pattern, required=False)
    if not isinstance(data.name, UnsetType):
        c["name"] = (data.name or "").strip() or None
    if not isinstance(data.schedule, UnsetType):
        schedule = rules.check_schedule(data.schedule)
        c["schedule"] = msgspec.convert(schedule, RuleSchedule) if schedule is not None else None
    one_target = not isinstance(data.target_type, UnsetType) or not isinstance(data.target_id, UnsetType)
    if not isinstance(data.targets, UnsetType) and data.targets:
        if one_target:
            raise FieldError(
                ("targets", "give either targets (a split) or target_type and target_id, not both")
            )
        targets = msgspec.convert(await rules.check_targets(scope, data.targets), list[SplitTarget])
        c.update(targets=targets, target_type=targets[0].target_type, target_id=targets[0].target_id)
    else:
        if isinstance(data.targets, UnsetType) and rule.targets and one_target:
            raise FieldError(
                ("targets", "this rule splits traffic: set targets to null to send it to one target")
            )
        if not isinstance(data.targets, UnsetType):
            c["targets"] = []
        if one_target:
            target_type = rule.target_type if isinstance(data.target_type, UnsetType) else data.target_type
            target_id = rule.target_id if isinstance(data.target_id, UnsetType) else data.target_id
            c["target_type"] = target_type
            c["target_id"] = await _target(scope, target_type.value, target_id, draft)
    if not isinstance(data.domain_id, UnsetType):
        await _domain(scope, data.domain_id)
        c["domain_id"] = data.domain_id
    if not isinstance(data.priority, UnsetType):
        c["priority"] = data.priority
    if not isinstance(data.enabled, UnsetType):
        c["enabled"] = data.enabled
    return msgspec.structs.replace(rule, **c)


async def _calls(scope: TenantScope, limit: int) -> list[ReplayCall]:
    stmt = (
        scope.select(CallRecord)
        .where(CallRecord.direction == "inbound", CallRecord.start_time.is_not(None))
        .order_by(CallRecord.start_time.desc(), CallRecord.id.desc())
        .limit(limit)
    )
    records = list((await scope.session.scalars(stmt)).all())
    domains = {d.name.lower(): d.id for d in (await scope.session.scalars(scope.select(Domain))).all()}
    now = datetime.datetime.now(datetime.UTC).timestamp()
    calls = []
    for r in records:
        assert r.start_time is not None
        start = r.start_time.timestamp()
        if r.end_time is not None:
            end = r.end_time.timestamp()
        elif r.duration is not None:
            end = start + r.duration
        else:
            end = now  # still live, or never closed: holds its agent until now
        calls.append(
            ReplayCall(
                session_token=r.session_token,
                from_number=r.from_number or "",
                to_number=r.to_number or "",
                domain_id=domains.get((r.domain or "").lower()),
                start=start,
                end=max(start, end),
            )
        )
    return calls


def _count(before: int, after: int) -> Count:
    return Count(before=before, after=after, change=after - before)


def _outcome(o: ReplayOutcome) -> Outcome:
    return Outcome(rule_id=o.rule_id, group_id=o.group_id, agent_id=o.agent_id, split_target=o.split_target)


async def run(scope: TenantScope, data: ReplayIn) -> ReplayOut:
    current = await _current(scope)
    group_names: dict[int, str] = {g.id: g.name for g in current.groups}
    groups = await _draft_groups(scope, current, data.config.groups, group_names)
    inbound = await _draft_rules(
        scope, current, data.config.inbound_rules, sum(1 for g in groups if g.id < 0)
    )
    _check_deleted_groups(data, {g.id for g in current.groups} - {g.id for g in groups}, inbound)
    draft = msgspec.structs.replace(current, groups=groups, inbound_rules=inbound)
    calls = await _calls(scope, data.last_calls)
    # CPU work (about a second per 10,000 calls): off the event loop.
    before, after = await anyio.to_thread.run_sync(_both, current, draft, calls)

    agents: dict[int, list[int]] = {}
    per_group: dict[int, list[int]] = {}
    per_rule: dict[int, list[int]] = {}
    no_agent = [0, 0]
    no_rule = [0, 0]
    for side, outcomes in ((0, before), (1, after)):
        for o in outcomes:
            if o.agent_id is not None:
                agents.setdefault(o.agent_id, [0, 0])[side] += 1
            else:
                no_agent[side] += 1
            if o.group_id is not None:
                per_group.setdefault(o.group_id, [0, 0])[side] += 1
            if o.rule_id is not None:
                per_rule.setdefault(o.rule_id, [0, 0])[side] += 1
            else:
                no_rule[side] += 1
    changed = [i for i in range(len(calls)) if before[i] != after[i]]
    changed.sort(key=lambda i: (calls[i].start, calls[i].session_token))
    agent_names = {a.id: a.name for a in current.agents}
    rule_names = {r.id: r.name for r in [*current.inbound_rules, *inbound]}
    starts = [c.start for c in calls]
    return ReplayOut(
        calls=len(calls),
        first_start=_ts(min(starts)) if starts else None,
        last_start=_ts(max(starts)) if starts else None,
        changed=len(changed),
        no_agent=_count(*no_agent),
        no_rule=_count(*no_rule),
        agents=[
            AgentCount(agent_id=a, name=agent_names.get(a), before=b, after=f, change=f - b)
            for a, (b, f) in sorted(agents.items())
        ],
        groups=[
            GroupCount(group_id=g, name=group_names.get(g), before=b, after=f, change=f - b)
            for g, (b, f) in sorted(per_group.items())
        ],
        rules=[
            RuleCount(rule_id=r, name=rule_names.get(r), before=b, after=f, change=f - b)
            for r, (b, f) in sorted(per_rule.items())
        ],
        sample=[
            ChangedCall(
                session_token=calls[i].session_token,
                start_time=_ts(calls[i].start),
                before=_outcome(before[i]),
                after=_outcome(after[i]),
            )
            for i in changed[:SAMPLE_SIZE]
        ],
        notes=NOTES,
    )


def _check_deleted_groups(data: ReplayIn, deleted: set[int], inbound: list[InboundRuleSnap]) -> None:
    """A group the draft deletes must not be a target of a draft rule (the API answers 409 then)."""
    if not deleted:
        return
    for i, raw in enumerate(data.config.groups):
        gid = raw.get("id") if isinstance(raw, dict) else None
        if gid not in deleted:
            continue
        users = sorted(
            r.id
            for r in inbound
            if (r.target_type == TargetType.GROUP and r.target_id == gid and not r.targets)
            or any(t.target_type == TargetType.GROUP and t.target_id == gid for t in r.targets)
        )
        if users:
            raise FieldError(
                (
                    f"config.groups[{i}].delete",
                    f"agent group {gid} is the target of inbound rules {users}: change or delete them in "
                    "the draft too",
                )
            )


def _both(
    current: TenantSnapshot, draft: TenantSnapshot, calls: list[ReplayCall]
) -> tuple[list[ReplayOutcome], list[ReplayOutcome]]:
    return replay(current, calls), replay(draft, calls)


def _ts(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)
