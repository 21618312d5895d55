"""Reading CDRs: the filtered list (with the filters echoed) and one record."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select

from control_plane.calls import filters
from control_plane.cdr.schemas import CdrDetail, CdrPage, CdrRead
from control_plane.db.models import Cdr
from control_plane.errors import FieldError
from control_plane.pagination import paginate
from control_plane.tenancy import TenantScope
from shared.enums import Disposition
from shared.lifecycle import normalize_disposition


def cdr_read(c: Cdr) -> CdrRead:
    return CdrRead(
        id=c.id,
        call_id=c.call_id,
        session_token=c.session_token,
        from_number=c.from_number,
        to_number=c.to_number,
        direction=c.direction,
        disposition=c.disposition,
        start_time=c.start_time,
        answer_time=c.answer_time,
        end_time=c.end_time,
        duration_seconds=c.duration_seconds,
        billsec=c.billsec,
        domain=c.domain,
        created_at=c.created_at,
    )


def cdr_detail(c: Cdr) -> CdrDetail:
    base = cdr_read(c)
    return CdrDetail(**{f: getattr(base, f) for f in CdrRead.__struct_fields__}, payload=c.payload)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(slots=True)
class CdrFilters:
    """The validated CDR list filters (``applied`` echoes what was used, as the list answers it)."""

    disposition: str | None = None
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    from_number: str | None = None
    to_number: str | None = None
    token: str | None = None
    applied: dict[str, str] = field(default_factory=dict)


async def cdr_filters(
    scope: TenantScope,
    *,
    from_number: str | None,
    to_number: str | None,
    token: str | None,
    disposition: str | None,
    start_date: str | None,
    end_date: str | None,
) -> CdrFilters:
    """Validate the query (422 naming the field) into filters."""
    f = CdrFilters()
    if disposition is not None and disposition.strip():
        parsed = normalize_disposition(disposition)
        if parsed is None:
            allowed = ", ".join(d.value for d in Disposition)
            raise FieldError(("disposition", f"unknown value {disposition[:40]!r}; one of {allowed}"))
        f.disposition = parsed.value
        f.applied["disposition"] = parsed.value
    if start_date or end_date:
        f.since, f.until = filters.date_window(start_date, end_date, await filters.tenant_zone(scope))
        if f.since is not None:
            f.applied["start_date"] = start_date or ""
        if f.until is not None:
            f.applied["end_date"] = end_date or ""
    f.from_number = _part(f, "from", from_number)
    f.to_number = _part(f, "to", to_number)
    f.token = _part(f, "token", token)
    return f


def _part(f: CdrFilters, name: str, value: str | None) -> str | None:
    """A "matches part of the value" filter, noted in ``applied`` when given."""
    if value is None or not value.strip():
        return None
    f.applied[name] = value.strip()
    return value.strip()


def cdrs_stmt(scope: TenantScope, f: CdrFilters) -> Select[Any]:
    """The tenant's CDRs that ``f`` selects, newest first."""
    stmt = scope.select(Cdr)
    if f.disposition is not None:
        stmt = stmt.where(Cdr.disposition == f.disposition)
    if f.since is not None:
        stmt = stmt.where(Cdr.start_time >= f.since)
    if f.until is not None:
        stmt = stmt.where(Cdr.start_time < f.until)
    for column, value in (
        (Cdr.from_number, f.from_number),
        (Cdr.to_number, f.to_number),
        (Cdr.session_token, f.token),
    ):
        if value is not None:
            stmt = stmt.where(column.ilike(_like(value), escape="\\"))
    return stmt.order_by(Cdr.start_time.desc().nulls_last(), Cdr.id.desc())


async def list_cdrs(
    scope: TenantScope,
    *,
    page: int,
    per_page: int,
    from_number: str | None,
    to_number: str | None,
    token: str | None,
    disposition: str | None,
    start_date: str | None,
    end_date: str | None,
) -> CdrPage:
    filters.check_page(page, per_page)
    f = await cdr_filters(
        scope,
        from_number=from_number,
        to_number=to_number,
        token=token,
        disposition=disposition,
        start_date=start_date,
        end_date=end_date,
    )
    result: Any = await paginate(scope.session, cdrs_stmt(scope, f), page, per_page, cdr_read)
    return CdrPage(data=result.data, meta=result.meta, filters_applied=f.applied)
