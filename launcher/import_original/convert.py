"""The original system's meaning, converted to this project's (pure functions, no I/O).

Every difference found in the original's code (greenfieldtech-nirs/cloudonix-voiceagent-lbs,
``backend/app``) that changes what a call does is handled here and described in docs/migrating.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from shared.providers import PROVIDERS, validate_agent
from shared.routing import PatternError, compile_pattern

# Where imported objects keep the original's id (agents) or how they are named (rules).
ORIGINAL_ID_KEY = "original_id"
CREDENTIALS_KEY = "credentials"
CREDENTIALS_PENDING = "to be entered"
# Satisfies our "this provider requires credentials" check for an agent imported disabled; the real
# values are entered in the UI (the original's API never returns them).
PLACEHOLDER_CREDENTIAL = "to-be-entered"
RULE_NAME_PREFIX = "original #"
_RULE_NAME = re.compile(r"^original #(\d+)$")
# Our rule priorities: the original's order (priority descending, then id) as 10, 20, 30, ...
RULE_PRIORITY_STEP = 10
ORIGINAL_MEMBER_PRIORITY_DEFAULT = 50
ORIGINAL_MEMBER_PRIORITY_MAX = 100
_DIGITS = re.compile(r"\d+")
_E164ISH = re.compile(r"\+\d+")


@dataclass
class Converted:
    """What one original object becomes here, with what was converted and what needs a person."""

    body: dict[str, Any] | None  # None: cannot be imported
    notes: list[str] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)


def rule_name(original_id: int) -> str:
    return f"{RULE_NAME_PREFIX}{original_id}"


def original_rule_id(name: str | None) -> int | None:
    match = _RULE_NAME.match(name or "")
    return int(match.group(1)) if match else None


# ---- agents ---------------------------------------------------------------------------------------


def agent_requires_credentials(provider: str) -> bool:
    info = PROVIDERS.get(provider)
    return bool(info and (info.requires_username or info.requires_password))


def convert_agent(agent: dict[str, Any]) -> Converted:
    """An original voice agent as our create body. Credentials never travel: the original's API hides
    ``username``/``password``, so an agent whose provider needs them is imported disabled."""
    provider = str(agent.get("provider") or "")
    service_value = str(agent.get("service_value") or "").strip()
    raw_metadata = agent.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    out = Converted(body=None)
    if provider not in PROVIDERS:
        out.attention.append(f"provider {provider!r} is not in this project's catalogue; not imported")
        return out
    needs_credentials = agent_requires_credentials(provider)
    placeholder = PLACEHOLDER_CREDENTIAL if needs_credentials else None
    problems = validate_agent(provider, service_value, placeholder, placeholder)
    if problems:
        out.attention.append("not imported: " + "; ".join(f"{name}: {message}" for name, message in problems))
        return out
    body: dict[str, Any] = {
        "name": str(agent.get("name") or f"agent {agent.get('id')}")[:255],
        "provider": provider,
        "service_value": service_value,
        "enabled": bool(agent.get("enabled", True)),
        "metadata": {**metadata, ORIGINAL_ID_KEY: int(agent["id"])},
    }
    if needs_credentials:
        info = PROVIDERS[provider]
        if info.requires_username:
            body["username"] = PLACEHOLDER_CREDENTIAL
        if info.requires_password:
            body["password"] = PLACEHOLDER_CREDENTIAL
        body["enabled"] = False
        body["metadata"][CREDENTIALS_KEY] = CREDENTIALS_PENDING
        out.attention.append(
            f"credentials to be entered: {provider} needs them and the original's API never returns them; "
            "imported disabled — enter them and enable the agent"
            + (" (it was enabled in the original)" if agent.get("enabled", True) else "")
        )
    out.body = body
    return out


# ---- groups ---------------------------------------------------------------------------------------


def convert_group(group: dict[str, Any], members: list[dict[str, Any]]) -> Converted:
    """An original group and its memberships (``voice_agent_id``, ``priority``, ``capacity``, in the
    original's order: priority descending, then membership creation) as our group body with
    ``members`` holding original agent ids (resolved to ours when written)."""
    strategy = str(group.get("strategy") or "load_balanced")
    raw_settings = group.get("settings")
    settings_in: dict[str, Any] = raw_settings if isinstance(raw_settings, dict) else {}
    out = Converted(body=None)
    settings: dict[str, Any] = {}
    fallback = settings_in.get("failover_enabled", settings_in.get("fallback_enabled"))
    if fallback is not None:
        settings["fallback_enabled"] = bool(fallback)
    if strategy == "load_balanced":
        window = settings_in.get("window_hours")
        if isinstance(window, int) and 1 <= window <= 168:
            settings["window_hours"] = window
        if settings_in.get("max_calls_per_agent") is not None:
            out.attention.append(
                f"max_calls_per_agent={settings_in['max_calls_per_agent']} (calls per agent per window) has no "
                "equivalent here; dropped (member capacity here limits concurrent calls instead)"
            )
        out.notes.append("load_balanced ties: random there, by priority then id here")
    elif strategy == "priority":
        if "round_robin_same_priority" in settings_in:
            rotate = bool(settings_in["round_robin_same_priority"])
            settings["rotate_same_priority"] = rotate
            if not rotate:
                out.notes.append(
                    "round_robin_same_priority=false -> rotate_same_priority=false (equal priorities in "
                    "agent-id order here; there in membership-creation order)"
                )
        if "failover_enabled" in settings_in:
            out.notes.append(
                "failover_enabled -> fallback_enabled (there it only widened the candidate list; here a "
                "busy/no-answer/failed dial is retried with the next agent, up to max_attempts)"
            )
    elif strategy == "round_robin":
        if settings_in.get("weighted_by_capacity"):
            out.attention.append(
                "weighted_by_capacity=true (rotation weighted by member capacity) has no equivalent here; "
                "imported as plain round_robin"
            )
        out.notes.append("round_robin: the original rotated in agent-id order; here in (priority, id) order")
    else:
        out.attention.append(f"unknown strategy {strategy!r}; imported as load_balanced")
        strategy = "load_balanced"
    if group.get("description"):
        out.notes.append("description dropped (groups here have none)")
    converted_members, member_notes = convert_members(members)
    out.notes += member_notes
    out.body = {
        "name": str(group.get("name") or f"group {group.get('id')}")[:255],
        "strategy": strategy,
        "settings": settings,
        "enabled": bool(group.get("enabled", True)),
        "members": converted_members,
    }
    return out


def convert_members(members: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Member priorities 1..100, highest first (default 50) become ours, lowest first: 101 - p.
    Equal priorities stay equal (both systems rotate among them; the group's
    ``round_robin_same_priority`` becomes ``settings.rotate_same_priority``). Capacity there weighted
    only the weighted round robin; here it caps concurrent calls, so every member is imported
    unlimited (0) and the old capacity kept as the weight."""
    notes: list[str] = []
    ordered = list(members)  # already in the original's order
    out: list[dict[str, Any]] = []
    for member in ordered:
        priority = ORIGINAL_MEMBER_PRIORITY_MAX + 1 - _member_priority(member)
        capacity = member.get("capacity")
        out.append(
            {
                "agent_id": int(member.get("voice_agent_id") or member["agent_id"]),
                "priority": priority,
                "capacity": 0,
                "weight": max(1, min(int(capacity), 1000)) if isinstance(capacity, int) else 1,
            }
        )
    if ordered:
        notes.append("member priority p (1-100, highest first) -> 101 - p (lowest first)")
        if any(isinstance(m.get("capacity"), int) for m in ordered):
            notes.append(
                "member capacity was a rotation weight there: kept as weight, capacity set to 0 (unlimited)"
            )
    return out, notes


def _member_priority(member: dict[str, Any]) -> int:
    value = member.get("priority")
    return value if isinstance(value, int) and 1 <= value <= 100 else ORIGINAL_MEMBER_PRIORITY_DEFAULT


# ---- inbound rules --------------------------------------------------------------------------------


def original_matches(pattern: str, number: str) -> bool:
    """The original's ``InboundRoutingRule::matchesNumber``: ``+...`` is an exact string, anything
    else a string prefix of the number with or without ``+``."""
    if pattern.startswith("+"):
        return number == pattern
    return number.startswith("+" + pattern) or number.startswith(pattern)


def convert_pattern(pattern: str) -> tuple[str, list[str], list[str]]:
    """(our pattern, notes, attention) matching exactly the numbers the original's pattern matched."""
    if pattern.startswith("+"):
        if _E164ISH.fullmatch(pattern):
            return pattern, [], []
        exact = "re:" + re.escape(pattern)
        if "*" in pattern:
            return (
                exact,
                [],
                [
                    f"pattern `{pattern}` never matched a call in the original (a pattern starting with '+' is "
                    "compared as one exact number there, so '*' is a literal character); kept never-matching as "
                    f"`{exact}`. If a prefix was meant, change it to `{pattern}` here (a prefix in this project)"
                ],
            )
        return exact, [], [f"pattern `{pattern}` is compared as an exact string there; kept as `{exact}`"]
    if pattern == "":
        return "*", ["empty pattern (a prefix of every number there) -> '*'"], []
    prefix = "re:\\+?" + re.escape(pattern) + ".*"
    if _DIGITS.fullmatch(pattern):
        return prefix, [f"bare digits `{pattern}` are a prefix there (with or without '+') -> `{prefix}`"], []
    why = (
        "'*' is a literal character there, so it never matched a call"
        if "*" in pattern
        else "it holds characters other than digits"
    )
    return (
        prefix,
        [],
        [f"pattern `{pattern}`: a prefix there and {why}; kept with the same meaning as `{prefix}`"],
    )


def pattern_problem(pattern: str | None) -> str | None:
    """Why our grammar refuses ``pattern`` (too long, say), or None: checked before anything is written."""
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        return str(exc)
    return None


def order_rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The original's evaluation order: priority descending (ties: by id, as MySQL returns them)."""
    return sorted(rules, key=lambda r: (-int(r.get("priority") or 0), int(r["id"])))


def convert_rule(rule: dict[str, Any], rank: int) -> Converted:
    """An original inbound rule as our create body, ``target_id`` still the original's."""
    target_type = str(rule.get("target_type") or "")
    out = Converted(body=None)
    if target_type not in ("agent", "group"):
        out.attention.append(f"unknown target_type {target_type!r}; not imported")
        return out
    pattern, notes, attention = convert_pattern(str(rule.get("pattern") or ""))
    out.notes += notes
    out.attention += attention
    priority = RULE_PRIORITY_STEP * (rank + 1)
    out.notes.append(
        f"priority {rule.get('priority')} (highest first there) -> {priority} (lowest first here)"
    )
    out.body = {
        "name": rule_name(int(rule["id"])),
        "pattern": pattern,
        "target_type": target_type,
        "target_id": int(rule["target_id"]),
        "priority": priority,
        "enabled": bool(rule.get("enabled", True)),
    }
    return out


def overlapping_ties(rules: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Pairs of enabled rules with the same original priority where one pattern's numbers can reach the
    other's: their order there was whatever MySQL returned (here: the original's id order)."""
    found: list[tuple[int, int]] = []
    enabled = [r for r in rules if r.get("enabled", True)]
    for i, a in enumerate(enabled):
        for b in enabled[i + 1 :]:
            if a.get("priority") != b.get("priority"):
                continue
            pa, pb = str(a.get("pattern") or ""), str(b.get("pattern") or "")
            if _could_overlap(pa, pb):
                found.append((int(a["id"]), int(b["id"])))
    return found


def _could_overlap(a: str, b: str) -> bool:
    core_a, core_b = a.lstrip("+"), b.lstrip("+")
    exact_a, exact_b = a.startswith("+"), b.startswith("+")
    if exact_a and exact_b:
        return a == b
    if exact_a:
        return original_matches(b, a)
    if exact_b:
        return original_matches(a, b)
    return core_a.startswith(core_b) or core_b.startswith(core_a)


# ---- trunks and outbound rules ----------------------------------------------------------------------


def order_trunks(trunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The original's trunk order: priority descending (``Trunk::scopeOrderedByPriority``), then id."""
    return sorted(trunks, key=lambda t: (-int(t.get("priority") or 0), int(t["id"])))


def trunk_ref(trunk: dict[str, Any]) -> str:
    return str(trunk.get("cloudonix_trunk_id") or trunk.get("cloudonix_trunk") or "").strip()


def default_trunk_id(trunks: list[dict[str, Any]]) -> tuple[int | None, list[str]]:
    """Which original trunk carries a call no outbound rule matches. There: the first enabled
    ``is_default`` trunk, else any enabled trunk, highest priority first. Here: only the default trunk
    (one per tenant) does, so that trunk is imported as the default."""
    enabled = [t for t in trunks if t.get("enabled", True)]
    defaults = sorted((t for t in enabled if t.get("is_default")), key=lambda t: int(t["id"]))
    if defaults:
        notes = []
        if len(defaults) > 1:
            notes.append(
                f"{len(defaults)} enabled default trunks there (the first by id was used); only #{defaults[0]['id']} "
                "stays the default here (one per tenant)"
            )
        return int(defaults[0]["id"]), notes
    ordered = order_trunks(enabled)
    if not ordered:
        return None, []
    return int(ordered[0]["id"]), [
        f"no enabled default trunk there, so unmatched outbound calls took the highest-priority enabled trunk "
        f"(#{ordered[0]['id']}); it is the default trunk here"
    ]


def convert_trunk(trunk: dict[str, Any], rank: int, is_default: bool) -> Converted:
    out = Converted(body=None)
    ref = trunk_ref(trunk)
    if not ref:
        out.attention.append("no cloudonix_trunk_id; not imported")
        return out
    priority = RULE_PRIORITY_STEP * (rank + 1)
    out.notes.append(
        f"priority {trunk.get('priority')} (highest first there) -> {priority} (lowest first here)"
    )
    capacity = trunk.get("capacity")
    if isinstance(capacity, int) and capacity > 0:
        out.notes.append(f"capacity {capacity} dropped (never enforced by the original's outbound routing)")
    if bool(trunk.get("is_default")) != is_default:
        out.notes.append(
            f"is_default {bool(trunk.get('is_default'))} -> {is_default} (see the default-trunk note)"
        )
    description = trunk.get("description")
    out.body = {
        "name": str(trunk.get("name") or ref)[:255],
        "cloudonix_trunk": ref[:255],
        "description": str(description)[:2000] if description else None,
        "priority": priority,
        "is_default": is_default,
        "enabled": bool(trunk.get("enabled", True)),
    }
    return out


def convert_destination(pattern: str) -> tuple[str, list[str], list[str]]:
    """``OutboundRoutingRule::matchesDestination``: unlike inbound rules, a ``+...`` destination is a
    prefix there too; anything else a prefix with or without ``+``."""
    if pattern.startswith("+"):
        if _E164ISH.fullmatch(pattern):
            return pattern + "*", [f"destination `{pattern}` is a prefix there -> `{pattern}*`"], []
        ours = "re:" + re.escape(pattern) + ".*"
        why = "'*' is a literal character there, so it never matched" if "*" in pattern else "non-digits"
        return (
            ours,
            [],
            [f"destination `{pattern}`: a prefix there and {why}; kept with the same meaning as `{ours}`"],
        )
    return convert_pattern(pattern)


def convert_outbound_rule(rule: dict[str, Any], rank: int, trunk_ids: list[int]) -> Converted:
    """An original outbound rule (evaluated in id order there), ``trunk_ids`` already ordered as the
    original picked them (trunk priority descending) and in the original's ids."""
    out = Converted(body=None)
    caller_source = str(rule.get("caller_id") or "")
    caller, caller_notes, caller_attention = convert_pattern(caller_source)
    destination, notes, attention = convert_destination(str(rule.get("destination_pattern") or ""))
    out.notes += [f"caller id: {n}" for n in caller_notes] + notes
    out.attention += [f"caller id: {a}" for a in caller_attention] + attention
    priority = RULE_PRIORITY_STEP * (rank + 1)
    out.notes.append(f"evaluated in id order there -> priority {priority}")
    for text in (None if caller == "*" else caller, destination):
        problem = pattern_problem(text)
        if problem:
            out.attention.append(f"pattern `{text}` is refused here ({problem}); not imported")
            return Converted(body=None, notes=out.notes, attention=out.attention)
    if not trunk_ids:
        out.attention.append(
            "no (importable) trunks: there a match failed the call; here it takes the default trunk"
        )
    elif len(trunk_ids) > 1:
        out.notes.append(
            "there only the highest-priority enabled trunk was used; here the others follow it in order"
        )
    out.body = {
        "name": rule_name(int(rule["id"])),
        "caller_id": None if caller == "*" else caller,
        "destination_pattern": destination,
        "trunk_ids": trunk_ids,
        "priority": priority,
        "enabled": bool(rule.get("enabled", True)),
    }
    return out
