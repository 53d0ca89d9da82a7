"""Periodic chores of a server process (the reaper, idle-cart release, left-over after-run
work). A chore marked ``once`` runs in one process of a cluster at a time: under a PostgreSQL
advisory lock (``Database.exclusively``); the others skip that round."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

import structlog

from parley.store.db import Database

log = structlog.get_logger(__name__)
# Its own generator: the shared ``random`` state belongs to whoever else runs in the process.
_jitter = random.Random()


class Chores:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._tasks: list[asyncio.Task[None]] = []

    def every(
        self, name: str, seconds: float, work: Callable[[], Awaitable[object]], *, once: bool = False
    ) -> None:
        """Run ``work`` every ``seconds`` (jittered, so processes do not beat in step), the first
        time at once; ``once``: in one process of the cluster at a time."""
        self._tasks.append(asyncio.create_task(self._loop(name, seconds, work, once), name=f"chore-{name}"))

    async def _loop(
        self, name: str, seconds: float, work: Callable[[], Awaitable[object]], once: bool
    ) -> None:
        while True:
            try:
                if once:
                    async with self._db.exclusively(name) as mine:
                        if mine:
                            await work()
                else:
                    await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("chore_failed", chore=name)
            await asyncio.sleep(seconds * _jitter.uniform(0.8, 1.2))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
