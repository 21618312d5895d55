"""CallEvent: what engines tell the control plane about calls, over JetStream stream ``VLB_EVENTS``
on subjects ``vlb.events.<tenant>.<kind>``, msgpack-encoded, with ``event_id`` as ``Nats-Msg-Id``."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.enums import EventKind


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


EVENT_ENCODER = msgspec.msgpack.Encoder()
EVENT_DECODER = msgspec.msgpack.Decoder(CallEvent)


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
