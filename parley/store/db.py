"""The engine, sessions and migrations.

SQLite runs in WAL mode; transactions that read before they write (``Database.transaction``)
take the write lock up front (``BEGIN IMMEDIATE``) so that two of them never race on a
stale snapshot. PostgreSQL gets the same guarantee from ``SELECT ... FOR UPDATE``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from parley.store.sqlite import inline_connector

MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    def __init__(
        self,
        url: str,
        *,
        sqlite_synchronous: str = "NORMAL",
        sqlite_driver: str = "inline",
        echo: bool = False,
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        inline = self.is_sqlite and sqlite_driver == "inline"
        if self.is_sqlite:
            if inline:
                kwargs["async_creator"] = inline_connector(make_url(url).database or ":memory:")
            else:
                kwargs["connect_args"] = {"timeout": 30}
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 16
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 30
            kwargs["pool_pre_ping"] = True
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine, sqlite_synchronous, busy_timeout_ms=0 if inline else 30_000)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._immediate = async_sessionmaker(
            self.engine.execution_options(parley_immediate=True), expire_on_commit=False
        )
        self._write_lock = WriteLock() if self.is_sqlite else None
        self._hot: AsyncConnection | None = None

    def session(self) -> AsyncSession:
        """A session for reads and for writes that do not depend on what they read."""
        return self._sessions()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A read-then-write transaction, committed on success and rolled back on error."""
        async with self.writer(), self._immediate() as session, session.begin():
            yield session

    @asynccontextmanager
    async def writer(self, *, urgent: bool = False) -> AsyncIterator[None]:
        """Wait for SQLite's single write lock in this process: in arrival order, ``urgent``
        writers (the event log's group commit, which every live stream waits on) first.

        Without this, concurrent writers meet in SQLite's busy handler, which sleeps up to
        100 ms between tries: at 100 concurrent runs, writes took seconds (docs/BENCHMARKS.md).
        PostgreSQL locks rows, not the database: nothing to wait for here.
        """
        if self._write_lock is None:
            yield
            return
        async with self._write_lock.hold(urgent=urgent):
            yield

    async def insert_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` in one transaction, straight through the driver, on a connection
        kept for it: the event log's group commit. SQLAlchemy's per-transaction work (pool
        checkout and reset, BEGIN event, result set-up) costs ten times the insert of a few
        rows (docs/BENCHMARKS.md, "Streaming overhead"). ``sql`` uses the driver's placeholders.

        A kept PostgreSQL connection that was closed meanwhile (server restart, idle timeout)
        is replaced and the insert tried once more, as the pool's pre-ping would.
        """
        for attempt in (1, 2):
            if self._hot is None:
                self._hot = await self.engine.connect()
            hot = self._hot
            raw: Any = None
            try:
                raw = (await hot.get_raw_connection()).driver_connection
                await self._insert_many(raw, sql, rows)
                return
            except BaseException:
                # The connection's state is unknown (dropped, cancelled mid-statement): start afresh.
                self._hot = None
                with contextlib.suppress(Exception):
                    await hot.invalidate()
                    await hot.close()
                closed = raw is not None and not self.is_sqlite and raw.is_closed()
                if attempt == 2 or not closed:
                    raise

    async def _insert_many(self, raw: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.is_sqlite:
            await raw.execute("BEGIN IMMEDIATE")
            try:
                await raw.executemany(sql, rows)
                await raw.commit()
            except BaseException:
                await raw.rollback()
                raise
        else:
            async with raw.transaction():
                await raw.executemany(sql, rows)

    async def upgrade(self) -> None:
        """Apply every pending Alembic migration (all heads)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        if self._hot is not None:
            await self._hot.close()
            self._hot = None
        await self.engine.dispose()


class WriteLock:
    """A lock handed over in arrival order, urgent waiters before the others."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def hold(self, *, urgent: bool = False) -> AsyncIterator[None]:
        if self._held:
            future = asyncio.get_running_loop().create_future()
            (self._urgent if urgent else self._normal).append(future)
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # it was handed over just as this waiter was cancelled
                raise
        else:
            self._held = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        for queue in (self._urgent, self._normal):
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)  # the lock passes to it: still held
                    return
        self._held = False


def _configure_sqlite(engine: AsyncEngine, synchronous: str, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over BEGIN from the driver so a transaction can ask for IMMEDIATE.
        if dbapi_connection.isolation_level is not None:
            dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("parley_immediate", False)
        # Straight to the driver: a statement through SQLAlchemy costs ten times more here.
        conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")  # type: ignore[union-attr]


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "heads")


def upgrade_blocking(url: str) -> None:
    """``parley db upgrade``: migrate a database from a synchronous caller."""

    async def run() -> None:
        db = Database(url)
        try:
            await db.upgrade()
        finally:
            await db.close()

    asyncio.run(run())
