"""Test helpers: users with API keys, and clients that call as them.

Same helpers as the identity branch's (``key_for``, ``client_as``). Until that branch is on
main, keys are checked by a stand-in installed on the test server's ``Parley.authenticate``
(the auth seam): ``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` is the user the key
was made for, an unknown key is a 401, and no key is the local user, as before.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Request
from sqlalchemy import select

from parley.errors import ApiError
from parley.store.schema import User
from parley.users import Principal
from tests.conftest import Server


def _keys(server: Server) -> dict[str, Principal]:
    parley = server.parley
    keys: dict[str, Principal] | None = getattr(parley, "_test_keys", None)
    if keys is not None:
        return keys
    table: dict[str, Principal] = {}
    anonymous = parley.authenticate

    async def authenticate(request: Request) -> Principal:
        secret = request.headers.get("x-api-key")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            secret = header[7:].strip()
        if not secret:
            return await anonymous(request)
        principal = table.get(secret)
        if principal is None:
            raise ApiError(401, "invalid_api_key", "the API key is not valid or has been revoked")
        return principal

    parley.authenticate = authenticate  # type: ignore[method-assign]
    parley._test_keys = table  # type: ignore[attr-defined]
    return table


async def key_for(server: Server, user: str, *, admin: bool = False) -> str:
    """A new key for ``user`` (created if new; ``admin`` also promotes an existing user)."""
    async with server.parley.db.transaction() as session:
        row = await session.scalar(select(User).where(User.name == user).order_by(User.id))
        if row is None:
            row = User(name=user, is_admin=admin)
            session.add(row)
            await session.flush()
        elif admin:
            row.is_admin = True
        principal = Principal(row.id, row.name, row.is_admin)
    secret = "prl_" + secrets.token_urlsafe(32)
    _keys(server)[secret] = principal
    return secret


@asynccontextmanager
async def client_as(server: Server, user: str, *, admin: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends a fresh API key of ``user`` (created if new)."""
    secret = await key_for(server, user, admin=admin)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    ) as client:
        yield client
