"""Routes: register, login, logout, the current user (and its /profile aliases), the tenant's users."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post, put
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.params import FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy import func, select

from control_plane.auth import service
from control_plane.auth.context import VIEWER_MAY_WRITE, Auth, DbSession
from control_plane.auth.passwords import hash_password, verify_password
from control_plane.auth.schemas import (
    AuthOut,
    LoginIn,
    MessageOut,
    PasswordChangeIn,
    RegisterIn,
    UserAdminUpdateIn,
    UserCreateIn,
    UserRead,
    UserUpdateIn,
)
from control_plane.auth.throttle import LoginThrottle
from control_plane.db.models import User
from control_plane.errors import FieldError
from control_plane.pagination import Page, paginate
from control_plane.params import Id, PageNumber, PerPage100, Search
from control_plane.settings import get_settings
from shared.enums import Role
from shared.redis_client import RedisClient


def _client(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


class AuthController(Controller):
    path = "/api"
    tags = ["auth"]

    @post("/register", status_code=HTTP_201_CREATED)
    async def register(self, data: JSONBody[RegisterIn], db_session: DbSession) -> AuthOut:
        """Create a tenant and its first user (admin); answers the user and a token."""
        if data.password != data.password_confirmation:
            raise FieldError(("password_confirmation", "The password confirmation does not match."))
        await service.ensure_email_free(db_session, data.email)
        tenant = await service.create_tenant(db_session, data.tenant_name or f"{data.name}'s organisation")
        user = await service.create_user(
            db_session, tenant.id, data.name, data.email, data.password, Role.ADMIN
        )
        token = await service.issue_token(db_session, user)
        return AuthOut(user=service.user_read(user), token=token)

    @post("/login", status_code=HTTP_200_OK)
    async def login(
        self, request: Request[Any, Any, Any], data: JSONBody[LoginIn], db_session: DbSession
    ) -> AuthOut:
        """Exchange e-mail and password for a bearer token. Repeated failures answer 429."""
        settings = get_settings()
        redis: RedisClient = request.app.state.redis
        throttle = LoginThrottle(
            redis, settings.redis_prefix, settings.login_max_attempts, settings.login_window_s
        )
        email = data.email.strip().lower()
        client = _client(request)
        wait = await throttle.retry_after(email, client)
        if wait:
            from litestar.exceptions import TooManyRequestsException

            raise TooManyRequestsException(
                f"Too many failed logins; try again in {wait} s.", headers={"Retry-After": str(wait)}
            )
        user = (await db_session.scalars(select(User).where(User.email == email))).one_or_none()
        if not verify_password(user.password_hash if user else None, data.password) or user is None:
            await throttle.failed(email, client)
            raise NotAuthorizedException("Invalid e-mail or password.")
        await throttle.succeeded(email, client)
        token = await service.issue_token(db_session, user)
        return AuthOut(user=service.user_read(user), token=token)

    @post("/logout", status_code=HTTP_200_OK, opt={VIEWER_MAY_WRITE: True})
    async def logout(self, auth: Auth, db_session: DbSession) -> MessageOut:
        """Revoke the token used for this request."""
        from sqlalchemy import update

        from control_plane.db.base import utcnow
        from control_plane.db.models import ApiToken

        await db_session.execute(
            update(ApiToken).where(ApiToken.id == auth.token_id).values(revoked_at=utcnow())
        )
        return MessageOut(message="Logged out.")

    @get(["/user", "/profile"])
    async def me(self, auth: Auth) -> UserRead:
        return service.user_read(auth.user)

    @put(["/user", "/profile"], opt={VIEWER_MAY_WRITE: True})
    async def update_me(self, auth: Auth, data: JSONBody[UserUpdateIn], db_session: DbSession) -> UserRead:
        auth.user.name = data.name
        await db_session.flush()
        return service.user_read(auth.user)

    @put(["/user/password", "/profile/password"], opt={VIEWER_MAY_WRITE: True})
    async def change_password(
        self, auth: Auth, data: JSONBody[PasswordChangeIn], db_session: DbSession
    ) -> MessageOut:
        """Change the password; every other token of the user is revoked."""
        if not verify_password(auth.user.password_hash, data.current_password):
            raise FieldError(("current_password", "The current password is wrong."))
        if data.password != data.password_confirmation:
            raise FieldError(("password_confirmation", "The password confirmation does not match."))
        auth.user.password_hash = hash_password(data.password)
        await service.revoke_tokens(db_session, auth.user.id, except_token=auth.token_id)
        return MessageOut(message="Password changed; other sessions were signed out.")


class UsersController(Controller):
    path = "/api/users"
    tags = ["users"]

    @get("/")
    async def list_users(
        self,
        auth: Auth,
        page: PageNumber = 1,
        per_page: PerPage100 = 20,
        search: Search = None,
        role: FromQuery[Role | None] = None,
    ) -> Page[UserRead]:
        stmt = auth.scope.select(User)
        if search:
            like = f"%{search}%"
            stmt = stmt.where(User.name.ilike(like) | User.email.ilike(like))
        if role is not None:
            stmt = stmt.where(User.role == role.value)
        return await paginate(auth.scope.session, stmt.order_by(User.id), page, per_page, service.user_read)

    @post("/", status_code=HTTP_201_CREATED)
    async def create_user(self, auth: Auth, data: JSONBody[UserCreateIn]) -> UserRead:
        user = await service.create_user(
            auth.scope.session, auth.tenant_id, data.name, data.email, data.password, data.role
        )
        return service.user_read(user)

    @get("/{user_id:int}")
    async def get_user(self, auth: Auth, user_id: Id) -> UserRead:
        return service.user_read(await auth.scope.get(User, user_id, "user"))

    @put("/{user_id:int}")
    async def update_user(self, auth: Auth, user_id: Id, data: JSONBody[UserAdminUpdateIn]) -> UserRead:
        user = await auth.scope.get(User, user_id, "user")
        if data.role is not None and data.role != Role(user.role):
            await self._keep_an_admin(auth, user, demoting=data.role != Role.ADMIN)
            user.role = data.role.value
        if data.name is not None:
            user.name = data.name
        if data.password is not None:
            user.password_hash = hash_password(data.password)
            await service.revoke_tokens(auth.scope.session, user.id)
        await auth.scope.session.flush()
        return service.user_read(user)

    @delete("/{user_id:int}", status_code=HTTP_204_NO_CONTENT)
    async def delete_user(self, auth: Auth, user_id: Id) -> None:
        user = await auth.scope.get(User, user_id, "user")
        if user.id == auth.user.id:
            raise PermissionDeniedException("You cannot delete yourself.")
        await self._keep_an_admin(auth, user, demoting=True)
        await auth.scope.session.delete(user)

    @staticmethod
    async def _keep_an_admin(auth: Auth, user: User, *, demoting: bool) -> None:
        if not demoting or user.role != Role.ADMIN.value:
            return
        admins = await auth.scope.session.scalar(
            auth.scope.where(select(func.count()).select_from(User), User).where(
                User.role == Role.ADMIN.value
            )
        )
        if (admins or 0) <= 1:
            raise FieldError(("role", "A tenant keeps at least one admin."))


__all__ = ["AuthController", "UsersController"]
