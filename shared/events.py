"""CallEvent: what engines tell the control plane about calls, over JetStream stream ``VLB_EVENTS``.

A message on ``vlb.events.<tenant>.<kind>`` carries a msgpack array of 1 to 64 CallEvents of that
tenant and kind (``encode_events``); ``Nats-Msg-Id`` names the message, so a retried publish is stored
once, and ``event_id`` names each event, which the consumer stores once. Readers also accept a message
holding one bare CallEvent (``decode_events``), as engines before batching published."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from shared.enums import EventKind

# Explained decisions (SPEC §5): what a code of a DecisionTrace means. Per candidate (``codes``,
# ``excluded``): its result and, when skipped, why; per rule (``rules_skipped``) why it did not take the call.
CANDIDATE_CODES: dict[str, tuple[str, str | None]] = {
    "c": ("chosen", None),
    ".": ("eligible", None),  # could have taken the call; the strategy chose another
    # the choice ended before it (priority order, stickiness, a choice made; round_robin: outside its walk)
    "-": ("not_checked", None),
    "t": ("skipped", "tried"),  # already dialled in this call
    "e": ("skipped", "ejected"),  # out of its group's selection (settings.outlier)
    "f": ("skipped", "full"),  # at capacity
    "d": ("skipped", "disabled"),  # the agent is disabled
    "k": ("skipped", "credentials"),  # the agent's credentials could not be read
    "g": ("skipped", "group_disabled"),  # its group is disabled
}
RULE_CODES = {"s": "outside_schedule"}
# Why no candidate was looked at (``codes`` starting with "!").
STOP_CODES = {"E": "call_ended", "M": "max_attempts", "F": "fallback_disabled"}


class DecisionTrace(msgspec.Struct, kw_only=True, frozen=True, gc=False, omit_defaults=True):
    """How the engine chose, in a compact form (a few short strings, most of them the compiled
    target's, so a decision costs the engine almost nothing to explain); the control plane decodes it
    for the call's timeline. ``members``: the candidates in ``codes`` order, "<agent>,<agent>,..." for
    the rule's target ("g<group>:<agent>,..." for a group, "<agent>" for an agent), then per
    settings.overflow step ``/g<group>:<agent>,...`` (a group), ``/n`` (a number) or ``/a`` (an
    announcement). ``codes``: per candidate one CANDIDATE_CODES character,
    ``/``-separated segments as ``members`` for the steps walked ('c' or 't' for a number, 'c' for an
    announcement); "*" when every candidate of the target was free and one was chosen (the event's
    agent); "!" and a STOP_CODES character when the engine looked at no candidate; "" when not traced
    (a decision made without Redis). ``excluded``: members left out of the target when the
    snapshot was compiled, "<agent>:<code>,...". ``rules_skipped``: rules that would have matched but
    were skipped, "<rule id>:<RULE_CODES code>,...", in order. ``branches``: a split rule's branch
    labels in order, "group:<id>,agent:<id>" (the one taken is the event's ``split_target``)."""

    members: str
    codes: str
    excluded: str = ""
    rules_skipped: str = ""
    branches: str = ""


class CallEvent(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    event_id: str  # dedupe id: stable for the same webhook delivery
    kind: EventKind
    tenant_id: int
    domain: str
    session_token: str
    occurred_at: float  # epoch seconds, when the engine saw it
    engine_id: str = ""
    direction: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    caller_name: str | None = None
    rule_id: int | None = None
    group_id: int | None = None
    agent_id: int | None = None
    attempt: int | None = None
    # The traffic-split branch the call took ("group:<id>" | "agent:<id>"); None when the rule splits not.
    split_target: str | None = None
    # The settings.overflow step that answered: "<n>:group" | "<n>:number" | "<n>:announcement" (n its
    # 1-based index in the group's flattened chain); None when the rule's own target did.
    overflow_step: str | None = None
    # How the engine chose (routed and dial-status decisions that looked at a target); None otherwise.
    decision: DecisionTrace | None = None
    outcome: str | None = None  # routed | no_agent | no_route | replay | fallback | error | ...
    status: str | None = None  # raw Cloudonix status (session update / dial status), lower-cased
    disposition: str | None = None
    snapshot_version: int | None = None
    latency_us: int | None = None
    call_start_ms: int | None = None
    call_answer_ms: int | None = None
    call_end_ms: int | None = None
    duration: int | None = None
    billsec: int | None = None
    call_id: str | None = None
    # The webhook body with secrets masked, for the audit trail and the call timeline.
    payload: dict[str, Any] | None = None


def event_subject(prefix: str, tenant_id: int, kind: EventKind) -> str:
    return f"{prefix}.{tenant_id}.{kind.value}"


# The body of one events message (JSON Schema: schemas/call-event-message.schema.json).
MAX_EVENTS_PER_MESSAGE = 64
EventMessage = Annotated[
    list[CallEvent],
    msgspec.Meta(
        min_length=1,
        max_length=MAX_EVENTS_PER_MESSAGE,
        description="One JetStream message on vlb.events.<tenant>.<kind>: CallEvents of that tenant and kind.",
    ),
]

EVENT_ENCODER = msgspec.msgpack.Encoder()
EVENT_DECODER = msgspec.msgpack.Decoder(CallEvent)
_MESSAGE_DECODER = msgspec.msgpack.Decoder(list[CallEvent] | CallEvent)
_RAW_LIST_DECODER = msgspec.msgpack.Decoder(list[msgspec.Raw])


def encode_events(events: list[CallEvent]) -> bytes:
    """The body of one events message."""
    return EVENT_ENCODER.encode(events)


def decode_events(data: bytes) -> list[CallEvent]:
    """The events of one message (a batch, or one bare event); raises msgspec.DecodeError or
    msgspec.ValidationError when any part of it is not a valid CallEvent."""
    decoded = _MESSAGE_DECODER.decode(data)
    return decoded if isinstance(decoded, list) else [decoded]


def decode_events_leniently(data: bytes) -> tuple[list[CallEvent], list[str]]:
    """Like ``decode_events`` but event by event: the valid events of a message, and why each other
    element is not one. Raises msgspec.DecodeError when the message is not a msgpack array at all."""
    try:
        return decode_events(data), []
    except msgspec.ValidationError:
        pass
    events: list[CallEvent] = []
    problems: list[str] = []
    try:
        parts = _RAW_LIST_DECODER.decode(data)
    except msgspec.ValidationError as exc:  # a single event that is not valid
        return [], [str(exc)]
    for i, raw in enumerate(parts):
        try:
            events.append(EVENT_DECODER.decode(raw))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            problems.append(f"item {i}: {exc}")
    return events, problems


class EngineHeartbeat(msgspec.Struct, kw_only=True, frozen=True):
    """What each engine process says every few seconds on core NATS subject ``vlb.engines.heartbeat``
    (settings ``heartbeat_subject``), JSON-encoded: who it is and which snapshot version of each
    tenant it runs."""

    engine_id: str
    pid: int
    started_at: float  # epoch seconds
    sent_at: float  # epoch seconds
    versions: dict[int, int]  # tenant id -> applied snapshot version


HEARTBEAT_ENCODER = msgspec.json.Encoder()
HEARTBEAT_DECODER = msgspec.json.Decoder(EngineHeartbeat)
