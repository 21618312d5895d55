"""Query-string filters shared by the call, CDR and audit lists: each bad value is a 422 naming the
field (SPEC §2.6: bad filters never answer empty data)."""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from control_plane.errors import FieldError
from control_plane.tenancy import TenantScope

MAX_PER_PAGE = 200
E = TypeVar("E", bound=StrEnum)


def check_page(page: int, per_page: int) -> None:
    if page < 1:
        raise FieldError(("page", "must be 1 or more"))
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise FieldError(("per_page", f"must be between 1 and {MAX_PER_PAGE}"))


def check_range(field: str, low: int | None, high: int | None, high_field: str) -> None:
    if low is not None and low < 0:
        raise FieldError((field, "must be 0 or more"))
    if high is not None and high < 0:
        raise FieldError((high_field, "must be 0 or more"))
    if low is not None and high is not None and high < low:
        raise FieldError((high_field, f"must not be less than {field}"))


def parse_enum(field: str, value: str | None, enum: type[E], *, upper: bool = False) -> E | None:
    if value is None or not value.strip():
        return None
    key = value.strip().upper() if upper else value.strip().lower()
    try:
        return enum(key)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise FieldError((field, f"unknown value {value[:40]!r}; one of {allowed}")) from None


async def tenant_zone(scope: TenantScope) -> ZoneInfo:
    tenant = await scope.tenant()
    name = str((tenant.settings or {}).get("timezone") or "UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def parse_moment(field: str, value: str | None, zone: ZoneInfo, *, end: bool) -> datetime.datetime | None:
    """``YYYY-MM-DD`` (a whole day in the tenant's zone: its start, or the start of the next day for an
    end bound) or an ISO 8601 date-time (UTC unless it names a zone); returned in UTC."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = datetime.date.fromisoformat(text)
            if end:
                day += datetime.timedelta(days=1)
            moment = datetime.datetime.combine(day, datetime.time(), zone)
        else:
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.UTC)
    except ValueError:
        raise FieldError((field, "must be a date YYYY-MM-DD or an ISO 8601 date-time")) from None
    return moment.astimezone(datetime.UTC)


def date_window(
    start: str | None, end: str | None, zone: ZoneInfo
) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """``[since, until)`` from start_date/end_date (both inclusive days); 422 when end is before start."""
    since = parse_moment("start_date", start, zone, end=False)
    until = parse_moment("end_date", end, zone, end=True)
    if since is not None and until is not None and until <= since:
        raise FieldError(("end_date", "must not be before start_date"))
    return since, until


def today_window(zone: ZoneInfo) -> tuple[datetime.datetime, datetime.datetime]:
    today = datetime.datetime.now(zone).date()
    since = datetime.datetime.combine(today, datetime.time(), zone)
    until = datetime.datetime.combine(today + datetime.timedelta(days=1), datetime.time(), zone)
    return since.astimezone(datetime.UTC), until.astimezone(datetime.UTC)
