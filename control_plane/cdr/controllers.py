"""Routes: CDR list and one CDR (SPEC §2.6)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import FromPath, FromQuery, QueryParameter

from control_plane.auth.context import Auth
from control_plane.cdr import service
from control_plane.cdr.schemas import CdrDetail, CdrPage
from control_plane.db.models import Cdr


class CdrController(Controller):
    path = "/api/cdr"
    tags = ["calls"]

    @get("/")
    async def list_cdrs(
        self,
        auth: Auth,
        page: FromQuery[int] = 1,
        per_page: FromQuery[int] = 50,
        from_number: Annotated[str | None, QueryParameter(name="from")] = None,
        to: FromQuery[str | None] = None,
        token: FromQuery[str | None] = None,
        disposition: FromQuery[str | None] = None,
        start_date: FromQuery[str | None] = None,
        end_date: FromQuery[str | None] = None,
    ) -> CdrPage:
        """CDRs, newest first. ``from``, ``to`` and ``token`` match part of the value; ``disposition`` is
        one of ANSWER, BUSY, CANCEL, FAILED, CONGESTION, NOANSWER; dates are the tenant's days
        (YYYY-MM-DD, both inclusive) or ISO 8601 date-times. ``filters_applied`` echoes what was used."""
        return await service.list_cdrs(
            auth.scope,
            page=page,
            per_page=per_page,
            from_number=from_number,
            to_number=to,
            token=token,
            disposition=disposition,
            start_date=start_date,
            end_date=end_date,
        )

    @get("/{cdr_id:int}")
    async def get_cdr(self, auth: Auth, cdr_id: FromPath[int]) -> CdrDetail:
        return service.cdr_detail(await auth.scope.get(Cdr, cdr_id, "CDR"))
