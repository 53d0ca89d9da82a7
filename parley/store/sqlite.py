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

One long statement SQLite would run on its own is kept off the loop: the WAL checkpoint.
By default the commit that takes the WAL past 1,000 pages copies them into the database
file and syncs it, 7-17 ms during which every stream waits (docs/BENCHMARKS.md). The
connections here have automatic checkpoints off; ``Checkpoints`` runs a passive one on a
worker thread, from a connection of its own, at most every half second while commits come;
when the WAL grows long, one of them holds the process's write lock so that the WAL can
start again from its beginning.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
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


class Checkpoints:
    """Passive WAL checkpoints on a worker thread, at most one at a time and at most every
    ``every`` seconds, started by the commits that make them due (none while nothing is written).

    A passive checkpoint takes no lock that writers or readers wait for: commits go on
    appending to the WAL meanwhile. The WAL starts again from its beginning only at a commit
    that finds it wholly copied, which under steady writes a lock-free checkpoint never leaves
    it in; so once the WAL is ``long_wal`` pages long (16 MiB), a second checkpoint follows
    at once holding ``exclusive`` (the process's write lock) for the few pages appended during
    the first: commits wait 2-6 ms for it, the loop does not.
    """

    def __init__(
        self,
        path: str,
        *,
        every: float = 0.5,
        long_wal: int = 4000,
        exclusive: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        self.path = path
        self.every = every
        self.long_wal = long_wal
        self.exclusive = exclusive
        self._last = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._conn: sqlite3.Connection | None = None

    def committed(self) -> None:
        """Called on the loop after each commit."""
        now = time.monotonic()
        if self._task is not None or now - self._last < self.every:
            return
        self._last = now
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            pages = await loop.run_in_executor(None, self._checkpoint)
            if pages >= self.long_wal and self.exclusive is not None:
                # What the first one copied is not copied again: this one has only the pages
                # that commits appended meanwhile, so the write lock is held briefly.
                async with self.exclusive():
                    await loop.run_in_executor(None, self._checkpoint)
        except sqlite3.Error:
            return  # another process holds the database: tried again at the next one due
        finally:
            self._task = None

    def _checkpoint(self) -> int:
        """A passive checkpoint; the WAL's length in pages."""
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        _busy, pages, _copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(pages)

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class InlineConnection:
    """An aiosqlite-like connection (the part SQLAlchemy's dialect uses) over ``sqlite3``."""

    __slots__ = ("_busy_timeout", "_checkpoints", "_conn")

    def __init__(
        self, conn: sqlite3.Connection, busy_timeout: float, checkpoints: Checkpoints | None = None
    ) -> None:
        self._conn = conn
        self._busy_timeout = busy_timeout
        self._checkpoints = checkpoints

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
        if self._checkpoints is not None:
            self._checkpoints.committed()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    def stop(self) -> None:
        self._conn.close()


def inline_connector(
    path: str, *, busy_timeout: float = 30.0, checkpoints: Checkpoints | None = None
) -> Callable[[], Awaitable[InlineConnection]]:
    """``create_async_engine(..., async_creator=...)`` for the SQLite file at ``path``.

    The connection is in autocommit mode (``isolation_level=None``): Parley issues BEGIN itself.
    With ``checkpoints``, its commits start those instead of SQLite's automatic checkpoint.
    """

    async def connect() -> InlineConnection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
        if checkpoints is not None:
            conn.execute("PRAGMA wal_autocheckpoint=0")
        return InlineConnection(conn, busy_timeout, checkpoints)

    return connect
