"""Wire shapes of the auth and users routes."""

from __future__ import annotations

import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from shared.enums import Role

Email = Annotated[str, Meta(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Password = Annotated[str, Meta(min_length=8, max_length=256)]
Name = Annotated[str, Meta(min_length=1, max_length=255)]


class RegisterIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    email: Email
    password: Password
    password_confirmation: str
    tenant_name: Annotated[str, Meta(min_length=1, max_length=255)] | None = None


class LoginIn(msgspec.Struct, kw_only=True):
    email: Annotated[str, Meta(max_length=320)]
    password: Annotated[str, Meta(max_length=256)]


class UserRead(msgspec.Struct, kw_only=True):
    id: int
    name: str
    email: str
    tenant_id: int
    role: Role
    created_at: datetime.datetime
    updated_at: datetime.datetime


class AuthOut(msgspec.Struct, kw_only=True):
    user: UserRead
    token: str


class UserUpdateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name


class PasswordChangeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    current_password: str
    password: Password
    password_confirmation: str


class UserCreateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    email: Email
    password: Password
    role: Role = Role.VIEWER


class UserAdminUpdateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name | None = None
    role: Role | None = None
    password: Password | None = None


class MessageOut(msgspec.Struct, kw_only=True):
    message: str
