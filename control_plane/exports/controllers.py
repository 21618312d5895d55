"""Routes: streaming exports of call records and CDRs, and asynchronous export jobs (SPEC §2.7, §2.9)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Schema
from litestar.params import JSONBody, QueryParameter
from litestar.response import Stream
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT, HTTP_410_GONE
from sqlalchemy import ColumnElement

from control_plane.auth.context import VIEWER_MAY_WRITE, Auth, DbSession
from control_plane.calls import filters
from control_plane.calls.controllers import FILTERS as RECORD_FILTERS
from control_plane.calls.controllers import RecordFilters
from control_plane.cdr import service as cdr
from control_plane.db.models import ExportJob
from control_plane.exports import objects, service
from control_plane.exports.fields import (
    FILE_STEMS,
    MEDIA_TYPES,
    ExportFormat,
    ExportType,
    select_fields,
)
from control_plane.exports.query import ExportStream, build_query
from control_plane.exports.schemas import ExportFields, ExportJobRead, ExportRequest
from control_plane.exports.worker import ExportWorker
from control_plane.params import MAX_TEXT, NO_NUL, Id, Text

FromNumber = Annotated[
    str | None, QueryParameter(name="from", max_length=MAX_TEXT, pattern=NO_NUL, required=False)
]
Format = Annotated[
    str, QueryParameter(max_length=MAX_TEXT, pattern=NO_NUL, description="csv (default), json or ndjson")
]
Fields = Annotated[
    str | None,
    QueryParameter(
        max_length=4096,
        pattern=NO_NUL,
        required=False,
        description="comma-separated field names (default all; see /api/exports/fields)",
    ),
]
Anonymize = Annotated[
    bool, QueryParameter(description="mask phone numbers but their last four digits, drop caller names")
]


@dataclass
class StreamedExport(Operation):
    """The OpenAPI operation of a streamed export: its 200 may be any of the formats' media types."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            ok.content = {media: OpenAPIMediaType(schema=Schema()) for media in MEDIA_TYPES.values()}
            ok.description = "The file: CSV with a header row, one JSON array, or NDJSON (per ``format``)."


class Gone(HTTPException):
    status_code = HTTP_410_GONE


class NotReady(HTTPException):
    status_code = HTTP_409_CONFLICT


async def provide_cdr_filters(
    auth: Auth,
    from_number: FromNumber = None,
    to: Text = None,
    token: Text = None,
    disposition: Text = None,
    start_date: Text = None,
    end_date: Text = None,
) -> cdr.CdrFilters:
    """The CDR list's filters: ``from``, ``to``, ``token`` match part of the value; ``disposition`` one of
    ANSWER, BUSY, CANCEL, FAILED, CONGESTION, NOANSWER; dates are the tenant's days."""
    return await cdr.cdr_filters(
        auth.scope,
        from_number=from_number,
        to_number=to,
        token=token,
        disposition=disposition,
        start_date=start_date,
        end_date=end_date,
    )


CdrFilters = NamedDependency[cdr.CdrFilters]


def _worker(request: Request[Any, Any, Any]) -> ExportWorker:
    worker: ExportWorker = request.app.state.exports
    return worker


async def _stream(
    request: Request[Any, Any, Any],
    kind: ExportType,
    where: ColumnElement[bool] | None,
    format: str,
    fields: str | None,
    anonymize: bool,
) -> Stream:
    fmt = filters.parse_enum("format", format, ExportFormat) or ExportFormat.CSV
    chosen = select_fields(kind, fields)
    worker = _worker(request)
    query = build_query(worker.dialect, kind, where, chosen, fmt, anonymize)
    stream = ExportStream(await worker.stream_connection(), query)
    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    name = f"{FILE_STEMS[kind]}-{day}.{fmt.value}"
    return Stream(
        stream,
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
        # Runs once the body is sent or the client left: the stream's connection is given back.
        background=BackgroundTask(stream.aclose),
    )


class ExportsController(Controller):
    path = "/api/exports"
    tags = ["exports"]

    @get(
        "/call-records",
        dependencies=RECORD_FILTERS,
        media_type=MEDIA_TYPES[ExportFormat.CSV],
        operation_class=StreamedExport,
    )
    async def call_records(
        self,
        request: Request[Any, Any, Any],
        auth: Auth,
        record_filters: RecordFilters,
        format: Format = "csv",
        fields: Fields = None,
        anonymize: Anonymize = False,
    ) -> Stream:
        """The call records the list's filters select, streamed as one file (CSV with a header row,
        one JSON array, or NDJSON), oldest call first. Viewers may export."""
        where = service.record_where(auth.scope, record_filters)
        return await _stream(request, ExportType.CALL_RECORDS, where, format, fields, anonymize)

    @get(
        "/cdr",
        dependencies={"cdr_filters": Provide(provide_cdr_filters)},
        media_type=MEDIA_TYPES[ExportFormat.CSV],
        operation_class=StreamedExport,
    )
    async def cdrs(
        self,
        request: Request[Any, Any, Any],
        auth: Auth,
        cdr_filters: CdrFilters,
        format: Format = "csv",
        fields: Fields = None,
        anonymize: Anonymize = False,
    ) -> Stream:
        """The CDRs the list's filters select, streamed as one file, oldest first."""
        where = service.cdr_where(auth.scope, cdr_filters)
        return await _stream(request, ExportType.CDR, where, format, fields, anonymize)

    @get("/fields")
    async def fields(self, auth: Auth) -> ExportFields:
        """The fields, filters and formats each export type takes."""
        return service.export_fields()

    # Asking for a file reads data and changes nothing: viewers may (as they may stream one).
    @post("/", status_code=HTTP_202_ACCEPTED, opt={VIEWER_MAY_WRITE: True})
    async def create(
        self,
        request: Request[Any, Any, Any],
        auth: Auth,
        db_session: DbSession,
        data: JSONBody[ExportRequest],
    ) -> ExportJobRead:
        """Queue an export written in the background into a gzip file (any control plane may run it;
        poll ``/status``, then ``/download``). Filters by the lists' query names."""
        read = service.job_read(await service.create_job(auth, data))
        await db_session.commit()  # visible to this process's worker, woken now
        _worker(request).wake()
        return read

    @get("/{export_id:int}/status")
    async def status(self, auth: Auth, export_id: Id) -> ExportJobRead:
        """The job: queued, running, done (with its download URL), failed or expired."""
        return service.job_read(await auth.scope.get(ExportJob, export_id, "export"))

    @get("/{export_id:int}/download", media_type="application/gzip")
    async def download(self, request: Request[Any, Any, Any], auth: Auth, export_id: Id) -> Stream:
        """The job's gzip file (served as stored, ``application/gzip``), streamed from the object
        store. 409 while it is not done, 410 once it has expired."""
        job = await auth.scope.get(ExportJob, export_id, "export")
        status = service.job_status(job, datetime.datetime.now(datetime.UTC))
        if status == "expired":
            raise Gone("The export has expired; request it again.")
        if status != "done" or not job.object_name:
            raise NotReady(f"The export is {status}.")
        js, store = await _worker(request).object_store()
        info = await objects.object_info(store, job.object_name)
        if info is None:
            raise Gone("The export file is no longer stored; request it again.")
        return Stream(
            objects.read_object(js, _worker(request).settings.exports_bucket, info),
            media_type="application/gzip",
            headers={
                "Content-Disposition": f'attachment; filename="{service.file_name(job)}"',
                "Content-Length": str(info.size or 0),
                "Cache-Control": "no-store",
            },
        )
