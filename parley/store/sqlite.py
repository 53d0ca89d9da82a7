"""SQLite driven on the event loop's own thread, for SQLAlchemy's ``aiosqlite`` dialect.

aiosqlite runs every call in a worker thread: each statement costs several thread
hand-offs (cursor, execute, fetch, close), about a millisecond each on a loaded
two-core machine, so a five-statement transaction took 8 ms while SQLite itself needed
tens of microseconds (docs/BENCHMARKS.md, "Streaming overhead"). Parley's statements are
small, so here they run inline: the connection object has aiosqlite's coroutine API, and
its coroutines finish without suspending, except to wait for a lock.

A lock held by another process (``parley ingest`` beside the server) must not block
the loop: the connection has no busy timeout of its own, and a statement that finds the
database busy is retried after an ``asyncio.sleep``, with backoff, until ``busy_timeout``.
A statement that failed with SQLITE_BUSY had no effect, so repeating it is safe.

The cost: a long statement holds the loop for its duration. Parley's hot statements
touch a few rows; the long ones (loading a knowledge base's chunks at start) run before
the server takes requests. ``PARLEY_SQLITE_DRIVER=thread`` goes back to aiosqlite.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_FIRST_WAIT = 0.001
_MAX_WAIT = 0.05


async def _retrying(call: Callable[[], T], busy_timeout: float) -> T:
    deadline: float | None = None
    wait = _FIRST_WAIT
    while True:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:
                raise
            now = time.monotonic()
            deadline = deadline if deadline is not None else now + busy_timeout
            if now >= deadline:
                raise
            await asyncio.sleep(min(wait, deadline - now))
            wait = min(wait * 2, _MAX_WAIT)


class InlineCursor:
    """An aiosqlite-like cursor whose coroutines run ``sqlite3`` directly."""

    __slots__ = ("_busy_timeout", "_cursor")

    def __init__(self, cursor: sqlite3.Cursor, busy_timeout: float) -> None:
        self._cursor = cursor
        self._busy_timeout = busy_timeout

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> InlineCursor:
        await _retrying(lambda: self._cursor.execute(sql, parameters), self._busy_timeout)
        return self

    async def executemany(
        self, sql: str, parameters: Iterable[Sequence[Any] | dict[str, Any]]
    ) -> InlineCursor:
        rows = list(parameters)
        await _retrying(lambda: self._cursor.executemany(sql, rows), self._busy_timeout)
        return self

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size) if size is not None else self._cursor.fetchmany()

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    """An aiosqlite-like connection (the part SQLAlchemy's dialect uses) over ``sqlite3``."""

    __slots__ = ("_busy_timeout", "_conn")

    def __init__(self, conn: sqlite3.Connection, busy_timeout: float) -> None:
        self._conn = conn
        self._busy_timeout = busy_timeout

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor(), self._busy_timeout)

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> InlineCursor:
        return await InlineCursor(self._conn.cursor(), self._busy_timeout).execute(sql, parameters)

    async def executemany(
        self, sql: str, parameters: Iterable[Sequence[Any] | dict[str, Any]]
    ) -> InlineCursor:
        return await InlineCursor(self._conn.cursor(), self._busy_timeout).executemany(sql, parameters)

    async def commit(self) -> None:
        await _retrying(self._conn.commit, self._busy_timeout)

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    def stop(self) -> None:
        self._conn.close()


def inline_connector(path: str, *, busy_timeout: float = 30.0) -> Callable[[], Awaitable[InlineConnection]]:
    """``create_async_engine(..., async_creator=...)`` for the SQLite file at ``path``.

    The connection is in autocommit mode (``isolation_level=None``): Parley issues BEGIN itself.
    """

    async def connect() -> InlineConnection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
        return InlineConnection(conn, busy_timeout)

    return connect
