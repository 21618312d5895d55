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
    SELECT c.split_target, {_SUMS}
    FROM (
        SELECT r.split_target, {CONTRIBUTION_SQL}
        FROM call_records r
        WHERE r.tenant_id = :tenant AND r.rule_id = :rule AND r.split_target IS NOT NULL
          AND COALESCE(r.start_time, r.created_at) >= :since
          AND COALESCE(r.start_time, r.created_at) < :until
    ) c
    GROUP BY c.split_target
"""  # noqa: S608 (constants only)

_ANY_SQL = (
    "SELECT 1 FROM call_records WHERE tenant_id = :tenant AND rule_id = :rule "
    "AND split_target IS NOT NULL LIMIT 1"
)


def _parse_label(label: str) -> tuple[str, int | None]:
    kind, _, ident = label.partition(":")
    return kind, int(ident) if ident.isdigit() else None


async def splits(scope: TenantScope, r: Range, rule_id: int) -> schemas.SplitReport:
    rule = await scope.find(InboundRoutingRule, rule_id)
    params = {"tenant": scope.tenant_id, "rule": rule_id}
    if rule is None and await scope.session.scalar(text(_ANY_SQL), params) is None:
        raise FieldError(("rule_id", f"no inbound routing rule {rule_id} in this tenant"))
    rows = (
        await scope.session.execute(text(SPLIT_SQL), {**params, "since": r.since, "until": r.until})
    ).all()
    found: dict[str, Sums] = {}
    for label, *values in rows:
        sums = found[label] = Sums()
        sums.add(values)
    # The rule's branches as configured now first (in their order), then branches it no longer has.
    percents: dict[str, int] = {}
    for branch in (rule.targets or []) if rule is not None else []:
        percents[f"{branch['target_type']}:{branch['target_id']}"] = int(branch["percent"])
    labels = list(percents) + sorted(label for label in found if label not in percents)
    total_calls = sum(s.calls for s in found.values())
    data = []
    for label in labels:
        kind, ident = _parse_label(label)
        name: str | None = None
        if ident is not None and kind == "agent":
            agent = await scope.find(VoiceAgent, ident)
            name = agent.name if agent is not None else None
        elif ident is not None:
            group = await scope.find(AgentGroup, ident)
            name = group.name if group is not None else None
        s = found.get(label, Sums())
        data.append(
            schemas.SplitBranchReport(
                split_target=label,
                target_type=kind,
                target_id=ident,
                name=name,
                percent=percents.get(label),
                share=round(s.calls / total_calls, 4) if total_calls else 0.0,
                calls=s.calls,
                answered=s.completed,
                finished=s.finished,
                success_rate=s.success_rate,
                avg_duration=s.avg_duration,
                avg_talk_time=s.avg_talk_time,
                total_talk_time=s.billsec_sum,
            )
        )
    return schemas.SplitReport(
        rule_id=rule_id, name=rule.name if rule is not None else None, data=data, window=r.window()
    )
