"""The call-record state machine (SPEC §6): one table from what engines report (Cloudonix session
statuses, ``<Dial>`` statuses, CDR dispositions, routing outcomes) onto :class:`CallStatus`, and a pure
:func:`advance` that folds one event into a call's state.

Events arrive late, twice and out of order, so ``advance`` is monotone: a call only moves forward
(``received`` → ``queued`` → ``routing`` → ``connecting`` → ``connected`` → a terminal state), a terminal
state is never left, and an event for an earlier state only fills timestamps that are still missing.
"""

from __future__ import annotations

import msgspec

from shared.enums import TERMINAL_STATUSES, CallStatus, Disposition, EventKind

S = CallStatus

# Cloudonix session statuses (and the Twilio-style ones of the original's short update), lower-cased.
# "answer" is how Cloudonix ends an ANSWERED call (it follows "connected" and carries callEndTime);
# "answered" is accepted defensively and ends the call only when an end time comes with it.
SESSION_STATUS: dict[str, CallStatus] = {
    "new": S.RECEIVED,
    "queued": S.QUEUED,
    "processing": S.ROUTING,
    "initiated": S.CONNECTING,
    "ringing": S.CONNECTING,
    "external": S.CONNECTING,  # handed to an outside leg, not yet answered
    "connected": S.CONNECTED,
    "in-progress": S.CONNECTED,
    "answered": S.CONNECTED,
    "answer": S.COMPLETED,
    "completed": S.COMPLETED,
    "noanswer": S.NO_ANSWER,
    "no-answer": S.NO_ANSWER,
    "busy": S.BUSY,
    "cancel": S.CANCELED,
    "canceled": S.CANCELED,
    "cancelled": S.CANCELED,
    "nocredit": S.FAILED,
    "error": S.FAILED,
    "failed": S.FAILED,
}

# ``DialCallStatus`` of the <Dial action> callback; anything else (``unknown`` too) is a failure.
DIAL_STATUS: dict[str, CallStatus] = {
    "completed": S.COMPLETED,
    "answered": S.CONNECTED,  # the agent leg may still be live
    "in-progress": S.CONNECTED,
    "busy": S.BUSY,
    "no-answer": S.NO_ANSWER,
    "noanswer": S.NO_ANSWER,
    "failed": S.FAILED,
    "canceled": S.CANCELED,
    "cancelled": S.CANCELED,
    "cancel": S.CANCELED,
}

DISPOSITION_STATUS: dict[Disposition, CallStatus] = {
    Disposition.ANSWER: S.COMPLETED,
    Disposition.BUSY: S.BUSY,
    Disposition.CANCEL: S.CANCELED,
    Disposition.FAILED: S.FAILED,
    Disposition.CONGESTION: S.FAILED,
    Disposition.NOANSWER: S.NO_ANSWER,
}

# Spellings of dispositions seen in the wild (upper-cased, inner blanks collapsed).
DISPOSITION_ALIASES: dict[str, Disposition] = {
    **{d.value: d for d in Disposition},
    "ANSWERED": Disposition.ANSWER,
    "NO ANSWER": Disposition.NOANSWER,
    "NO-ANSWER": Disposition.NOANSWER,
    "NO_ANSWER": Disposition.NOANSWER,
    "CANCELED": Disposition.CANCEL,
    "CANCELLED": Disposition.CANCEL,
    "CHANUNAVAIL": Disposition.FAILED,
}

# The engine's decision on the first request (``routed``) or on a <Dial action> (``dial_status``):
# a chosen agent means the call is being connected; no agent or no rule ends it as failed; anything
# else (fallback, error) says the call is being routed.
ROUTING_OUTCOME: dict[str, CallStatus] = {
    "routed": S.CONNECTING,
    "replay": S.CONNECTING,
    "outbound": S.CONNECTING,
    "no_agent": S.FAILED,
    "no_route": S.FAILED,
}

