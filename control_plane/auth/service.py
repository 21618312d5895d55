"""Account rules: creating tenants and users, issuing and revoking tokens."""

from __future__ import annotations

import msgspec
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.auth.passwords import hash_password
from control_plane.auth.schemas import UserRead
from control_plane.auth.tokens import format_token, hash_secret, new_secret
from control_plane.db.base import utcnow
from control_plane.db.models import ApiToken, Tenant, User
from control_plane.errors import FieldError
from shared.enums import Role
from shared.snapshot import TenantSettings


def user_read(user: User) -> UserRead:
    return UserRead(
        id=user.id,
        name=user.name,
        email=user.email,
        tenant_id=user.tenant_id,
        role=Role(user.role),
        created_at=user.created_at,
        updated_at=user.updated_at,
    )


async def ensure_email_free(session: AsyncSession, email: str) -> str:
    normalized = email.strip().lower()
    taken = await session.scalar(select(func.count()).select_from(User).where(User.email == normalized))
    if taken:
        raise FieldError(("email", "This e-mail is already registered."))
    return normalized


async def create_tenant(session: AsyncSession, name: str) -> Tenant:
    tenant = Tenant(name=name, settings=msgspec.to_builtins(TenantSettings()), config_version=0)
    session.add(tenant)
    await session.flush()
    return tenant


async def create_user(
    session: AsyncSession, tenant_id: int, name: str, email: str, password: str, role: Role
) -> User:
    user = User(
        tenant_id=tenant_id,
        name=name,
        email=await ensure_email_free(session, email),
        password_hash=hash_password(password),
        role=role.value,
    )
    session.add(user)
    await session.flush()
    return user


async def issue_token(session: AsyncSession, user: User, name: str = "login") -> str:
    secret = new_secret()
    token = ApiToken(tenant_id=user.tenant_id, user_id=user.id, token_hash=hash_secret(secret), name=name)
    session.add(token)
    await session.flush()
    return format_token(token.id, secret)


async def revoke_tokens(session: AsyncSession, user_id: int, *, except_token: int | None = None) -> None:
    stmt = update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    if except_token is not None:
        stmt = stmt.where(ApiToken.id != except_token)
    await session.execute(stmt.values(revoked_at=utcnow()))
