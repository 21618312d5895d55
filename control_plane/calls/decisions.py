"""Explained decisions (SPEC §5): the engine's compact trace of a decision (call_events.decision, as
shared.events.DecisionTrace carries it) decoded for a call's timeline."""

from __future__ import annotations

from typing import Any

from control_plane.calls.schemas import (
    BranchSkipped,
    CandidateResult,
    DecisionExplained,
    OverflowStepResult,
    RuleSkipped,
)
from shared.events import CANDIDATE_CODES, RULE_CODES, STOP_CODES


def _ids(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip().lstrip("-").isdigit()]


def _segment(segment: str) -> tuple[int | None, list[int]]:
    """A ``members`` segment: "g<group>:<agent>,..." or "<agent>" -> (group id, agents)."""
    if segment.startswith("g") and ":" in segment:
        group, _, agents = segment[1:].partition(":")
        return (int(group) if group.isdigit() else None), _ids(agents)
    return None, _ids(segment)


def explain(stored: dict[str, Any], rule_id: int | None, agent_id: int | None) -> DecisionExplained:
    """The readable form of a stored decision (``agent_id``: the event's, the one chosen)."""
    members = str(stored.get("members") or "")
    codes = str(stored.get("codes") or "")
    candidates: list[CandidateResult] = []
    steps: list[OverflowStepResult] = []
    stopped: str | None = None
    traced = bool(codes)
    if codes.startswith("!"):
        stopped = STOP_CODES.get(codes[1:], codes[1:])
        code_segments: list[str] = []
    elif codes == "*":
        code_segments = ["*"]
    else:
        code_segments = codes.split("/") if codes else []
    for k, segment in enumerate(members.split("/") if members else []):
        walked = code_segments[k] if k < len(code_segments) else None
        if segment in ("n", "a"):
            kind = "number" if segment == "n" else "announcement"
            if walked is None:
                steps.append(OverflowStepResult(step=k, kind=kind, result="not_reached"))
            elif walked == "c":
                steps.append(OverflowStepResult(step=k, kind=kind, result="chosen"))
            else:
                steps.append(OverflowStepResult(step=k, kind=kind, result="skipped", reason="tried"))
            continue
        group_id, agents = _segment(segment)
        for i, agent in enumerate(agents):
            if walked is None:
                result, reason = ("not_reached" if k else "not_checked"), None
            elif walked == "*":
                result, reason = ("chosen", None) if agent == agent_id else ("eligible", None)
            else:
                result, reason = CANDIDATE_CODES.get(walked[i : i + 1], ("not_checked", None))
            candidates.append(
                CandidateResult(agent_id=agent, group_id=group_id, step=k, result=result, reason=reason)
            )
    first_group = candidates[0].group_id if candidates else None
    for item in str(stored.get("excluded") or "").split(","):
        left_out, _, code = item.partition(":")
        if left_out.strip().isdigit():
            result, reason = CANDIDATE_CODES.get(code, ("skipped", None))
            candidates.append(
                CandidateResult(
                    agent_id=int(left_out), group_id=first_group, step=0, result=result, reason=reason
                )
            )
    rules_skipped = []
    for item in str(stored.get("rules_skipped") or "").split(","):
        rule, _, code = item.partition(":")
        if rule.strip().isdigit():
            rules_skipped.append(RuleSkipped(rule_id=int(rule), reason=RULE_CODES.get(code, code)))
    split_branch = stored.get("split_target")
    branches_skipped = [
        BranchSkipped(target=label)
        for label in str(stored.get("branches") or "").split(",")
        if label and label != split_branch
    ]
    return DecisionExplained(
        rule_id=rule_id,
        snapshot_version=stored.get("snapshot_version"),
        traced=traced,
        stopped=stopped,
        candidates=candidates,
        overflow_steps=steps,
        rules_skipped=rules_skipped,
        split_branch=split_branch,
        branches_skipped=branches_skipped,
        chosen_agent_id=agent_id,
        overflow_step=stored.get("overflow_step"),
    )
