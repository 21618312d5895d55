"""Build one tenant's TenantSnapshot from the database (DESIGN §2).

Webhook keys travel only as their stored sha256 hashes. Agent credentials are decrypted with
``VLB_SECRET_KEY`` and re-sealed as one Fernet token (``VLB_SNAPSHOT_KEY``) of msgpack
``{"username", "password"}``, so only engines holding the snapshot key can read them.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any, TypeVar

import msgspec
import structlog
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.crypto import SecretKeyMissing, decrypt
from control_plane.db.base import TenantOwned
from control_plane.db.models import (
    AgentGroup,
    AgentGroupMember,
    Domain,
    InboundRoutingRule,
    OutboundRoutingRule,
    Tenant,
    Trunk,
    VoiceAgent,
)
from control_plane.tenancy import TenantScope
from shared.enums import Strategy, TargetType
from shared.snapshot import (
    AgentSnap,
    DomainSnap,
    GroupSettings,
    GroupSnap,
    InboundRuleSnap,
    MemberSnap,
    OutboundRuleSnap,
    RuleSchedule,
    SplitTarget,
    TenantSettings,
    TenantSnapshot,
    TrunkSnap,
)

log = structlog.get_logger("control_plane.snapshots")


class Credentials(msgspec.Struct, kw_only=True):
    """What an agent's ``credentials`` token holds once decrypted with the snapshot key."""

    username: str | None = None
    password: str | None = None


_CREDENTIALS_ENCODER = msgspec.msgpack.Encoder()
M = TypeVar("M", bound=TenantOwned)


@lru_cache(maxsize=4)
def _snapshot_fernet(key: str) -> Fernet:
    if not key:
        raise SecretKeyMissing("VLB_SNAPSHOT_KEY is not set: agent credentials cannot travel in snapshots")
    return Fernet(key.encode())


def inbound_rule_snap(rule: InboundRoutingRule) -> InboundRuleSnap:
    return InboundRuleSnap(
        id=rule.id,
        name=rule.name,
        pattern=rule.pattern,
        caller_pattern=rule.caller_pattern,
        target_type=TargetType(rule.target_type),
        target_id=rule.target_id,
        priority=rule.priority,
        enabled=rule.enabled,
        domain_id=rule.domain_id,
        schedule=msgspec.convert(rule.schedule, RuleSchedule) if rule.schedule is not None else None,
        targets=msgspec.convert(rule.targets, list[SplitTarget]) if rule.targets else [],
    )


def outbound_rule_snap(rule: OutboundRoutingRule) -> OutboundRuleSnap:
    return msgspec.convert(rule, OutboundRuleSnap, from_attributes=True)


def trunk_snap(trunk: Trunk) -> TrunkSnap:
    return msgspec.convert(trunk, TrunkSnap, from_attributes=True)


def seal_credentials(agent: VoiceAgent, secret_key: str, snapshot_key: str) -> str | None:
    """The agent's credentials re-encrypted for engines, or None when it has none."""
    if agent.username_enc is None and agent.password_enc is None:
        return None
    creds = Credentials(
        username=decrypt(secret_key, agent.username_enc) if agent.username_enc else None,
        password=decrypt(secret_key, agent.password_enc) if agent.password_enc else None,
    )
    return _snapshot_fernet(snapshot_key).encrypt(_CREDENTIALS_ENCODER.encode(creds)).decode()


def _tenant_settings(tenant: Tenant) -> TenantSettings:
    try:
        return msgspec.convert(tenant.settings or {}, TenantSettings, strict=False)
    except msgspec.ValidationError as exc:
        log.warning("snapshot_tenant_settings_invalid", tenant_id=tenant.id, error=str(exc))
        return TenantSettings()


def _group_settings(group: AgentGroup) -> GroupSettings:
    try:
        # Settings other engineers' features add are kept in the DB; the snapshot carries what it knows.
        known = {f.name for f in msgspec.structs.fields(GroupSettings)}
        raw = {k: v for k, v in (group.settings or {}).items() if k in known}
        return msgspec.convert(raw, GroupSettings, strict=False)
    except msgspec.ValidationError as exc:
        log.warning("snapshot_group_settings_invalid", group_id=group.id, error=str(exc))
        return GroupSettings()


async def compile_snapshot(
    session: AsyncSession, tenant_id: int, *, secret_key: str, snapshot_key: str
) -> TenantSnapshot | None:
    """The tenant's whole routing config at its current ``config_version``; None if it is gone."""
    tenant = await session.get(Tenant, tenant_id, populate_existing=True)
    if tenant is None:
        return None
    scope = TenantScope(session=session, tenant_id=tenant_id)

    async def rows(model: type[M], *order: Any) -> list[M]:
        return list((await session.scalars(scope.select(model).order_by(*order))).all())

    domains = await rows(Domain, Domain.id)
    agents = await rows(VoiceAgent, VoiceAgent.id)
    groups = await rows(AgentGroup, AgentGroup.id)
    members = await rows(AgentGroupMember, AgentGroupMember.priority, AgentGroupMember.id)
    inbound = await rows(InboundRoutingRule, InboundRoutingRule.priority, InboundRoutingRule.id)
    outbound = await rows(OutboundRoutingRule, OutboundRoutingRule.priority, OutboundRoutingRule.id)
    trunks = await rows(Trunk, Trunk.priority, Trunk.id)

    by_group: dict[int, list[MemberSnap]] = {}
    for m in members:
        by_group.setdefault(m.group_id, []).append(
            MemberSnap(agent_id=m.agent_id, priority=m.priority, capacity=m.capacity, weight=m.weight)
        )
    group_snaps: list[GroupSnap] = []
    for g in groups:
        try:
            strategy = Strategy(g.strategy)
        except ValueError:
            log.warning("snapshot_group_strategy_unknown", group_id=g.id, strategy=g.strategy)
            continue
        group_snaps.append(
            GroupSnap(
                id=g.id,
                name=g.name,
                strategy=strategy,
                enabled=g.enabled,
                settings=_group_settings(g),
                members=by_group.get(g.id, []),
            )
        )
    return TenantSnapshot(
        tenant_id=tenant_id,
        version=int(tenant.config_version),
        compiled_at=time.time(),
        settings=_tenant_settings(tenant),
        domains=[
            DomainSnap(
                id=d.id,
                name=d.name,
                key_hash=d.key_hash,
                allowed_networks=list(d.allowed_networks or []),
                max_requests_per_second=d.max_requests_per_second,
                aliases=list(d.aliases or []),
            )
            for d in domains
        ],
        agents=[_agent_snap(a, secret_key, snapshot_key) for a in agents],
        groups=group_snaps,
        inbound_rules=[inbound_rule_snap(r) for r in inbound],
        outbound_rules=[outbound_rule_snap(r) for r in outbound],
        trunks=[trunk_snap(t) for t in trunks],
    )


def _agent_snap(agent: VoiceAgent, secret_key: str, snapshot_key: str) -> AgentSnap:
    enabled = agent.enabled
    try:
        credentials = seal_credentials(agent, secret_key, snapshot_key)
    except SecretKeyMissing as exc:
        # One unreadable secret must not hold back the tenant's whole config: the agent travels
        # disabled (engines never dial it without its credentials) and the problem is logged.
        log.error("snapshot_agent_credentials_unusable", agent_id=agent.id, error=str(exc))
        credentials, enabled = None, False
    return AgentSnap(
        id=agent.id,
        name=agent.name,
        provider=agent.provider,
        service_value=agent.service_value,
        enabled=enabled,
        credentials=credentials,
    )
