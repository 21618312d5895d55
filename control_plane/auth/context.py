"""Who is calling: resolved once per request from the bearer token (a Litestar dependency)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.auth.tokens import parse_token, secret_matches
from control_plane.db.base import utcnow
from control_plane.db.models import ApiToken, User
from control_plane.tenancy import TenantScope
from shared.enums import Role

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Route opt that lets a viewer call a non-GET route about themselves (profile, password, logout).
VIEWER_MAY_WRITE = "viewer_may_write"
_TOUCH_EVERY = datetime.timedelta(minutes=1)


@dataclass(slots=True)
class AuthContext:
    user: User
    token_id: int
    scope: TenantScope

    @property
    def tenant_id(self) -> int:
        return self.scope.tenant_id

    @property
    def is_admin(self) -> bool:
        return self.user.role == Role.ADMIN.value


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def authenticate(session: AsyncSession, raw: str | None) -> tuple[User, ApiToken] | None:
    parsed = parse_token(raw) if raw else None
    if parsed is None:
        return None
    token_id, secret = parsed
    row = (
        await session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        )
    ).one_or_none()
    if row is None or not secret_matches(row[0].token_hash, secret):
        return None
    token, user = row
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > _TOUCH_EVERY:
        await session.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
    return user, token


async def provide_auth(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> AuthContext:
    """401 without a valid token; 403 when a viewer calls a write route."""
    found = await authenticate(db_session, bearer_token(request))
    if found is None:
        raise NotAuthorizedException("Missing or invalid bearer token.")
    user, token = found
    ctx = AuthContext(user=user, token_id=token.id, scope=TenantScope(db_session, user.tenant_id))
    if (
        request.method not in SAFE_METHODS
        and not ctx.is_admin
        and not request.route_handler.opt.get(VIEWER_MAY_WRITE)
    ):
        raise PermissionDeniedException("This action needs the admin role.")
    return ctx


# Handler parameter types: `auth: Auth`, `db_session: DbSession` (explicit Litestar dependency markers).
Auth = NamedDependency[AuthContext]
DbSession = NamedDependency[AsyncSession]
