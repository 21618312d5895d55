"""The traffic-split report (``GET /api/analytics/splits``): per branch of an inbound rule's split,
the calls that took it and how they ended, read from the call records (their ``split_target``, which
the engine's routed event carries) through the partial index that holds only split calls."""

from __future__ import annotations

from sqlalchemy import text

from control_plane.analytics import schemas
from control_plane.analytics.aggregates import COLUMNS, CONTRIBUTION_SQL
from control_plane.analytics.service import Range
from control_plane.analytics.sums import Sums
from control_plane.db.models import AgentGroup, InboundRoutingRule, VoiceAgent
from control_plane.errors import FieldError
from control_plane.tenancy import TenantScope

_SUMS = ", ".join(f"sum(c.{name})" for name in COLUMNS)
SPLIT_SQL = f"""
    SELECT c.rule_id, c.split_target, {_SUMS}
    FROM (
        SELECT r.rule_id, r.split_target, {CONTRIBUTION_SQL}
        FROM call_records r
        WHERE r.tenant_id = :tenant AND {{rule}} AND r.split_target IS NOT NULL
          AND COALESCE(r.start_time, r.created_at) >= :since
          AND COALESCE(r.start_time, r.created_at) < :until
    ) c
    GROUP BY c.rule_id, c.split_target
"""  # noqa: S608 (constants only)

_ANY_SQL = (
    "SELECT 1 FROM call_records WHERE tenant_id = :tenant AND rule_id = :rule "
    "AND split_target IS NOT NULL LIMIT 1"
)


def _parse_label(label: str) -> tuple[str, int | None]:
    kind, _, ident = label.partition(":")
    return kind, int(ident) if ident.isdigit() else None


async def splits(scope: TenantScope, r: Range, rule_id: int | None) -> schemas.SplitReport:
    """One rule's branches (``rule_id``), or every split rule's of the tenant (rules that split now, then
    rules whose records took a branch in the range)."""
    params: dict[str, object] = {"tenant": scope.tenant_id, "since": r.since, "until": r.until}
    name: str | None = None
    if rule_id is not None:
        rule = await scope.find(InboundRoutingRule, rule_id)
        params["rule"] = rule_id
        seen = {"tenant": scope.tenant_id, "rule": rule_id}
        if rule is None and await scope.session.scalar(text(_ANY_SQL), seen) is None:
            raise FieldError(("rule_id", f"no inbound routing rule {rule_id} in this tenant"))
        rules = [rule] if rule is not None else []
        name = rule.name if rule is not None else None
        sql = SPLIT_SQL.replace("{rule}", "r.rule_id = :rule")
    else:
        stmt = scope.select(InboundRoutingRule).where(InboundRoutingRule.targets.is_not(None))
        rules = list(
            (
                await scope.session.scalars(stmt.order_by(InboundRoutingRule.priority, InboundRoutingRule.id))
            ).all()
        )
        sql = SPLIT_SQL.replace("{rule}", "r.rule_id IS NOT NULL")
    found: dict[tuple[int, str], Sums] = {}
    for found_rule, label, *values in (await scope.session.execute(text(sql), params)).all():
        sums = found[(found_rule, label)] = Sums()
        sums.add(values)
    # Rules' branches as configured now first (in their order), then branches they no longer have.
    percents: dict[tuple[int, str], int] = {}
    for rule in rules:
        for branch in rule.targets or []:
            percents[(rule.id, f"{branch['target_type']}:{branch['target_id']}")] = int(branch["percent"])
    keys = list(percents) + sorted(k for k in found if k not in percents)
    rule_calls: dict[int, int] = {}
    for (found_rule, _label), sums in found.items():
        rule_calls[found_rule] = rule_calls.get(found_rule, 0) + sums.calls
    data = []
    for key in keys:
        key_rule, label = key
        kind, ident = _parse_label(label)
        target_name: str | None = None
        if ident is not None and kind == "agent":
            agent = await scope.find(VoiceAgent, ident)
            target_name = agent.name if agent is not None else None
        elif ident is not None:
            group = await scope.find(AgentGroup, ident)
            target_name = group.name if group is not None else None
        s = found.get(key, Sums())
        total_calls = rule_calls.get(key_rule, 0)
        data.append(
            schemas.SplitBranchReport(
                rule_id=key_rule,
                split_target=label,
                target_type=kind,
                target_id=ident,
                name=target_name,
                percent=percents.get(key),
                share=round(s.calls / total_calls, 4) if total_calls else 0.0,
                **s.outcome_fields(),
            )
        )
    return schemas.SplitReport(rule_id=rule_id, name=name, data=data, window=r.window())
