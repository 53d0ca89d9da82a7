"""The engine, sessions and migrations.

SQLite runs in WAL mode; transactions that read before they write (``Database.transaction``)
take the write lock up front (``BEGIN IMMEDIATE``) so that two of them never race on a
stale snapshot. PostgreSQL gets the same guarantee from ``SELECT ... FOR UPDATE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, Select, Table, event, insert, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DisconnectionError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.dml import UpdateBase

from parley.store.sqlite import Checkpoints, inline_connector

MIGRATIONS = Path(__file__).parent / "migrations"
#: PostgreSQL connections a process keeps for reads and one-statement writes (``Database._driver``).
KEPT_DRIVERS = 4
_T = TypeVar("_T")


def lock_key(name: str) -> int:
    """A PostgreSQL advisory lock key for ``name``, the same in every process (a signed 64-bit int)."""
    return int.from_bytes(
        hashlib.blake2b(f"parley:{name}".encode(), digest_size=8).digest(), "big", signed=True
    )


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
        #: WAL checkpoints off the event loop (inline SQLite on a file: parley/store/sqlite.py).
        self.checkpoints: Checkpoints | None = None
        if self.is_sqlite:
            if inline:
                path = make_url(url).database or ":memory:"
                if path != ":memory:":
                    self.checkpoints = Checkpoints(path, exclusive=self.writer)
                kwargs["async_creator"] = inline_connector(path, checkpoints=self.checkpoints)
            else:
                kwargs["connect_args"] = {"timeout": 30}
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 16
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 30
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine, sqlite_synchronous, busy_timeout_ms=0 if inline else 30_000)
        else:
            _drop_closed_connections(self.engine)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._immediate = async_sessionmaker(
            self.engine.execution_options(parley_immediate=True), expire_on_commit=False
        )
        self._write_lock = WriteLock() if self.is_sqlite else None
        self._hot: AsyncConnection | None = None
        self._reader: AsyncConnection | None = None
        #: PostgreSQL: idle connections kept for ``_driver``, and how many exist.
        self._drivers: list[AsyncConnection] = []
        self._driver_count = 0
        self._closed = False
        self._compiled: dict[object, _Compiled] = {}

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

    @asynccontextmanager
    async def direct(self) -> AsyncIterator[Direct]:
        """A read-then-write transaction whose statements go straight to the driver, as
        ``transaction`` with SQLAlchemy's per-statement and per-transaction work left out
        (1.4 → 0.12 ms for the four statements that create a run: docs/BENCHMARKS.md).
        Core statements are compiled once for this database's dialect.

        SQLite: on the connection kept for the event log, under the process's write lock,
        ``BEGIN IMMEDIATE``. PostgreSQL: a pooled connection, in a driver transaction.
        """
        if self.is_sqlite:
            async with self.writer():
                raw = await self._kept_driver()
                await raw.execute("BEGIN IMMEDIATE")
                try:
                    yield Direct(self, raw)
                except BaseException:
                    await raw.rollback()
                    raise
                await raw.commit()
            return
        async with self._driver() as driver, driver.transaction():
            yield Direct(self, driver)

    @asynccontextmanager
    async def one_statement(self) -> AsyncIterator[Direct]:
        """A write that is a single statement, straight through the driver: PostgreSQL runs it
        as its own transaction on a pooled connection (no BEGIN and COMMIT round trips); SQLite
        as ``direct``. Use it for one statement only: two would be two transactions."""
        if self.is_sqlite:
            async with self.direct() as tx:
                yield tx
            return
        async with self._driver() as driver:
            yield Direct(self, driver)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Direct]:
        """Reads straight through the driver (``Direct``), each statement on its own: SQLite on
        a connection kept for them, PostgreSQL on a pooled one. For reads on the path to a
        run's first token (its context); anything that needs a snapshot uses a session."""
        if self.is_sqlite:
            if self._reader is None:
                self._reader = await self.engine.connect()
            yield Direct(self, (await self._reader.get_raw_connection()).driver_connection)
            return
        async with self._driver() as driver:
            yield Direct(self, driver)

    @asynccontextmanager
    async def _driver(self) -> AsyncIterator[Any]:
        """A PostgreSQL driver connection for statements on the path to a first token: one of
        ``KEPT_DRIVERS`` held out of SQLAlchemy's pool when one is free (a checkout and its
        return cost 0.2 ms, twice a bare round trip: docs/BENCHMARKS.md, "Scale-out"), else a
        pooled one. One left in an unknown state (closed, in a transaction, cancelled
        mid-statement) is closed."""
        conn: AsyncConnection | None = None
        driver: Any = None
        while self._drivers and conn is None:
            conn = self._drivers.pop()
            driver = (await conn.get_raw_connection()).driver_connection
            if driver.is_closed():
                await _discard(conn)
                self._driver_count -= 1
                conn = None
        if conn is None and self._driver_count < KEPT_DRIVERS:
            self._driver_count += 1
            try:
                conn = await self.engine.connect()
                driver = (await conn.get_raw_connection()).driver_connection
            except BaseException:
                self._driver_count -= 1
                if conn is not None:
                    await _discard(conn)
                raise
        if conn is None:  # all in use: a pooled one, as any other statement gets
            async with self.engine.connect() as pooled:
                yield (await pooled.get_raw_connection()).driver_connection
            return
        healthy = False
        try:
            yield driver
            healthy = True
        except Exception:
            # A statement's error (a unique key taken) leaves the connection as it was.
            healthy = not driver.is_closed() and not driver.is_in_transaction()
            raise
        finally:
            if not healthy or self._closed:
                self._driver_count -= 1
                await asyncio.shield(_discard(conn))
            else:
                self._drivers.append(conn)

    async def _kept_driver(self) -> Any:
        if self._hot is None:
            self._hot = await self.engine.connect()
        return (await self._hot.get_raw_connection()).driver_connection

    def compiled(
        self,
        statement: ClauseElement | Callable[[], ClauseElement],
        key: object = None,
        column_keys: Sequence[str] | None = None,
    ) -> _Compiled:
        """``statement`` as this dialect's SQL and the order of its parameters, cached by ``key``
        (the statement itself by default: build statements once, at import). ``statement`` may
        be a function that builds it, called only on the first use of ``key``; ``column_keys``:
        an INSERT's columns."""
        key = statement if key is None else key
        found = self._compiled.get(key)
        if found is None:
            built = statement() if callable(statement) else statement
            found = self._compiled[key] = _Compiled.of(built, self.engine.dialect, column_keys)
        return found

    async def insert_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` in one transaction, straight through the driver, on a connection
        kept for it: the event log's group commit. SQLAlchemy's per-transaction work (pool
        checkout and reset, BEGIN event, result set-up) costs ten times the insert of a few
        rows (docs/BENCHMARKS.md, "Streaming overhead"). ``sql`` uses the driver's placeholders.
        """
        await self._on_kept(lambda raw: self._insert_many(raw, sql, rows))

    async def fetch_kept(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        """One PostgreSQL statement (``$n`` placeholders) on the kept connection, as ``insert_many``."""
        rows: list[Sequence[Any]] = await self._on_kept(lambda raw: raw.fetch(sql, *args))
        return rows

    async def _on_kept(self, work: Callable[[Any], Awaitable[_T]]) -> _T:
        """``work`` on the kept connection. A kept PostgreSQL connection that was closed meanwhile
        (server restart, idle timeout) is replaced and the work tried once more, as the pool's
        pre-ping would."""
        for attempt in (1, 2):
            raw: Any = None
            try:
                raw = await self._kept_driver()
                return await work(raw)
            except BaseException:
                # The connection's state is unknown (dropped, cancelled mid-statement): start afresh.
                hot, self._hot = self._hot, None
                if hot is not None:
                    with contextlib.suppress(Exception):
                        await hot.invalidate()
                        await hot.close()
                closed = raw is not None and not self.is_sqlite and raw.is_closed()
                if attempt == 2 or not closed:
                    raise
        raise AssertionError("unreachable")

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
            # asyncpg's executemany is atomic on its own (one Sync after the last row: an implicit
            # transaction), so BEGIN and COMMIT would only add two round trips to every commit.
            await raw.executemany(sql, rows)

    async def upgrade(self) -> None:
        """Apply every pending Alembic migration (all heads). On PostgreSQL under an advisory
        lock: of ten processes starting at once, one migrates and the others then find nothing
        to do."""
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key("migrations")}
                )
            await conn.run_sync(_upgrade)

    @asynccontextmanager
    async def exclusively(self, name: str) -> AsyncIterator[bool]:
        """Whether this process may do the chore ``name`` now: on PostgreSQL, holds a session
        advisory lock (if free) while the block runs, so one process of a cluster does it; SQLite
        serves a single process, which always may."""
        if self.is_sqlite:
            yield True
            return
        async with self.engine.connect() as conn:
            key = lock_key(name)
            got = bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))
            await conn.commit()
            try:
                yield got
            finally:
                if got:
                    await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    await conn.commit()

    async def close(self) -> None:
        self._closed = True
        for kept in (self._hot, self._reader, *self._drivers):
            if kept is not None:
                await kept.close()
        self._hot = self._reader = None
        self._driver_count -= len(self._drivers)
        self._drivers.clear()
        await self.engine.dispose()
        if self.checkpoints is not None:
            await self.checkpoints.close()


async def _discard(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.invalidate()
        await conn.close()


class _Compiled:
    __slots__ = ("defaults", "encoders", "json_columns", "names", "sql")

    def __init__(
        self,
        sql: str,
        names: list[str],
        defaults: dict[str, Any],
        encoders: dict[str, Callable[[Any], Any]],
        json_columns: list[int],
    ) -> None:
        self.sql, self.names, self.defaults, self.encoders = sql, names, defaults, encoders
        #: Positions of a SELECT's JSON columns: SQLite returns their text.
        self.json_columns = json_columns

    @classmethod
    def of(cls, statement: ClauseElement, dialect: Any, column_keys: Sequence[str] | None) -> _Compiled:
        columns = list(column_keys) if column_keys is not None else None
        compiled: Any = statement.compile(dialect=dialect, column_keys=columns)  # an SQLCompiler
        required = [name for name, bind in compiled.binds.items() if bind.required]
        # Literal values the statement carries (a LIMIT, a comparison with a constant); a
        # column's bind without one must come from the caller (its default is not applied here).
        defaults = {
            name: bind.value
            for name, bind in compiled.binds.items()
            if not bind.required and bind.value is not None
        }
        if "__[POSTCOMPILE_" in compiled.string:  # IN (literal values): one placeholder each
            compiled = statement.params(dict.fromkeys(required)).compile(
                dialect=dialect, compile_kwargs={"render_postcompile": True}
            )
            defaults = {name: v for name, v in compiled.params.items() if name not in required}
        names = list(compiled.positiontup or [])
        binds = compiled.binds  # an expanded IN's placeholders are not in it: literal values
        encoders: dict[str, Callable[[Any], Any]] = {
            name: _json for name in names if name in binds and isinstance(binds[name].type, JSON)
        }
        if isinstance(statement, Select):
            json_columns = [i for i, c in enumerate(statement.selected_columns) if isinstance(c.type, JSON)]
        elif isinstance(statement, UpdateBase):  # an INSERT/UPDATE ... RETURNING
            returned = statement.exported_columns
            json_columns = [i for i, c in enumerate(returned) if isinstance(c.type, JSON)]
        else:
            json_columns = []
        return cls(compiled.string, names, defaults, encoders, json_columns)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The driver's positional arguments; a parameter missing from ``params`` is a KeyError."""
        out = []
        for name in self.names:
            value = params[name] if name in params else self.defaults[name]
            encode = self.encoders.get(name)
            out.append(value if encode is None or value is None else encode(value))
        return out


def _json(value: Any) -> str:
    return json.dumps(value)


def _decoded(row: Sequence[Any], positions: list[int]) -> list[Any]:
    values = list(row)
    for i in positions:
        if isinstance(values[i], str):
            values[i] = json.loads(values[i])
    return values


class Direct:
    """Statements straight through the driver: one ``Database.direct`` transaction's, or
    ``Database.read``'s. Rows are the driver's: tuples (SQLite) or records (PostgreSQL), read by
    position; JSON parameters are encoded here, and JSON columns decoded on SQLite."""

    def __init__(self, db: Database, raw: Any) -> None:
        self._db, self._raw = db, raw

    async def rows(self, statement: ClauseElement, params: Mapping[str, Any]) -> list[Sequence[Any]]:
        return await self._run(self._db.compiled(statement), params)

    async def first(self, statement: ClauseElement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        found = await self.rows(statement, params)
        return found[0] if found else None

    async def insert(self, table: Table, values: Mapping[str, Any]) -> None:
        """Insert one row of ``values``, e.g. ``row(obj)`` (every column, defaults set). Python-side
        column defaults are not applied here: leaving out such a column is a KeyError, never a
        silent NULL; a column without one takes the database's default."""
        columns = tuple(values)
        await self._run(self._db.compiled(lambda: insert(table), (table, columns), columns), values)

    async def _run(self, compiled: _Compiled, params: Mapping[str, Any]) -> list[Sequence[Any]]:
        args = compiled.args(params)
        try:
            if self._db.is_sqlite:
                cursor = await self._raw.execute(compiled.sql, args)
                rows: list[Sequence[Any]] = list(await cursor.fetchall())
                if compiled.json_columns and rows:
                    rows = [_decoded(row, compiled.json_columns) for row in rows]
                return rows
            # SQLAlchemy's asyncpg dialect gave the connection a JSON codec: values arrive decoded.
            return list(await self._raw.fetch(compiled.sql, *args))
        except Exception as exc:
            if _is_integrity_error(exc):  # as SQLAlchemy would raise it: callers handle one kind
                raise IntegrityError(compiled.sql, args, exc) from exc
            raise


FirstRow = Callable[[ClauseElement, Mapping[str, Any]], Awaitable[Sequence[Any] | None]]


def first_row(session: AsyncSession) -> FirstRow:
    """``Direct.first`` over a session: code that reads in either kind of transaction takes a
    ``FirstRow``."""

    async def first(statement: ClauseElement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        row: Sequence[Any] | None = (await session.execute(cast(Executable, statement), params)).first()
        return row

    return first


def _is_integrity_error(exc: Exception) -> bool:
    if isinstance(exc, sqlite3.IntegrityError):
        return True
    try:
        from asyncpg.exceptions import IntegrityConstraintViolationError
    except ImportError:  # pragma: no cover - the [postgres] extra is not installed
        return False
    return isinstance(exc, IntegrityConstraintViolationError)


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


def _drop_closed_connections(engine: AsyncEngine) -> None:
    """A pooled PostgreSQL connection the server closed (a restart, an idle timeout, an admin's
    ``pg_terminate_backend``) is replaced when it is checked out, as ``pool_pre_ping`` would,
    without its three round trips (BEGIN, a ping, ROLLBACK) before every transaction: asyncpg
    sees the closed socket as soon as the event loop reads it, so a local check is enough.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed this connection")  # the pool takes another


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
