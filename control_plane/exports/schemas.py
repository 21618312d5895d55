"""Wire shapes of the export routes."""

from __future__ import annotations

import datetime
from typing import Any, Literal

import msgspec


class ExportRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/exports``: the list's filters by their query names (``from``, ``to``, ``start_date``
    …), the fields (all when left out) and the format of the file."""

    type: Literal["call_records", "cdr"]
    format: Literal["csv", "json", "ndjson"] = "csv"
    fields: list[str] | None = None
    filters: dict[str, Any] = msgspec.field(default_factory=dict)
    anonymize: bool = False


class ExportJobRead(msgspec.Struct, kw_only=True):
    id: int
    type: str
    format: str
    fields: list[str]
    filters: dict[str, Any]
    anonymize: bool
    status: str  # queued | running | done | failed | expired
    rows: int | None
    bytes: int | None  # size of the gzip file
    error: str | None
    attempts: int
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    expires_at: datetime.datetime | None
    download_url: str | None  # when done
    filename: str


class ExportTypeFields(msgspec.Struct, kw_only=True):
    type: str
    fields: list[str]
    filters: list[str]
    formats: list[str]


class ExportFields(msgspec.Struct, kw_only=True):
    data: list[ExportTypeFields]
