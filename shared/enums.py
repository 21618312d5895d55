"""Enumerations both planes agree on."""

from __future__ import annotations

from enum import Enum


class Role(str, Enum):
    ADMIN = "admin"
    VIEWER = "viewer"


class Strategy(str, Enum):
    LOAD_BALANCED = "load_balanced"
    PRIORITY = "priority"
    ROUND_ROBIN = "round_robin"


class TargetType(str, Enum):
    AGENT = "agent"
    GROUP = "group"


class NoAgentAction(str, Enum):
    SAY_AND_HANGUP = "say_and_hangup"
    REJECT_BUSY = "reject_busy"
    REJECT_CONGESTION = "reject_congestion"


class CallStatus(str, Enum):
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


class Disposition(str, Enum):
    ANSWER = "ANSWER"
    BUSY = "BUSY"
    CANCEL = "CANCEL"
    FAILED = "FAILED"
    CONGESTION = "CONGESTION"
    NOANSWER = "NOANSWER"


class EventKind(str, Enum):
    ROUTED = "routed"
    DIAL_STATUS = "dial_status"
    SESSION_UPDATE = "session_update"
    CDR = "cdr"
    REJECTED = "rejected"
