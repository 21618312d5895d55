"""Routes: live calls, call statistics, one call's timeline, and the call-record lists (SPEC §2.6, §2.9)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from control_plane.auth.context import Auth
from control_plane.calls import filters, service
from control_plane.calls.schemas import (
    ActiveCalls,
    CallDetail,
    CallRecordRead,
    CallRecordSummary,
    CallStatistics,
    FilterOptions,
)
from control_plane.pagination import Page
from control_plane.params import (
    MAX_TEXT,
    NO_NUL,
    Id,
    IdFilter,
    PageNumber,
    PerPage200,
    Seconds,
    SessionToken,
    Text,
)

FromNumber = Annotated[
    str | None, QueryParameter(name="from", max_length=MAX_TEXT, pattern=NO_NUL, required=False)
]


class CallsController(Controller):
    path = "/api/calls"
    tags = ["calls"]

    @get("/active")
    async def active(self, auth: Auth) -> ActiveCalls:
        """Calls not yet in a terminal state, newest first."""
        return ActiveCalls(data=await service.active_calls(auth.scope))

    @get("/statistics")
    async def statistics(self, auth: Auth) -> CallStatistics:
        """Live calls now; calls started today and completed today, in the tenant's time zone."""
        return await service.statistics(auth.scope)

    @get("/{session_token:str}")
    async def call(self, auth: Auth, session_token: SessionToken) -> CallDetail:
        """One call with its full event timeline (with each event's source) and routing attempts."""
        return await service.call_detail(auth.scope, session_token)


async def provide_record_filters(
    auth: Auth,
    agent_id: IdFilter = None,
    group_id: IdFilter = None,
    status: Text = None,
    direction: Text = None,
    from_number: FromNumber = None,
    to: Text = None,
    start_date: Text = None,
    end_date: Text = None,
    min_duration: Seconds = None,
    max_duration: Seconds = None,
) -> service.RecordFilters:
    """The call-record filters of the query, shared by the list and its summary: ``from``/``to`` match
    part of the number; dates are the tenant's days."""
    return await service.record_filters(
        auth.scope,
        agent_id=agent_id,
        group_id=group_id,
        status=status,
        direction=direction,
        from_number=from_number,
        to_number=to,
        start_date=start_date,
        end_date=end_date,
        min_duration=min_duration,
        max_duration=max_duration,
    )


RecordFilters = NamedDependency[service.RecordFilters]
FILTERS = {"record_filters": Provide(provide_record_filters)}


class AnalyticsCallRecordsController(Controller):
    path = "/api"
    tags = ["calls"]

    # One handler for both paths: the original system listed them at /api/call-records.
    @get(["/analytics/call-records", "/call-records"], dependencies=FILTERS)
    async def call_records(
        self,
        auth: Auth,
        record_filters: RecordFilters,
        page: PageNumber = 1,
        per_page: PerPage200 = 50,
        sort: Text = None,
    ) -> Page[CallRecordRead]:
        """Call records, filtered (see the parameters); ``sort`` is a field (start_time, end_time,
        duration, created_at, status, id), ``-`` for descending."""
        filters.check_page(page, per_page)
        f = service.sorted_by(record_filters, sort)
        return await service.records_page(auth.scope, f, page, per_page)


class CallRecordsController(Controller):
    path = "/api/call-records"
    tags = ["calls"]

    @get("/{record_id:int}")
    async def get_record(self, auth: Auth, record_id: Id) -> CallRecordRead:
        return await service.get_record(auth.scope, record_id)

    @get("/statistics/summary", dependencies=FILTERS)
    async def summary(self, auth: Auth, record_filters: RecordFilters) -> CallRecordSummary:
        """Counts by status and direction, success rate and durations of the records the filters select."""
        return await service.summary(auth.scope, record_filters)

    @get("/filters/options")
    async def filter_options(self, auth: Auth) -> FilterOptions:
        """The values the list filters accept: statuses, directions, dispositions, the tenant's agents
        and groups."""
        return await service.filter_options(auth.scope)
