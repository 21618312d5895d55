"""Wire shapes of the CDR routes (the original system's JSON)."""

from __future__ import annotations

import datetime
from typing import Any

import msgspec

from control_plane.pagination import PageMeta


class CdrRead(msgspec.Struct, kw_only=True):
    id: int
    call_id: str | None
    session_token: str
    from_number: str | None
    to_number: str | None
    direction: str | None
    disposition: str | None
    start_time: datetime.datetime | None
    answer_time: datetime.datetime | None
    end_time: datetime.datetime | None
    duration_seconds: int | None
    billsec: int | None
    domain: str | None
    created_at: datetime.datetime


class CdrDetail(CdrRead, kw_only=True):
    payload: dict[str, Any] | None  # the CDR body as Cloudonix sent it, secrets masked


class CdrPage(msgspec.Struct, kw_only=True):
    data: list[CdrRead]
    meta: PageMeta
    filters_applied: dict[str, str]
