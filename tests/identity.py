"""Test helpers: users with API keys, and clients that call as them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from parley.keys import create_key
from tests.conftest import Server


async def key_for(server: Server, user: str, *, admin: bool = False) -> str:
    return (await create_key(server.parley.db, user, admin=admin)).secret


@asynccontextmanager
async def client_as(server: Server, user: str, *, admin: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends a fresh API key of ``user`` (created if new)."""
    secret = await key_for(server, user, admin=admin)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    ) as client:
        yield client
