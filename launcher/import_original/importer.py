"""Read a tenant's whole configuration from the original system, plan what changes here, and (unless
it is a dry run) write it through this project's own REST API, so every validation, audit entry and
snapshot publish applies exactly as for a person using the UI.

Order: read everything from both sides first (a refused token or an unreachable URL stops the import
before anything is written), plan, print the plan, then write: domain, agents, groups with their
members, inbound rules. Objects are matched by the original's id kept here: agents carry it in
``metadata.original_id``, rules are named ``original #<id>``; groups and domains by their name (unique
per tenant on both sides).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from launcher.import_original import convert
from launcher.import_original.http import ImportFailure, JsonApi

CREATE, UPDATE, UNCHANGED, SKIP = "create", "update", "unchanged", "skip"


@dataclass
class Item:
    """One object of the plan."""

    kind: str  # domain | agent | group | rule
    original_id: int | str
    label: str
    action: str = CREATE
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)
    our_id: int | None = None
    # A rule's target in the original's ids, resolved to ours when written.
    target: tuple[str, int] | None = None


@dataclass
class Original:
    agents: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    members: dict[int, list[dict[str, Any]]]
    rules: list[dict[str, Any]] | None  # None: the route is not there
    settings: dict[str, Any] | None
    outbound_rules: list[dict[str, Any]] | None
    trunks: list[dict[str, Any]] | None


@dataclass
class Ours:
    user: dict[str, Any]
    agents: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    rules: list[dict[str, Any]]
    domains: list[dict[str, Any]]
    trunks: list[dict[str, Any]]
    outbound_rules: list[dict[str, Any]]


@dataclass
class Plan:
    tenant_id: int
    items: list[Item]
    notices: list[str]

    def counts(self) -> dict[str, int]:
        counts = {CREATE: 0, UPDATE: 0, UNCHANGED: 0, SKIP: 0}
        for item in self.items:
            counts[item.action] += 1
        counts["attention"] = sum(1 for i in self.items if i.attention) + len(self.notices)
        return counts

    @property
    def changes(self) -> int:
        return sum(1 for i in self.items if i.action in (CREATE, UPDATE))


# ---- reading --------------------------------------------------------------------------------------


async def read_original(api: JsonApi) -> Original:
    # The user route first: a refused token fails here with a clear message.
    await api.get_json("/api/user")
    agents = await api.list_all("/api/voice-agents") or []
    groups = await api.list_all("/api/agent-groups") or []
    members: dict[int, list[dict[str, Any]]] = {}
    for group in groups:
        inline = group.get("agents")
        if isinstance(inline, list):  # the README's shape: agents with a pivot
            members[int(group["id"])] = [
                {
                    "voice_agent_id": a["id"],
                    "priority": (a.get("pivot") or {}).get("priority"),
                    "capacity": (a.get("pivot") or {}).get("capacity"),
                }
                for a in inline
            ]
            continue
        body = await api.get_json(f"/api/agent-groups/{group['id']}/memberships")
        members[int(group["id"])] = list(body.get("data") or []) if isinstance(body, dict) else list(body)
    rules = await api.list_all("/api/inbound-routing-rules", optional=True)
    settings = await api.get_optional("/api/settings")
    outbound = await api.list_all("/api/outbound-routing-rules", optional=True)
    trunks = await api.list_all("/api/trunks", optional=True)
    return Original(
        agents=agents,
        groups=groups,
        members=members,
        rules=rules,
        settings=settings if isinstance(settings, dict) else None,
        outbound_rules=outbound,
        trunks=trunks,
    )


async def read_ours(api: JsonApi, tenant_id: int | None) -> Ours:
    user = await api.get_json("/api/user")
    if tenant_id is not None and int(user.get("tenant_id", -1)) != tenant_id:
        raise ImportFailure(
            f"the token given for this system belongs to tenant {user.get('tenant_id')}, not --tenant {tenant_id}"
        )
    if user.get("role") not in (None, "admin"):
        raise ImportFailure(
            f"{user.get('email')} is a {user.get('role')}; importing needs an admin of the tenant"
        )
    return Ours(
        user=user,
        agents=await api.list_all("/api/voice-agents") or [],
        groups=await api.list_all("/api/agent-groups") or [],
        rules=await api.list_all("/api/inbound-routing-rules") or [],
        domains=await api.list_all("/api/domains") or [],
        trunks=await api.list_all("/api/trunks") or [],
        outbound_rules=await api.list_all("/api/outbound-routing-rules") or [],
    )


# ---- planning -------------------------------------------------------------------------------------


def make_plan(original: Original, ours: Ours) -> Plan:
    items: list[Item] = []
    notices: list[str] = []
    items += _plan_domain(original, ours)
    agent_items = _plan_agents(original, ours)
    items += agent_items
    agent_ok = {int(i.original_id) for i in agent_items if i.action != SKIP}
    our_agent_ids = {int(i.original_id): i.our_id for i in agent_items if i.our_id is not None}
    group_items = _plan_groups(original, ours, agent_ok, our_agent_ids)
    items += group_items
    group_ok = {int(i.original_id) for i in group_items if i.action != SKIP}
    our_group_ids = {int(i.original_id): i.our_id for i in group_items if i.our_id is not None}
    if original.rules is None:
        notices.append(
            "the original answered 404 to GET /api/inbound-routing-rules (its routes/api.php does not register "
            "it, though its README documents it): no inbound rules imported; re-create them by hand"
        )
    else:
        items += _plan_rules(original.rules, ours, agent_ok, group_ok, our_agent_ids, our_group_ids)
        for a, b in convert.overlapping_ties(original.rules):
            notices.append(
                f"rules #{a} and #{b} have the same priority there and can match the same numbers: the "
                "original's order between them was whatever the database returned; imported in id order "
                f"(#{min(a, b)} first)"
            )
    if original.trunks is None or original.outbound_rules is None:
        notices.append(
            "the original answered 404 to GET /api/trunks or /api/outbound-routing-rules (its routes/api.php "
            "registers neither): trunks and outbound rules, if any, must be re-created by hand"
        )
    trunk_items, default_notes = _plan_trunks(original.trunks or [], ours)
    items += trunk_items
    notices += default_notes
    items += _plan_outbound(original.outbound_rules or [], original.trunks or [], ours, trunk_items)
    others = [r for r in ours.rules if convert.original_rule_id(r.get("name")) is None and r.get("enabled")]
    if others:
        notices.append(
            f"{len(others)} enabled inbound rule(s) here were not imported (e.g. #{others[0]['id']}, priority "
            f"{others[0]['priority']}); they are ordered with the imported ones (priorities 10, 20, ...)"
        )
    return Plan(tenant_id=int(ours.user["tenant_id"]), items=items, notices=notices)


def _plan_domain(original: Original, ours: Ours) -> list[Item]:
    domain = str((original.settings or {}).get("cloudonix_domain") or "").strip()
    if not domain:
        return []
    item = Item(kind="domain", original_id=domain, label=domain, body={"domain": domain})
    existing = next((d for d in ours.domains if d.get("domain") == domain), None)
    if existing:
        item.action, item.our_id = UNCHANGED, int(existing["id"])
    else:
        item.notes.append(
            "a new webhook key is generated here (printed once below): paste it into the domain's "
            "authorization-api-key in Cloudonix when you switch over"
        )
    return [item]


def _agent_original_id(agent: dict[str, Any]) -> int | None:
    value = (agent.get("metadata") or {}).get(convert.ORIGINAL_ID_KEY)
    return int(value) if isinstance(value, int) else None


def _plan_agents(original: Original, ours: Ours) -> list[Item]:
    by_original = {oid: a for a in ours.agents if (oid := _agent_original_id(a)) is not None}
    by_name = {a["name"]: a for a in ours.agents if _agent_original_id(a) is None}
    items = []
    seen_names: set[str] = set()
    for agent in sorted(original.agents, key=lambda a: int(a["id"])):
        conv = convert.convert_agent(agent)
        if conv.body is not None and conv.body["name"] in seen_names:
            # Names are unique per tenant here; the original did not insist.
            renamed = f"{conv.body['name'][:230]} (original #{agent['id']})"
            conv.notes.append(f"name {conv.body['name']!r} is used by an earlier agent there -> {renamed!r}")
            conv.body["name"] = renamed
        if conv.body is not None:
            seen_names.add(conv.body["name"])
        item = Item(
            kind="agent",
            original_id=int(agent["id"]),
            label=f"{agent.get('name')!r} ({agent.get('provider')})",
            notes=conv.notes,
            attention=conv.attention,
        )
        items.append(item)
        if conv.body is None:
            item.action = SKIP
            continue
        item.body = conv.body
        existing = by_original.get(int(item.original_id))
        if existing is None and conv.body["name"] in by_name:
            existing = by_name[conv.body["name"]]
            item.notes.append(f"matched by name to agent #{existing['id']}, which was not imported before")
        if existing is None:
            continue
        item.our_id = int(existing["id"])
        body = dict(conv.body)
        pending = convert.agent_requires_credentials(body["provider"])
        if pending:
            # Never overwrite credentials entered here, and never enable or re-disable the agent: once
            # someone entered credentials and enabled it, the original's flag decides only "off".
            body.pop("username", None)
            body.pop("password", None)
            body["enabled"] = bool(existing.get("enabled")) and bool(agent.get("enabled", True))
            if existing.get("enabled"):
                item.attention = [a for a in item.attention if not a.startswith("credentials to be entered")]
            meta = dict(body["metadata"])
            if convert.CREDENTIALS_KEY in (existing.get("metadata") or {}):
                meta[convert.CREDENTIALS_KEY] = existing["metadata"][convert.CREDENTIALS_KEY]
            else:
                meta.pop(convert.CREDENTIALS_KEY, None)
            body["metadata"] = meta
        patch = {k: v for k, v in body.items() if existing.get(k) != v}
        item.body = patch
        item.changes = sorted(patch)
        item.action = UPDATE if patch else UNCHANGED
    return items


def _plan_groups(
    original: Original, ours: Ours, agent_ok: set[int], our_agent_ids: Mapping[int, int]
) -> list[Item]:
    by_name = {g["name"]: g for g in ours.groups}
    items = []
    for group in sorted(original.groups, key=lambda g: int(g["id"])):
        members = original.members.get(int(group["id"]), [])
        conv = convert.convert_group(group, members)
        item = Item(
            kind="group",
            original_id=int(group["id"]),
            label=f"{group.get('name')!r} ({group.get('strategy')})",
            notes=conv.notes,
            attention=conv.attention,
        )
        items.append(item)
        assert conv.body is not None
        body = conv.body
        kept = [m for m in body["members"] if m["agent_id"] in agent_ok]
        for missing in [m for m in body["members"] if m["agent_id"] not in agent_ok]:
            item.attention.append(
                f"member agent #{missing['agent_id']} was not imported; left out of the group"
            )
        body["members"] = kept
        item.body = body
        existing = by_name.get(body["name"])
        if existing is None:
            continue
        item.our_id = int(existing["id"])
        changes = [k for k in ("strategy", "enabled") if existing.get(k) != body[k]]
        changes += [
            f"settings.{k}"
            for k, v in body["settings"].items()
            if (existing.get("settings") or {}).get(k) != v
        ]
        wanted = sorted(
            (our_agent_ids.get(m["agent_id"]) or -1, m["priority"], m["capacity"], m["weight"]) for m in kept
        )
        have = sorted(
            (m["agent_id"], m["priority"], m["capacity"], m["weight"]) for m in existing.get("members", [])
        )
        if wanted != have:
            changes.append("members")
        item.changes = changes
        item.action = UPDATE if changes else UNCHANGED
    return items


def _plan_rules(
    rules: list[dict[str, Any]],
    ours: Ours,
    agent_ok: set[int],
    group_ok: set[int],
    our_agent_ids: Mapping[int, int],
    our_group_ids: Mapping[int, int],
) -> list[Item]:
    by_original = {oid: r for r in ours.rules if (oid := convert.original_rule_id(r.get("name"))) is not None}
    items = []
    for rank, rule in enumerate(convert.order_rules(rules)):
        conv = convert.convert_rule(rule, rank)
        item = Item(
            kind="rule",
            original_id=int(rule["id"]),
            label=f"{rule.get('pattern')!r} -> {rule.get('target_type')} #{rule.get('target_id')}",
            notes=conv.notes,
            attention=conv.attention,
        )
        items.append(item)
        if conv.body is None:
            item.action = SKIP
            continue
        target_ok = group_ok if conv.body["target_type"] == "group" else agent_ok
        if conv.body["target_id"] not in target_ok:
            item.action = SKIP
            item.attention.append(
                f"its target {conv.body['target_type']} #{conv.body['target_id']} was not imported; rule not imported"
            )
            continue
        item.body = conv.body
        item.target = (conv.body["target_type"], conv.body["target_id"])
        existing = by_original.get(int(item.original_id))
        if existing is None:
            continue
        item.our_id = int(existing["id"])
        ids = our_group_ids if conv.body["target_type"] == "group" else our_agent_ids
        wanted = {**conv.body, "target_id": ids.get(conv.body["target_id"]) or -1}
        patch = {k: conv.body[k] for k, v in wanted.items() if existing.get(k) != v}
        for key in ("caller_pattern", "domain_id"):
            if existing.get(key) is not None:
                patch[key] = None
        if "target_id" in patch or "target_type" in patch:
            patch["target_type"] = conv.body["target_type"]
            patch["target_id"] = conv.body["target_id"]
        item.body = patch
        item.changes = sorted(patch)
        item.action = UPDATE if patch else UNCHANGED
    return items


def _plan_trunks(trunks: list[dict[str, Any]], ours: Ours) -> tuple[list[Item], list[str]]:
    by_ref = {t["cloudonix_trunk"]: t for t in ours.trunks}
    default_id, notices = convert.default_trunk_id(trunks)
    items = []
    for rank, trunk in enumerate(convert.order_trunks(trunks)):
        conv = convert.convert_trunk(trunk, rank, is_default=int(trunk["id"]) == default_id)
        item = Item(
            kind="trunk",
            original_id=int(trunk["id"]),
            label=f"{trunk.get('name')!r} ({convert.trunk_ref(trunk)})",
            notes=conv.notes,
            attention=conv.attention,
        )
        items.append(item)
        if conv.body is None:
            item.action = SKIP
            continue
        item.body = conv.body
        existing = by_ref.get(conv.body["cloudonix_trunk"])
        if existing is None:
            continue
        item.our_id = int(existing["id"])
        patch = {k: v for k, v in conv.body.items() if existing.get(k) != v}
        item.body = patch
        item.changes = sorted(patch)
        item.action = UPDATE if patch else UNCHANGED
    return items, notices


def _plan_outbound(
    rules: list[dict[str, Any]], trunks: list[dict[str, Any]], ours: Ours, trunk_items: list[Item]
) -> list[Item]:
    rank_of = {int(t["id"]): rank for rank, t in enumerate(convert.order_trunks(trunks))}
    imported = {int(i.original_id): i.our_id for i in trunk_items if i.action != SKIP}
    by_original = {
        oid: r for r in ours.outbound_rules if (oid := convert.original_rule_id(r.get("name"))) is not None
    }
    items = []
    for rank, rule in enumerate(sorted(rules, key=lambda r: int(r["id"]))):
        config = rule.get("trunk_config") if isinstance(rule.get("trunk_config"), dict) else {}
        listed = [int(t) for t in (config or {}).get("trunk_ids") or [] if isinstance(t, int)]
        kept = sorted((t for t in dict.fromkeys(listed) if t in imported), key=lambda t: rank_of[t])
        conv = convert.convert_outbound_rule(rule, rank, kept)
        item = Item(
            kind="outrule",
            original_id=int(rule["id"]),
            label=f"{rule.get('caller_id')!r} / {rule.get('destination_pattern')!r}",
            notes=conv.notes,
            attention=conv.attention,
        )
        items.append(item)
        missing = [t for t in listed if t not in imported]
        if missing:
            item.attention.append(f"trunk(s) {missing} were not imported; left out of the rule")
        if conv.body is None:
            item.action = SKIP
            continue
        item.body = conv.body
        existing = by_original.get(int(item.original_id))
        if existing is None:
            continue
        item.our_id = int(existing["id"])
        wanted = {**conv.body, "trunk_ids": [imported.get(t) or -1 for t in kept]}
        patch = {k: conv.body[k] for k, v in wanted.items() if existing.get(k) != v}
        for key in ("caller_id_override", "strip_prefix", "add_prefix"):
            if existing.get(key) is not None:
                patch[key] = None
        item.body = patch
        item.changes = sorted(patch)
        item.action = UPDATE if patch else UNCHANGED
    return items


# ---- printing -------------------------------------------------------------------------------------


def print_plan(plan: Plan, out: TextIO, *, dry_run: bool) -> None:
    title = "plan (dry run: nothing is changed)" if dry_run else "plan"
    out.write(f"{title} for tenant {plan.tenant_id}\n")
    for item in plan.items:
        detail = f": {', '.join(item.changes)}" if item.changes else ""
        ours = f" -> #{item.our_id}" if item.our_id else ""
        mark = "  (needs attention)" if item.attention else ""
        out.write(
            f"  {item.action:<10} {item.kind:<6} #{item.original_id} {item.label}{ours}{detail}{mark}\n"
        )
        for note in item.notes:
            out.write(f"      converted: {note}\n")
    attention = [(i, a) for i in plan.items for a in i.attention]
    if attention or plan.notices:
        out.write("needs attention:\n")
        for item, text in attention:
            out.write(f"  - {item.kind} #{item.original_id} {item.label}: {text}\n")
        for text in plan.notices:
            out.write(f"  - {text}\n")
    c = plan.counts()
    out.write(
        f"summary: {c[CREATE]} to create, {c[UPDATE]} to update, {c[UNCHANGED]} unchanged, "
        f"{c[SKIP]} not importable, {c['attention']} need attention\n"
    )
    out.flush()


# ---- writing --------------------------------------------------------------------------------------


async def apply_plan(plan: Plan, ours: JsonApi, out: TextIO, progress: Callable[[str], None]) -> None:
    agent_ids: dict[int, int] = {}
    group_ids: dict[int, int] = {}
    trunk_ids: dict[int, int] = {}
    todo = plan.changes
    done = 0

    def step(item: Item) -> None:
        nonlocal done
        done += 1
        progress(f"writing {done}/{todo}: {item.action} {item.kind} #{item.original_id}")

    for item in plan.items:
        if item.kind == "domain" and item.action == CREATE:
            step(item)
            made = await ours.write("POST", "/api/domains", item.body)
            item.our_id = int(made["id"])
            out.write(
                f"domain {made['domain']}: webhook key {made['webhook_key']} (shown once; Cloudonix "
                f"voice application URL {made['webhook_urls']['voice_application']})\n"
            )
        elif item.kind == "trunk" and item.action in (CREATE, UPDATE):
            step(item)
            if item.action == CREATE:
                made = await ours.write("POST", "/api/trunks", item.body)
                item.our_id = int(made["id"])
            else:
                await ours.write("PUT", f"/api/trunks/{item.our_id}", item.body)
        elif item.kind == "agent" and item.action in (CREATE, UPDATE):
            step(item)
            if item.action == CREATE:
                made = await ours.write("POST", "/api/voice-agents", item.body)
                item.our_id = int(made["id"])
            else:
                await ours.write("PATCH", f"/api/voice-agents/{item.our_id}", item.body)
        if item.kind == "agent" and item.our_id is not None:
            agent_ids[int(item.original_id)] = item.our_id
        if item.kind == "trunk" and item.our_id is not None:
            trunk_ids[int(item.original_id)] = item.our_id
    for item in plan.items:
        if item.kind != "group":
            continue
        if item.action in (CREATE, UPDATE):
            step(item)
            members = [{**m, "agent_id": agent_ids[m["agent_id"]]} for m in item.body["members"]]
            group = {k: v for k, v in item.body.items() if k != "members"}
            if item.action == CREATE:
                made = await ours.write("POST", "/api/agent-groups", group)
                item.our_id = int(made["id"])
            else:
                await ours.write("PATCH", f"/api/agent-groups/{item.our_id}", group)
            await ours.write("PUT", f"/api/agent-groups/{item.our_id}/members", {"members": members})
        if item.our_id is not None:
            group_ids[int(item.original_id)] = item.our_id
    for item in plan.items:
        if item.kind != "rule" or item.action not in (CREATE, UPDATE):
            continue
        step(item)
        body = dict(item.body)
        if "target_id" in body and item.target is not None:
            kind, original_target = item.target
            body["target_id"] = (group_ids if kind == "group" else agent_ids)[original_target]
        if item.action == CREATE:
            made = await ours.write("POST", "/api/inbound-routing-rules", body)
            item.our_id = int(made["id"])
        else:
            await ours.write("PUT", f"/api/inbound-routing-rules/{item.our_id}", body)
    for item in plan.items:
        if item.kind != "outrule" or item.action not in (CREATE, UPDATE):
            continue
        step(item)
        body = dict(item.body)
        if "trunk_ids" in body:
            body["trunk_ids"] = [trunk_ids[t] for t in body["trunk_ids"]]
        if item.action == CREATE:
            made = await ours.write("POST", "/api/outbound-routing-rules", body)
            item.our_id = int(made["id"])
        else:
            await ours.write("PUT", f"/api/outbound-routing-rules/{item.our_id}", body)
