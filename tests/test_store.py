"""The schema: migrations match the models, `parley db upgrade`, SQLite in WAL mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text

from parley.store.db import Database, alembic_config


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
