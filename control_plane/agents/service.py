"""Voice-agent rules: provider validation, unique names, encrypted credentials, and the references
that keep an agent (or group) from being deleted."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.exceptions import ServiceUnavailableException
from sqlalchemy import func, select

from control_plane.agents.schemas import (
    METADATA_MAX_BYTES,
    AgentCreateIn,
    AgentRead,
    AgentUpdateIn,
    Problem,
)
from control_plane.crypto import SecretKeyMissing, decrypt, encrypt
from control_plane.db.models import InboundRoutingRule, VoiceAgent
from control_plane.errors import Conflict, FieldError
from control_plane.settings import get_settings
from control_plane.tenancy import TenantScope
from shared.enums import TargetType
from shared.providers import validate_agent

# Stands in for a stored credential when only its presence matters (validation never decrypts).
_PRESENT = "stored"


def agent_read(agent: VoiceAgent) -> AgentRead:
    return AgentRead(
        id=agent.id,
        tenant_id=agent.tenant_id,
        name=agent.name,
        provider=agent.provider,
        service_value=agent.service_value,
        has_credentials=agent.username_enc is not None or agent.password_enc is not None,
        enabled=agent.enabled,
        metadata=agent.meta or {},
        created_at=agent.created_at,
        updated_at=agent.updated_at,
    )


def _seal(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return encrypt(get_settings().secret_key, value)
    except SecretKeyMissing as exc:
        raise ServiceUnavailableException("Credentials cannot be stored: VLB_SECRET_KEY is not set.") from exc


def _check_metadata(metadata: dict[str, Any]) -> None:
    if len(msgspec.json.encode(metadata)) > METADATA_MAX_BYTES:
        raise FieldError(("metadata", f"metadata is larger than {METADATA_MAX_BYTES // 1024} KB of JSON"))


def _check_config(provider: str, service_value: str, username: str | None, password: str | None) -> None:
    problems = validate_agent(provider, service_value, username, password)
    if problems:
        raise FieldError(*problems)


async def _ensure_name_free(scope: TenantScope, name: str, except_id: int | None = None) -> None:
    stmt = scope.where(select(func.count()).select_from(VoiceAgent), VoiceAgent).where(
        VoiceAgent.name == name
    )
    if except_id is not None:
        stmt = stmt.where(VoiceAgent.id != except_id)
    if await scope.session.scalar(stmt):
        raise FieldError(("name", "An agent with this name already exists."))


async def create_agent(scope: TenantScope, data: AgentCreateIn) -> VoiceAgent:
    name = data.name.strip()
    if not name:
        raise FieldError(("name", "name must not be blank"))
    service_value = data.service_value.strip()
    _check_config(data.provider, service_value, data.username, data.password)
    _check_metadata(data.metadata)
    await _ensure_name_free(scope, name)
    agent = scope.add(
        VoiceAgent(
            name=name,
            provider=data.provider,
            service_value=service_value,
            username_enc=_seal(data.username),
            password_enc=_seal(data.password),
            enabled=data.enabled,
            meta=data.metadata,
        )
    )
    await scope.config_changed()
    return agent


def _credential_after(given: str | msgspec.UnsetType | None) -> tuple[bool, str | None]:
    """(changed, new plaintext or None) for a partial update of one credential."""
    if given is msgspec.UNSET or given == "":
        return False, None
    return True, given if isinstance(given, str) else None


async def update_agent(scope: TenantScope, agent: VoiceAgent, data: AgentUpdateIn) -> VoiceAgent:
    name = agent.name if isinstance(data.name, msgspec.UnsetType) else data.name.strip()
    if not name:
        raise FieldError(("name", "name must not be blank"))
    provider = agent.provider if isinstance(data.provider, msgspec.UnsetType) else data.provider
    service_value = (
        agent.service_value
        if isinstance(data.service_value, msgspec.UnsetType)
        else data.service_value.strip()
    )
    user_changed, username = _credential_after(data.username)
    pass_changed, password = _credential_after(data.password)
    # Validate the combination the agent will have after this update.
    _check_config(
        provider,
        service_value,
        username if user_changed else (_PRESENT if agent.username_enc else None),
        password if pass_changed else (_PRESENT if agent.password_enc else None),
    )
    if not isinstance(data.metadata, msgspec.UnsetType):
        _check_metadata(data.metadata)
        agent.meta = data.metadata
    if name != agent.name:
        await _ensure_name_free(scope, name, except_id=agent.id)
    agent.name = name
    agent.provider = provider
    agent.service_value = service_value
    if user_changed:
        agent.username_enc = _seal(username)
    if pass_changed:
        agent.password_enc = _seal(password)
    if not isinstance(data.enabled, msgspec.UnsetType):
        agent.enabled = data.enabled
    await scope.config_changed()
    return agent


def stored_config_problems(agent: VoiceAgent) -> list[Problem]:
    """What is wrong with an agent as stored (``POST /api/voice-agents/{id}/validate``)."""
    found = validate_agent(
        agent.provider,
        agent.service_value,
        _PRESENT if agent.username_enc else None,
        _PRESENT if agent.password_enc else None,
    )
    key = get_settings().secret_key
    for field, token in (("username", agent.username_enc), ("password", agent.password_enc)):
        if token is None:
            continue
        try:
            decrypt(key, token)
        except SecretKeyMissing:
            found.append((field, f"the stored {field} cannot be decrypted with the configured key"))
    return [Problem(field=f, message=m) for f, m in found]


async def rules_targeting(
    scope: TenantScope, target_type: TargetType, target_id: int
) -> list[InboundRoutingRule]:
    stmt = (
        scope.select(InboundRoutingRule)
        .where(
            (
                (InboundRoutingRule.target_type == target_type.value)
                & (InboundRoutingRule.target_id == target_id)
            )
            # or a branch of a traffic split
            | InboundRoutingRule.targets.contains(
                [{"target_type": target_type.value, "target_id": target_id}]
            )
        )
        .order_by(InboundRoutingRule.priority, InboundRoutingRule.id)
    )
    return list((await scope.session.scalars(stmt)).all())


async def ensure_not_targeted(
    scope: TenantScope, target_type: TargetType, target_id: int, label: str
) -> None:
    """409 naming the inbound rules that route to this agent or group."""
    rules = await rules_targeting(scope, target_type, target_id)
    if rules:
        names = ", ".join(f"#{r.id}" + (f" {r.name!r}" if r.name else "") for r in rules)
        raise Conflict(
            f"{label} {target_id} is the target of inbound routing rule(s) {names}; "
            "change or delete those rules first."
        )


async def delete_agent(scope: TenantScope, agent: VoiceAgent) -> None:
    await ensure_not_targeted(scope, TargetType.AGENT, agent.id, "Voice agent")
    # Group memberships go with it (ON DELETE CASCADE).
    await scope.session.delete(agent)
    await scope.config_changed()
