"""Owned objects: every user-owned row is read through its owner, and a stranger gets a 404.

A 404 (never a 403) means the existence of someone else's object is not revealed.
Routers for new kinds of objects use ``get_owned`` for ids in paths and bodies, and
``parley.threads.visible`` to restrict any other query.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.errors import not_found
from parley.threads import visible
from parley.users import Principal

M = TypeVar("M")


async def get_owned(
    session: AsyncSession,
    principal: Principal,
    model: type[M],
    ident: Any,
    *,
    kind: str,
    owner_column: str = "user_id",
    lock: bool = False,
) -> M:
    """The row of ``model`` with primary key ``ident`` if ``principal`` may see it; else 404."""
    table: Any = model
    stmt = visible(select(model).where(table.id == ident), principal, getattr(table, owner_column))
    if lock:
        stmt = stmt.with_for_update()
    row = await session.scalar(stmt)
    if row is None:
        raise not_found(kind, ident)
    return row
