"""Reading CDRs: the filtered list (with the filters echoed) and one record."""

from __future__ import annotations

from typing import Any

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
    applied: dict[str, str] = {}
    stmt = scope.select(Cdr)
    if disposition is not None and disposition.strip():
        parsed = normalize_disposition(disposition)
        if parsed is None:
            allowed = ", ".join(d.value for d in Disposition)
            raise FieldError(("disposition", f"unknown value {disposition[:40]!r}; one of {allowed}"))
        stmt = stmt.where(Cdr.disposition == parsed.value)
        applied["disposition"] = parsed.value
    if start_date or end_date:
        since, until = filters.date_window(start_date, end_date, await filters.tenant_zone(scope))
        if since is not None:
            stmt = stmt.where(Cdr.start_time >= since)
            applied["start_date"] = start_date or ""
        if until is not None:
            stmt = stmt.where(Cdr.start_time < until)
            applied["end_date"] = end_date or ""
    for field, column, value in (
        ("from", Cdr.from_number, from_number),
        ("to", Cdr.to_number, to_number),
        ("token", Cdr.session_token, token),
    ):
        if value is not None and value.strip():
            stmt = stmt.where(column.ilike(_like(value.strip()), escape="\\"))
            applied[field] = value.strip()
    stmt = stmt.order_by(Cdr.start_time.desc().nulls_last(), Cdr.id.desc())
    result: Any = await paginate(scope.session, stmt, page, per_page, cdr_read)
    return CdrPage(data=result.data, meta=result.meta, filters_applied=applied)
