"""Route: the webhook audit (SPEC §2.6): every webhook any engine received, newest first."""

from __future__ import annotations

from litestar import Controller, get

from control_plane.audit.schemas import AuditRead
from control_plane.auth.context import Auth
from control_plane.calls import filters
from control_plane.db.models import WebhookAudit
from control_plane.pagination import Page, paginate
from control_plane.params import PageNumber, PerPage200, Text
from shared.enums import EventKind


def audit_read(a: WebhookAudit) -> AuditRead:
    return AuditRead(
        id=a.id,
        event_id=a.event_id,
        event_type=a.event_type,
        domain=a.domain,
        session_token=a.session_token,
        outcome=a.outcome,
        latency_us=a.latency_us,
        engine_id=a.engine_id,
        body=a.payload,
        received_at=a.processed_at,
    )


class WebhookAuditController(Controller):
    path = "/api/webhook-audit"
    tags = ["calls"]

    @get("/")
    async def list_audit(
        self,
        auth: Auth,
        page: PageNumber = 1,
        per_page: PerPage200 = 50,
        event_type: Text = None,
        session_token: Text = None,
    ) -> Page[AuditRead]:
        """``event_type`` is one of routed, dial_status, session_update, cdr, rejected;
        ``session_token`` matches exactly."""
        filters.check_page(page, per_page)
        kind = filters.parse_enum("event_type", event_type, EventKind)
        stmt = auth.scope.select(WebhookAudit)
        if kind is not None:
            stmt = stmt.where(WebhookAudit.event_type == kind.value)
        if session_token is not None and session_token.strip():
            stmt = stmt.where(WebhookAudit.session_token == session_token.strip())
        stmt = stmt.order_by(WebhookAudit.processed_at.desc(), WebhookAudit.id.desc())
        return await paginate(auth.scope.session, stmt, page, per_page, audit_read)
