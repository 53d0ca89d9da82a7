"""Who is calling: the principal of a request, and the local user of a loopback server."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from parley.store.db import Database
from parley.store.schema import User

LOCAL_USER_NAME = "local"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    name: str
    is_admin: bool = False
    #: The API key the request came with; None for the anonymous local user.
    key_id: str | None = None


async def ensure_local_user(db: Database) -> Principal:
    """The anonymous user of a server bound to loopback: the machine's owner, so an admin."""
    async with db.transaction() as session:
        user = await session.scalar(select(User).where(User.name == LOCAL_USER_NAME).order_by(User.id))
        if user is None:
            user = User(name=LOCAL_USER_NAME, is_admin=True)
            session.add(user)
            await session.flush()
        return Principal(user.id, user.name, user.is_admin)


async def create_user(db: Database, name: str, *, is_admin: bool = False) -> Principal:
    async with db.transaction() as session:
        user = User(name=name, is_admin=is_admin)
        session.add(user)
        await session.flush()
        return Principal(user.id, user.name, user.is_admin)
