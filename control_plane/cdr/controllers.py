"""Routes: CDR list and one CDR (SPEC §2.6)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import QueryParameter

from control_plane.auth.context import Auth
from control_plane.cdr import service
from control_plane.cdr.schemas import CdrDetail, CdrPage
from control_plane.db.models import Cdr
from control_plane.params import MAX_TEXT, NO_NUL, Id, PageNumber, PerPage200, Text


class CdrController(Controller):
    path = "/api/cdr"
    tags = ["calls"]

    @get("/")
    async def list_cdrs(
        self,
        auth: Auth,
        page: PageNumber = 1,
        per_page: PerPage200 = 50,
        from_number: Annotated[
            str | None, QueryParameter(name="from", max_length=MAX_TEXT, pattern=NO_NUL, required=False)
        ] = None,
        to: Text = None,
        token: Text = None,
        disposition: Text = None,
        start_date: Text = None,
        end_date: Text = None,
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
    async def get_cdr(self, auth: Auth, cdr_id: Id) -> CdrDetail:
        return service.cdr_detail(await auth.scope.get(Cdr, cdr_id, "CDR"))
