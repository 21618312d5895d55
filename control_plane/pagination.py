"""The list envelope every paginated route answers: ``{data, meta}`` (SPEC §2)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import msgspec
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")
M = TypeVar("M")


class PageMeta(msgspec.Struct, kw_only=True):
    current_page: int
    per_page: int
    total: int
    last_page: int
    from_: int | None = msgspec.field(name="from")
    to: int | None


class Page(msgspec.Struct, Generic[T], kw_only=True):
    data: list[T]
    meta: PageMeta


def page_meta(page: int, per_page: int, total: int, count: int) -> PageMeta:
    first = (page - 1) * per_page + 1
    return PageMeta(
        current_page=page,
        per_page=per_page,
        total=total,
        last_page=max(1, -(-total // per_page)),
        from_=first if count else None,
        to=first + count - 1 if count else None,
    )


async def paginate(
    session: AsyncSession,
    stmt: Select[Any],
    page: int,
    per_page: int,
    to_item: Callable[[Any], T],
) -> Page[T]:
    """Run ``stmt`` (already filtered and ordered) for one page plus a count of all rows."""
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows: Sequence[Any] = (await session.scalars(stmt.limit(per_page).offset((page - 1) * per_page))).all()
    return Page(data=[to_item(r) for r in rows], meta=page_meta(page, per_page, total, len(rows)))
