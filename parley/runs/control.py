"""Runs as the API sees them: create (idempotent, multitask), read, cancel, wait, and delete a
thread with its runs. State changes go through ``parley.runs.lifecycle``; the runs themselves
execute in a worker, this process's (``PARLEY_WORKER=on``) or another's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from sqlalchemy import select

from parley.bus import Bus
from parley.errors import ApiError, not_found
from parley.events import TERMINAL_STATUSES, EventLog
from parley.runs.lifecycle import _ACTIVE, QUEUED, Lifecycle, NewRun
from parley.runs.worker import Worker, cancel_channel
from parley.store.db import Database
from parley.store.schema import Run
from parley.threads import delete_thread_rows, get_thread, visible
from parley.users import Principal

#: Releases what a thread holds outside its own rows before it is deleted (``Shop.clear_cart``).
Release = Callable[[str], Awaitable[object]]


class Runs:
    def __init__(
        self,
        db: Database,
        log: EventLog,
        lifecycle: Lifecycle,
        bus: Bus,
        worker: Worker | None,
        *,
        cancel_wait: float = 2.0,
    ) -> None:
        self._db = db
        self._log = log
        self.lifecycle = lifecycle
        self._bus = bus
        #: This process's worker, if it embeds one (``PARLEY_WORKER=on``).
        self.worker = worker
        self._cancel_wait = cancel_wait
        self.on_delete: list[Release] = []
        #: False while the process drains (SIGTERM): new runs get a 503.
        self.accepting = True

    async def create(self, principal: Principal, new: NewRun) -> tuple[Run, bool]:
        """Create a run; returns ``(run, created)``. A replayed Idempotency-Key returns the first run."""
        if not self.accepting:
            raise ApiError(503, "shutting_down", "this server is shutting down; send the request again")
        worker = self.worker
        created = await self.lifecycle.create(
            principal, new, claim_for=worker.id if worker is not None and worker.has_capacity() else None
        )
        run = created.run
        if not created.created:
            return run, False
        for active_id in created.interrupted:
            await self._request_cancel(active_id, "interrupted")
        if run.status == "running" and worker is not None:
            worker.adopt(run)
        elif created.announced:
            await self._bus.wake_here(QUEUED)
        else:
            await self._bus.publish(QUEUED)
        return run, True

    async def get(self, principal: Principal, run_id: str) -> Run:
        async with self._db.session() as session:
            run = await session.scalar(visible(select(Run).where(Run.id == run_id), principal, Run.user_id))
        if run is None:
            raise not_found("run", run_id)
        return run

    async def cancel(self, principal: Principal, run_id: str) -> Run:
        """Cancel a run, whichever process runs it; cancelling a finished run changes nothing.
        Waits (up to ``cancel_wait``) for the run's terminal event."""
        run = await self.get(principal, run_id)
        if run.status in TERMINAL_STATUSES:
            return run
        if await self._request_cancel(run.id, "cancelled") == "requested":
            await self._until_ended(run.id, self._cancel_wait)
        return await self.get(principal, run_id)

    async def _request_cancel(self, run_id: str, reason: str) -> str:
        outcome = await self.lifecycle.request_cancel(run_id, reason)
        if outcome == "requested":
            await self._bus.publish(cancel_channel(run_id))
        return outcome

    async def _until_ended(self, run_id: str, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async for _ in self._log.follow(run_id, await self._log.last_seq(run_id)):
                    pass

    async def wait(self, principal: Principal, run_id: str) -> Run:
        """Wait for a run's terminal event and return the finished run."""
        await self.get(principal, run_id)
        async for _ in self._log.follow(run_id):
            pass
        return await self.get(principal, run_id)

    async def delete_thread(self, principal: Principal, thread_id: str) -> None:
        """Delete a thread, cancelling its active runs first."""
        async with self._db.session() as session:
            await get_thread(session, principal, thread_id)
            active = (await session.execute(_ACTIVE, {"thread_id": thread_id})).scalars().all()
        for run_id in active:
            if await self._request_cancel(run_id, "cancelled") == "requested":
                await self._until_ended(run_id, self._cancel_wait)
        for release in self.on_delete:
            await release(thread_id)
        await delete_thread_rows(self._db, thread_id)