# Non-terminal states in the order a call passes through them; every terminal state ranks above.
RANK: dict[CallStatus, int] = {
    S.RECEIVED: 0,
    S.QUEUED: 1,
    S.ROUTING: 2,
    S.CONNECTING: 3,
    S.CONNECTED: 4,
    **{t: 5 for t in TERMINAL_STATUSES},
}


def normalize_disposition(value: str | None) -> Disposition | None:
    """``"answered"``, ``"NO ANSWER"``, ``" busy "`` … → the Disposition; None when blank or unknown."""
    if value is None:
        return None
    return DISPOSITION_ALIASES.get(" ".join(value.upper().split()))


def is_terminal(status: CallStatus | str) -> bool:
    return status in TERMINAL_STATUSES


class LifecycleEvent(msgspec.Struct, kw_only=True, frozen=True):
    """What ``advance`` needs of one CallEvent (times in epoch milliseconds)."""

    kind: EventKind
    occurred_ms: int
    status: str | None = None  # raw session / dial status
    disposition: str | None = None
    outcome: str | None = None
    start_ms: int | None = None
    answer_ms: int | None = None
    end_ms: int | None = None


class CallState(msgspec.Struct, kw_only=True, frozen=True):
    """A call as its record holds it; ``status`` None means no record yet."""

    status: CallStatus | None = None
    start_ms: int | None = None
    answer_ms: int | None = None
    end_ms: int | None = None


def event_status(event: LifecycleEvent) -> CallStatus | None:
    """The state an event says the call is in, or None when it says nothing about that."""
    raw = (event.status or "").strip().lower()
    if event.kind is EventKind.SESSION_UPDATE:
        if raw == "answered" and event.end_ms is not None:
            return S.COMPLETED
        return SESSION_STATUS.get(raw)
    if event.kind is EventKind.CDR:
        disposition = normalize_disposition(event.disposition)
        if disposition is not None:
            return DISPOSITION_STATUS[disposition]
        return SESSION_STATUS.get(raw)
    if event.kind is EventKind.ROUTED:
        return ROUTING_OUTCOME.get(event.outcome or "", S.ROUTING)
    if event.kind is EventKind.DIAL_STATUS:
        if event.outcome in ("routed", "replay"):  # the engine dialled the next agent
            return S.CONNECTING
        return DIAL_STATUS.get(raw, S.FAILED)
    return None  # rejected webhooks are audited but say nothing about the call


def _merge(held: int | None, given: int | None, *, prefer_event: bool) -> int | None:
    if given is None:
        return held
    if held is None or prefer_event:
        return given
    return held


def advance(current: CallState, event: LifecycleEvent) -> CallState:
    """Fold one event into the call's state: forward only, terminal is final, gaps get filled.

    Times Cloudonix gives fill what is missing; a CDR's times replace what is held (it is the
    carrier's final word). Times it does not give are taken from when the engine saw the event: the
    start from any first event, the answer from the event that moved the call to ``connected``, the
    end from the event that ended it."""
    target = event_status(event)
    status = current.status
    if status is None:
        status = target if target is not None else S.RECEIVED
    elif target is not None and not is_terminal(status) and RANK[target] > RANK[status]:
        status = target

    cdr = event.kind is EventKind.CDR
    start = _merge(current.start_ms, event.start_ms, prefer_event=cdr)
    answer = _merge(current.answer_ms, event.answer_ms, prefer_event=cdr)
    end = _merge(current.end_ms, event.end_ms, prefer_event=cdr)
    if start is None:
        start = event.occurred_ms
    if answer is None and target is S.CONNECTED and status is S.CONNECTED:
        answer = event.occurred_ms
    if end is None and target is not None and is_terminal(target) and is_terminal(status):
        end = event.occurred_ms
    return CallState(status=status, start_ms=start, answer_ms=answer, end_ms=end)


__all__ = [
    "DIAL_STATUS",
    "DISPOSITION_ALIASES",
    "DISPOSITION_STATUS",
    "RANK",
    "ROUTING_OUTCOME",
    "SESSION_STATUS",
    "CallState",
    "LifecycleEvent",
    "advance",
    "event_status",
    "is_terminal",
    "normalize_disposition",
]
