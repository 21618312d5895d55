"""The live feed's frames (the wire format is fixed: the dashboard reads it) and the one mapping from
an engine's CallEvent to a ``call.*`` / ``cdr.received`` frame.

The frame type follows the call state the event reports (``shared.lifecycle.event_status``): a CDR is
``cdr.received``; an event that reports a terminal state is ``call.ended`` (a routing decision that
found no agent or no rule too: its ``outcome`` says which); a routing decision (the first request, or
a dial status after which the engine dialled the next agent) is ``call.routed``; anything else
(session updates, a dial status that reports the agent answered) is ``call.status``. Rejected webhooks
say nothing about a call and are not sent. The state is the event's own: events arrive out of order,
and the feed keeps no per-call state, so a late ``ringing`` may follow ``connected`` (the records API
folds them monotonically)."""

from __future__ import annotations

import time

import msgspec

from shared.enums import EventKind
from shared.events import CallEvent
from shared.lifecycle import LifecycleEvent, event_status, is_terminal, normalize_disposition


class Hello(msgspec.Struct, kw_only=True, tag_field="type", tag="hello"):
    tenant_id: int
    stats_interval_s: float


class Stats(msgspec.Struct, kw_only=True, tag_field="type", tag="stats"):
    at: str
    active_calls: int
    calls_last_minute: int
    per_agent_active: dict[str, int]  # agent id -> live slots, agents with at least one


class CallFrame(msgspec.Struct, kw_only=True, omit_defaults=False):
    type: str  # call.routed | call.status | call.ended | cdr.received
    at: str  # when the engine saw it (UTC, ms)
    session_token: str
    status: str | None  # the call state this event reports (shared.lifecycle), or null
    direction: str | None
    from_: str | None = msgspec.field(name="from")
    to: str | None
    agent_id: int | None
    group_id: int | None
    rule_id: int | None
    attempt: int | None
    outcome: str | None
    disposition: str | None
    duration: int | None
    billsec: int | None


class AgentFrame(msgspec.Struct, kw_only=True, omit_defaults=False):
    """An agent ejected from a group's selection (settings.outlier), back in it after a success on
    probation, or lifted by an admin."""

    type: str  # agent.ejected | agent.returned | agent.lifted
    at: str
    group_id: int | None
    agent_id: int | None
    until: str | None  # end of the ejection (UTC); null unless ejected
    reason: str | None  # "<trigger>:<failure>" (consecutive | failure_rate | probation : busy | ...)
    ejections: int | None  # ejections in a row (the back-off doubles with each)
    session_token: str | None  # the call whose failure (or success) did it; null for a lift


class AuthMessage(msgspec.Struct):
    """The first client message when the token is not in the URL."""

    token: str


ENCODER = msgspec.json.Encoder()
AUTH_DECODER = msgspec.json.Decoder(AuthMessage)

CALL_ROUTED = "call.routed"
CALL_STATUS = "call.status"
CALL_ENDED = "call.ended"
CDR_RECEIVED = "cdr.received"
AGENT_FRAMES = {"ejected": "agent.ejected", "returned": "agent.returned", "lifted": "agent.lifted"}


def utc_iso(epoch_s: float) -> str:
    """``2026-12-01T16:40:00.123Z``"""
    whole = int(epoch_s)
    millis = int((epoch_s - whole) * 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(whole))}.{millis:03d}Z"


def frame_type(event: CallEvent, status: str | None) -> str | None:
    kind = event.kind
    if kind is EventKind.CDR:
        return CDR_RECEIVED
    if kind is EventKind.REJECTED:
        return None
    if status is not None and is_terminal(status):
        return CALL_ENDED
    if kind is EventKind.ROUTED or (kind is EventKind.DIAL_STATUS and event.outcome in ("routed", "replay")):
        return CALL_ROUTED
    return CALL_STATUS


def agent_frame(event: CallEvent) -> AgentFrame | None:
    kind = AGENT_FRAMES.get(event.outcome or "")
    if kind is None:
        return None
    payload = event.payload or {}
    until_ms = payload.get("until_ms")
    ejections = payload.get("ejections")
    return AgentFrame(
        type=kind,
        at=utc_iso(event.occurred_at),
        group_id=event.group_id,
        agent_id=event.agent_id,
        until=utc_iso(until_ms / 1000) if isinstance(until_ms, int) and until_ms > 0 else None,
        reason=event.status,
        ejections=ejections if isinstance(ejections, int) else None,
        session_token=event.session_token or None,
    )


def call_frame(event: CallEvent) -> CallFrame | AgentFrame | None:
    """The frame for one event, or None when the feed does not show it."""
    if event.kind is EventKind.OUTLIER:
        return agent_frame(event)
    status = event_status(
        LifecycleEvent(
            kind=event.kind,
            occurred_ms=int(event.occurred_at * 1000),
            status=event.status,
            disposition=event.disposition,
            outcome=event.outcome,
            end_ms=event.call_end_ms,
        )
    )
    kind = frame_type(event, status)
    if kind is None:
        return None
    disposition = normalize_disposition(event.disposition)
    return CallFrame(
        type=kind,
        at=utc_iso(event.occurred_at),
        session_token=event.session_token,
        status=None if status is None else status.value,
        direction=event.direction,
        from_=event.from_number,
        to=event.to_number,
        agent_id=event.agent_id,
        group_id=event.group_id,
        rule_id=event.rule_id,
        attempt=event.attempt,
        outcome=event.outcome,
        disposition=disposition.value if disposition is not None else event.disposition,
        duration=event.duration,
        billsec=event.billsec,
    )


def encode_text(message: msgspec.Struct) -> str:
    """A frame as the text a websocket sends (encoded once, shared by every client)."""
    return ENCODER.encode(message).decode()
