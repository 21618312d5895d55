"""Export requests: the filters (parsed by the lists' own code), the job rows and how they read."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import msgspec
from sqlalchemy import ColumnElement

from control_plane.auth.context import AuthContext
from control_plane.calls import service as calls
from control_plane.cdr import service as cdr
from control_plane.db.models import ExportJob
from control_plane.errors import FieldError
from control_plane.exports.fields import CATALOGUE, FILE_STEMS, ExportFormat, ExportType, select_fields
from control_plane.exports.schemas import ExportFields, ExportJobRead, ExportRequest, ExportTypeFields
from control_plane.tenancy import TenantScope

# The filters each export type takes, by the list routes' query names.
FILTERS: dict[ExportType, tuple[str, ...]] = {
    ExportType.CALL_RECORDS: (
        "agent_id",
        "group_id",
        "status",
        "direction",
        "from",
        "to",
        "start_date",
        "end_date",
        "min_duration",
        "max_duration",
    ),
    ExportType.CDR: ("from", "to", "token", "disposition", "start_date", "end_date"),
}
_INT_FILTERS = frozenset({"agent_id", "group_id", "min_duration", "max_duration"})


def where_clause(
    scope: TenantScope, kind: ExportType, resolved: Mapping[str, Any]
) -> ColumnElement[bool] | None:
    """The list's own WHERE (tenant filter included) for filters stored by ``resolve_filters``."""
    if kind is ExportType.CALL_RECORDS:
        return calls.records_stmt(scope, msgspec.convert(resolved, calls.RecordFilters)).whereclause
    return cdr.cdrs_stmt(scope, msgspec.convert(resolved, cdr.CdrFilters)).whereclause


def record_where(scope: TenantScope, f: calls.RecordFilters) -> ColumnElement[bool] | None:
    return calls.records_stmt(scope, f).whereclause


def cdr_where(scope: TenantScope, f: cdr.CdrFilters) -> ColumnElement[bool] | None:
    return cdr.cdrs_stmt(scope, f).whereclause


def _filter_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _INT_FILTERS:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise FieldError((f"filters.{name}", "must be an integer"))
        try:
            return int(value)
        except ValueError:
            raise FieldError((f"filters.{name}", "must be an integer")) from None
    if not isinstance(value, str):
        raise FieldError((f"filters.{name}", "must be a string"))
    return value


async def resolve_filters(
    scope: TenantScope, kind: ExportType, given: Mapping[str, Any]
) -> calls.RecordFilters | cdr.CdrFilters:
    """The body's ``filters`` validated by the list's own parser (422 naming ``filters.<name>``); dates
    are resolved in the tenant's time zone now, so the file holds what was asked when it was asked."""
    allowed = FILTERS[kind]
    for name in given:
        if name not in allowed:
            raise FieldError((f"filters.{name}", f"unknown filter; one of {', '.join(allowed)}"))
    v = {name: _filter_value(name, given.get(name)) for name in allowed}
    try:
        if kind is ExportType.CALL_RECORDS:
            return await calls.record_filters(
                scope,
                agent_id=v["agent_id"],
                group_id=v["group_id"],
                status=v["status"],
                direction=v["direction"],
                from_number=v["from"],
                to_number=v["to"],
                start_date=v["start_date"],
                end_date=v["end_date"],
                min_duration=v["min_duration"],
                max_duration=v["max_duration"],
            )
        return await cdr.cdr_filters(
            scope,
            from_number=v["from"],
            to_number=v["to"],
            token=v["token"],
            disposition=v["disposition"],
            start_date=v["start_date"],
            end_date=v["end_date"],
        )
    except FieldError as exc:
        errors = exc.extra if isinstance(exc.extra, list) else []
        raise FieldError(*((f"filters.{e['field']}", e["message"]) for e in errors)) from None


async def create_job(auth: AuthContext, body: ExportRequest) -> ExportJob:
    kind = ExportType(body.type)
    fields = select_fields(kind, body.fields)
    resolved = await resolve_filters(auth.scope, kind, body.filters)
    job = ExportJob(
        user_id=auth.user.id,
        type=kind.value,
        format=body.format,
        fields=[f.name for f in fields],
        filters={k: v for k, v in body.filters.items() if v is not None},
        resolved_filters=msgspec.to_builtins(resolved),
        anonymize=body.anonymize,
        status="queued",
        attempts=0,
    )
    auth.scope.add(job)
    await auth.scope.session.flush()
    return job


def file_name(job: ExportJob) -> str:
    """``call-records-2026-12-01.csv.gz``: the day the job was asked for (UTC)."""
    day = (job.created_at or datetime.datetime.now(datetime.UTC)).date().isoformat()
    return f"{FILE_STEMS[ExportType(job.type)]}-{day}.{job.format}.gz"


def job_status(job: ExportJob, now: datetime.datetime) -> str:
    """A done job past its expiry reads as expired even before the sweeper has deleted its file."""
    if job.status == "done" and job.expires_at is not None and job.expires_at <= now:
        return "expired"
    return job.status


def job_read(job: ExportJob) -> ExportJobRead:
    status = job_status(job, datetime.datetime.now(datetime.UTC))
    return ExportJobRead(
        id=job.id,
        type=job.type,
        format=job.format,
        fields=list(job.fields),
        filters=dict(job.filters),
        anonymize=job.anonymize,
        status=status,
        rows=job.rows,
        bytes=job.bytes,
        error=job.error,
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        expires_at=job.expires_at,
        download_url=f"/api/exports/{job.id}/download" if status == "done" else None,
        filename=file_name(job),
    )


def export_fields() -> ExportFields:
    return ExportFields(
        data=[
            ExportTypeFields(
                type=kind.value,
                fields=[f.name for f in CATALOGUE[kind]],
                filters=list(FILTERS[kind]),
                formats=[f.value for f in ExportFormat],
            )
            for kind in ExportType
        ]
    )
