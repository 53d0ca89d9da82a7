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
