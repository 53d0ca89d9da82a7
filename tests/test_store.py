"""The schema: migrations match the models, `parley db upgrade`, SQLite in WAL mode."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import IntegrityError

from parley.events import _INSERT_EVENT, RunEvent
from parley.store.db import KEPT_DRIVERS, Database, alembic_config
from parley.store.schema import Base, Run, new_id, row
from parley.threads import create_thread
from parley.users import ensure_local_user
from tests.conftest import fresh_postgres


async def test_migrations_match_the_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        await db.upgrade()
        async with db.engine.connect() as conn:
            # Raises if the models and the migrated database differ.
            await conn.run_sync(lambda sync: command.check(alembic_config(sync)))
    finally:
        await db.close()


def test_the_migration_history_has_one_head() -> None:
    """Features built in parallel each branched from 0001; a merge revision joins them, so the
    next migration has one parent (and ``alembic upgrade head`` works)."""
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    try:
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await db.close()


def test_parley_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    env = {**os.environ, "PARLEY_DATA_DIR": str(tmp_path / "data")}
    env.pop("PARLEY_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "parley", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert (tmp_path / "data" / "parley.db").exists()


async def test_direct_statements_write_and_read_what_a_session_does(database_url: str) -> None:
    """``Database.direct`` / ``read`` bypass SQLAlchemy's execution: JSON, floats and NULLs go in
    and come out as through a session; an IN of literal values is expanded; a constraint
    violation is SQLAlchemy's IntegrityError and rolls the whole transaction back; a missing
    parameter is an error, never a silent NULL."""
    db = Database(database_url)
    try:
        await db.upgrade()
        principal = await ensure_local_user(db)
        owner = principal.user_id
        thread = await create_thread(db, principal, "general")
        runs = Base.metadata.tables["runs"]
        options = {"metadata": {"team": "blue", "n": [1, 2.5, None]}, "é": "ünï"}
        run = Run(id=new_id("run"), thread_id=thread.id, user_id=owner, assistant="general", options=options)
        async with db.direct() as tx:
            await tx.insert(runs, row(run))
        async with db.session() as session:
            stored = await session.get_one(Run, run.id)
            assert (stored.options, stored.status, stored.error, stored.created_at) == (
                options,
                "queued",
                None,
                run.created_at,
            )
        active = select(runs.c.id, runs.c.options).where(
            runs.c.thread_id == bindparam("thread_id"), runs.c.status.in_(("queued", "running"))
        )
        async with db.read() as reader:
            assert [tuple(r) for r in await reader.rows(active, {"thread_id": thread.id})] == [
                (run.id, options)
            ]
            assert await reader.first(active, {"thread_id": "thr_none"}) is None
            with pytest.raises(KeyError):
                await reader.rows(active, {})
        second = Run(id=new_id("run"), thread_id=thread.id, user_id=owner, assistant="general")
        same_id = Run(id=run.id, thread_id=thread.id, user_id=owner, assistant="general")

        async def insert_both() -> None:
            async with db.direct() as tx:
                await tx.insert(runs, row(second))
                await tx.insert(runs, row(same_id))

        with pytest.raises(IntegrityError):
            await insert_both()
        async with db.session() as session:
            assert await session.get(Run, second.id) is None  # rolled back with the failed insert
    finally:
        await db.close()


async def test_a_group_commit_is_all_or_nothing(database_url: str) -> None:
    """The event log's group commit (``Database.insert_many``): a batch with one bad row stores
    none of it, and the kept connection goes on committing the next batch. On PostgreSQL there is
    no BEGIN/COMMIT around it: asyncpg's executemany is one implicit transaction."""
    db = Database(database_url)
    try:
        await db.upgrade()
        principal = await ensure_local_user(db)
        thread = await create_thread(db, principal, "general")
        run = Run(id=new_id("run"), thread_id=thread.id, user_id=principal.user_id, assistant="general")
        async with db.direct() as tx:
            await tx.insert(Base.metadata.tables["runs"], row(run))
        sql = db.compiled(_INSERT_EVENT, column_keys=RunEvent._fields).sql

        def event(seq: int) -> RunEvent:
            return RunEvent(run.id, seq, "message.delta", '{"text": "x"}', 1.0)

        await db.insert_many(sql, [event(1)])
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):  # the driver's own error
            await db.insert_many(sql, [event(2), event(3), event(1)])  # seq 1 again
        await db.insert_many(sql, [event(2)])
        async with db.session() as session:
            seqs = await session.scalars(text("SELECT seq FROM run_events ORDER BY seq"))
            assert list(seqs) == [1, 2]
    finally:
        await db.close()


def test_ids_are_ulids_ordered_by_time_and_unguessable() -> None:
    """``new_id``: a prefix and 26 Crockford base32 characters, 48 bits of milliseconds first
    (ids sort by creation time, as the API's ``before`` cursors expect) then 80 random bits."""
    crockford = "0123456789abcdefghjkmnpqrstvwxyz"
    ids = [new_id("chk") for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        prefix, body = value.split("_")
        assert (prefix, len(body)) == ("chk", 26)
        assert set(body) <= set(crockford)
    decoded = [int("".join(f"{crockford.index(c):05b}" for c in i[4:]), 2) for i in ids]
    millis = [d >> 80 for d in decoded]
    assert millis == sorted(millis)
    assert abs(millis[-1] / 1000 - time.time()) < 5
    assert len({d & ((1 << 80) - 1) for d in decoded}) == len(ids)


async def test_postgres_reads_survive_a_crowd_a_cancel_and_a_dropped_connection() -> None:
    """Reads and one-statement writes on PostgreSQL run on a few connections the process keeps
    (``Database._driver``): more callers than kept connections all get an answer, a statement
    cancelled midway leaves nothing broken for the next, and a connection the server closed is
    replaced without an error."""
    import asyncpg
    from asyncpg.exceptions import DataError

    async with fresh_postgres() as url:
        db = Database(url)
        try:
            await db.upgrade()

            async def read(seconds: float = 0.0) -> int:
                async with db.read() as reader:
                    row = await reader.first(text("SELECT 1 FROM (SELECT pg_sleep(:s)) AS t"), {"s": seconds})
                return 0 if row is None else int(row[0])

            assert await asyncio.gather(*(read(0.05) for _ in range(KEPT_DRIVERS * 3))) == [1] * (
                KEPT_DRIVERS * 3
            )

            async def backend() -> int:
                async with db.read() as reader:
                    row = await reader.first(text("SELECT pg_backend_pid()"), {})
                return 0 if row is None else int(row[0])

            kept = await backend()
            with pytest.raises(DataError):  # a statement's own error: the connection stays
                async with db.read() as reader:
                    await reader.first(text("SELECT 1 / 0"), {})
            assert await backend() == kept

            slow = asyncio.create_task(read(5))
            await asyncio.sleep(0.2)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            assert [await read() for _ in range(KEPT_DRIVERS + 1)] == [1] * (KEPT_DRIVERS + 1)

            admin = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
            try:
                await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await admin.close()
            await asyncio.sleep(0.2)
            assert [await read() for _ in range(KEPT_DRIVERS + 1)] == [1] * (KEPT_DRIVERS + 1)
            async with db.one_statement() as tx:
                assert await tx.first(text("SELECT 2"), {}) == (2,)
        finally:
            await db.close()
