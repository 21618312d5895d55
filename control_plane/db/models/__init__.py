"""All models, imported here so Alembic and create_all see every table."""

from control_plane.db.models.agents import VoiceAgent
from control_plane.db.models.analytics import CallStat, CallStatDay, CallStatDuration, CallStatTenant
from control_plane.db.models.calls import CallRecord, CallTimelineEntry, Cdr, WebhookAudit
from control_plane.db.models.exports import ExportJob
from control_plane.db.models.groups import AgentGroup, AgentGroupMember
from control_plane.db.models.retention import PurgeRun
from control_plane.db.models.routing import InboundRoutingRule, OutboundRoutingRule, Trunk
from control_plane.db.models.tenants import Domain, SnapshotOutbox, Tenant
from control_plane.db.models.users import ApiToken, User

__all__ = [
    "AgentGroup",
    "AgentGroupMember",
    "ApiToken",
    "CallRecord",
    "CallStat",
    "CallStatDay",
    "CallStatDuration",
    "CallStatTenant",
    "CallTimelineEntry",
    "Cdr",
    "Domain",
    "ExportJob",
    "InboundRoutingRule",
    "OutboundRoutingRule",
    "PurgeRun",
    "SnapshotOutbox",
    "Tenant",
    "Trunk",
    "User",
    "VoiceAgent",
    "WebhookAudit",
]
