"""Enumerations both planes agree on."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"


class Strategy(StrEnum):
    LOAD_BALANCED = "load_balanced"
    PRIORITY = "priority"
    ROUND_ROBIN = "round_robin"
    WEIGHTED = "weighted"
    LEAST_ACTIVE = "least_active"


class TargetType(StrEnum):
    AGENT = "agent"
    GROUP = "group"


class NoAgentAction(StrEnum):
    SAY_AND_HANGUP = "say_and_hangup"
    REJECT_BUSY = "reject_busy"
    REJECT_CONGESTION = "reject_congestion"


class CallStatus(StrEnum):
    """The call-record state machine (SPEC §6)."""

    RECEIVED = "received"
    QUEUED = "queued"
    ROUTING = "routing"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    COMPLETED = "completed"
    BUSY = "busy"
    FAILED = "failed"
    NO_ANSWER = "no_answer"
    CANCELED = "canceled"


TERMINAL_STATUSES = frozenset(
    {CallStatus.COMPLETED, CallStatus.BUSY, CallStatus.FAILED, CallStatus.NO_ANSWER, CallStatus.CANCELED}
)


class Disposition(StrEnum):
    ANSWER = "ANSWER"
    BUSY = "BUSY"
    CANCEL = "CANCEL"
    FAILED = "FAILED"
    CONGESTION = "CONGESTION"
    NOANSWER = "NOANSWER"


class EventKind(StrEnum):
    ROUTED = "routed"
    DIAL_STATUS = "dial_status"
    SESSION_UPDATE = "session_update"
    CDR = "cdr"
    REJECTED = "rejected"
    # An agent ejected from / back in a group's selection (settings.outlier); not a webhook.
    OUTLIER = "outlier"
