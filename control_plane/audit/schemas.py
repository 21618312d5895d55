"""Wire shapes of the webhook-audit route."""

from __future__ import annotations

import datetime
from typing import Any

import msgspec


class AuditRead(msgspec.Struct, kw_only=True):
    id: int
    event_id: str
    event_type: str  # routed | dial_status | session_update | cdr | rejected
    domain: str | None
    session_token: str | None
    outcome: str | None
    latency_us: int | None
    engine_id: str | None
    body: dict[str, Any] | None  # secrets masked by the engine
    received_at: datetime.datetime
