"""The inline SQLite driver: statements run on the event loop, a busy database is waited for
without blocking it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from parley.store.db import Database
from parley.store.sqlite import inline_connector


async def _ticks_while(work: asyncio.Future[object] | asyncio.Task[object]) -> int:
    ticks = 0
    while not work.done():
        await asyncio.sleep(0.005)
        ticks += 1
    return ticks


async def test_a_write_waits_for_another_process_lock_without_blocking_the_loop(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    await db.upgrade()
    other = sqlite3.connect(tmp_path / "p.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # as `parley ingest` in another process would
    try:

        async def write() -> object:
            async with db.transaction() as session:
                await session.execute(
                    text("INSERT INTO users (name, is_admin, created_at) VALUES ('ann', 0, 0)")
                )
            return time.monotonic()

        task = asyncio.create_task(write())
        await asyncio.sleep(0.2)
        assert not task.done()  # still waiting for the lock...
        released = time.monotonic()
        other.execute("COMMIT")
        assert await task >= released  # ...and written once the other process let go
    finally:
        other.close()
    async with db.session() as session:
        assert await session.scalar(text("SELECT count(*) FROM users WHERE name = 'ann'")) == 1
    await db.close()


async def test_the_loop_keeps_running_while_a_write_waits(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    await db.upgrade()
    other = sqlite3.connect(tmp_path / "p.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    async def write() -> None:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO users (name, is_admin, created_at) VALUES ('bo', 0, 0)"))

    task = asyncio.create_task(write())
    asyncio.get_running_loop().call_later(0.3, lambda: other.execute("COMMIT"))
    ticks = await _ticks_while(task)
    other.close()
    await task
    # 0.3 s of waiting at 5 ms a tick: a loop blocked by the driver would have ticked once or twice.
    assert ticks >= 20
    await db.close()


async def test_a_lock_held_too_long_ends_in_database_is_locked(tmp_path: Path) -> None:
    path = str(tmp_path / "x.db")
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{path}", async_creator=inline_connector(path, busy_timeout=0.2)
    )
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (a INTEGER)"))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(OperationalError, match="database is locked"):
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (1)"))
    assert 0.2 <= time.monotonic() - started < 2
    other.execute("ROLLBACK")
    other.close()
    await engine.dispose()


async def test_both_drivers_read_and_write_the_same(tmp_path: Path) -> None:
    for driver in ("inline", "thread"):
        db = Database(f"sqlite+aiosqlite:///{tmp_path / f'{driver}.db'}", sqlite_driver=driver)
        await db.upgrade()
        async with db.transaction() as session:
            await session.execute(
                text("INSERT INTO users (name, is_admin, created_at) VALUES ('cy', 0, 1.5)")
            )
        async with db.session() as session:
            row = (await session.execute(text("SELECT name, created_at FROM users WHERE name = 'cy'"))).one()
        assert tuple(row) == ("cy", 1.5)
        await db.close()


async def test_wal_checkpoints_run_beside_the_loop_and_keep_the_wal_short(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.upgrade()
    assert db.checkpoints is not None
    async with db.session() as session:
        # The loop's connections never checkpoint on their own (7-17 ms of blocked loop each).
        assert await session.scalar(text("PRAGMA wal_autocheckpoint")) == 0
    db.checkpoints.every, db.checkpoints.long_wal = 0.05, 50
    wal = tmp_path / "p.db-wal"

    def wal_restarts() -> int:
        # The WAL header's checkpoint sequence number: one more each time the WAL begins again.
        with wal.open("rb") as f:
            return int.from_bytes(f.read(16)[12:16], "big")

    name = "x" * 3000  # a page per row
    written = 0
    first, before = wal_restarts(), wal.stat().st_size  # (the migrations' pages)
    started = time.monotonic()
    # Steady writes (a commit soon after the one before) until the WAL has begun again from its
    # start three times; a lock-free checkpoint alone never lets it restart under steady writes,
    # and then this runs into its time limit. How far apart the restarts fall depends on how
    # busy the machine is, so the test counts them rather than timing them.
    while wal_restarts() - first < 3:
        assert time.monotonic() - started < 15, f"the WAL never began again: {wal.stat().st_size} bytes"
        async with db.transaction() as session:
            for _ in range(5):
                await session.execute(
                    text("INSERT INTO users (name, is_admin, created_at) VALUES (:n, 0, 0)"), {"n": name}
                )
        written += 5 * len(name)
        await asyncio.sleep(0)
    # What was written went into the database file instead of only growing the WAL (by more
    # than it, a page and a frame header for each 3000-byte row).
    assert wal.stat().st_size < before + written
    assert path.stat().st_size > written / 4
    await db.close()
    other = sqlite3.connect(path)
    assert (
        other.execute("SELECT count(*) FROM users WHERE name = ?", (name,)).fetchone()[0] == written // 3000
    )
    other.close()


async def test_the_thread_driver_leaves_checkpoints_to_sqlite(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}", sqlite_driver="thread")
    await db.upgrade()
    assert db.checkpoints is None
    async with db.session() as session:
        assert await session.scalar(text("PRAGMA wal_autocheckpoint")) == 1000
    await db.close()
