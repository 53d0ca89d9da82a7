"""Event log throughput: events/s appended and committed, SQLite and PostgreSQL.

Group commit (Parley's ``EventLog``) against one commit per event, side by side.
Run: ``python -m bench.event_log``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from bench._util import machine, postgres
from parley.bus import LocalBus
from parley.events import EventLog, encode
from parley.store.db import Database
from parley.store.schema import Event, Run, Thread, User, new_id

RUNS = 50
EVENTS_PER_RUN = 2000
NAIVE_EVENTS = 2000


async def _setup(url: str) -> tuple[Database, list[str]]:
    db = Database(url)
    await db.upgrade()
    async with db.session() as session, session.begin():
        user = User(name="bench")
        session.add(user)
        await session.flush()
        thread = Thread(id=new_id("thr"), user_id=user.id, assistant="general")
        session.add(thread)
        await session.flush()
        run_ids = [new_id("run") for _ in range(RUNS + 1)]
        session.add_all(
            Run(id=r, thread_id=thread.id, user_id=user.id, assistant="general", status="running")
            for r in run_ids
        )
    return db, run_ids


async def group_commit(url: str) -> float:
    db, run_ids = await _setup(url)
    log = EventLog(db, LocalBus())
    await log.start()
    for run_id in run_ids[:RUNS]:
        await log.open(run_id)
    payload = {"text": " token"}
    started = time.perf_counter()

    async def writer(run_id: str) -> None:
        for i in range(EVENTS_PER_RUN):
            log.append(run_id, "message.delta", payload)
            if i % 64 == 0:
                await asyncio.sleep(0)  # a real run yields between provider deltas

    await asyncio.gather(*(writer(r) for r in run_ids[:RUNS]))
    await log.flush()
    elapsed = time.perf_counter() - started
    await log.stop()
    await db.close()
    return RUNS * EVENTS_PER_RUN / elapsed


async def commit_per_event(url: str) -> float:
    db, run_ids = await _setup(url)
    run_id = run_ids[-1]
    data = encode({"text": " token"})
    started = time.perf_counter()
    for seq in range(1, NAIVE_EVENTS + 1):
        async with db.session() as session, session.begin():
            await session.execute(
                insert(Event),
                [{"run_id": run_id, "seq": seq, "type": "message.delta", "data": data, "created_at": 0}],
            )
    elapsed = time.perf_counter() - started
    await db.close()
    return NAIVE_EVENTS / elapsed


def main() -> None:
    print(f"machine: {machine()}")
    print(f"{RUNS} concurrent runs x {EVENTS_PER_RUN} events (group commit) vs {NAIVE_EVENTS} single commits")
    targets: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        targets.append(("sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"))
        with postgres() as pg:
            if pg:
                targets.append(("postgres", pg))
            for name, url in targets:
                if name == "postgres":
                    url = asyncio.run(_fresh_pg(url))
                grouped = asyncio.run(group_commit(url))
                if name == "sqlite":
                    url = f"sqlite+aiosqlite:///{Path(tmp) / 'naive.db'}"
                else:
                    url = asyncio.run(_fresh_pg(url))
                single = asyncio.run(commit_per_event(url))
                print(
                    f"{name:8s}  group commit {grouped:10,.0f} events/s   "
                    f"commit per event {single:8,.0f} events/s   ratio {grouped / single:6.1f}x"
                )


async def _fresh_pg(url: str) -> str:
    import asyncpg  # type: ignore[import-untyped]

    name = "bench_" + new_id("db").split("_")[1][-12:]
    base = url.rsplit("/", 1)[0]
    conn = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://") + "/postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{base}/{name}"


if __name__ == "__main__":
    main()
