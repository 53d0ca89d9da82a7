"""The run lifecycle seen from the API: create (idempotent, multitask), read, cancel, wait.

Execution itself lives in ``parley.executor``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Literal

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from parley.errors import ApiError, not_found
from parley.events import TERMINAL_STATUSES, EventLog
from parley.executor import Executor
from parley.store.db import Database, Direct
from parley.store.schema import Base, Message, Run, Thread, new_id, now, row
from parley.threads import delete_thread_rows, get_thread, visible
from parley.users import Principal

Multitask = Literal["reject", "enqueue", "interrupt"]
ACTIVE_STATUSES = ("queued", "running")
#: Sets a new run's experiment variant inside its creating transaction (``Experiments.assign``);
#: returns a row (an exposure) that the transaction inserts with the run, or None. Hooks read
#: through the transaction: a second pooled connection per creation could starve the pool.
Assign = Callable[[Direct, Run, Thread], Awaitable[Base | None]]
#: Decides, inside the creating transaction, whether a run may be created (raises ``ApiError``).
Admit = Callable[[Direct, Thread, str], Awaitable[None]]
#: Releases what a thread holds outside its own rows before it is deleted (``Shop.clear_cart``).
Release = Callable[[str], Awaitable[object]]


_runs, _threads = Base.metadata.tables["runs"], Base.metadata.tables["threads"]
_ACTIVE = select(_runs.c.id).where(
    _runs.c.thread_id == bindparam("thread_id"), _runs.c.status.in_(ACTIVE_STATUSES)
)
# Locks the thread's row (as SELECT ... FOR UPDATE would), bumps it and reads it: one statement.
_TOUCH_THREAD = (
    update(_threads)
    .where(_threads.c.id == bindparam("thread_id"))
    .values(updated_at=bindparam("touched_at"), title=func.coalesce(_threads.c.title, bindparam("new_title")))
    .returning(_threads.c.user_id, _threads.c.assistant)
)
_TOUCH_OWN_THREAD = _TOUCH_THREAD.where(_threads.c.user_id == bindparam("owner_id"))
_BY_KEY = select(_runs.c.id, _runs.c.request_hash).where(
    _runs.c.user_id == bindparam("user_id"), _runs.c.idempotency_key == bindparam("key")
)
_MESSAGES = Base.metadata.tables["messages"]


class _Replay(Exception):
    """An Idempotency-Key seen before: its run is the answer, and the transaction rolls back."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id


def request_hash(thread_id: str, body: dict[str, Any]) -> str:
    canonical = json.dumps({"thread": thread_id, **body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Runs:
    def __init__(self, db: Database, log: EventLog, executor: Executor, *, cancel_wait: float = 2.0) -> None:
        self._db = db
        self._log = log
        self._executor = executor
        self._cancel_wait = cancel_wait
        self.assign: Assign | None = None
        self.admit: Admit | None = None
        self.on_delete: list[Release] = []

    async def create(
        self,
        principal: Principal,
        thread_id: str,
        text: str,
        *,
        multitask: Multitask = "reject",
        idempotency_key: str | None = None,
        options: dict[str, Any] | None = None,
        input_message_id: str | None = None,
    ) -> tuple[Run, bool]:
        """Create a run; returns ``(run, created)``. A replayed Idempotency-Key returns the first run.

        ``input_message_id`` names a message already in the thread as the run's input
        (the OpenAI-compatible endpoint stores the client's messages itself).
        """
        options = options or {}
        digest = request_hash(thread_id, {"input": text, "multitask": multitask, "options": options})
        insert = partial(
            self._insert,
            principal,
            thread_id,
            text,
            multitask,
            idempotency_key,
            digest,
            options,
            input_message_id,
        )
        try:
            try:
                run, interrupted = await insert()
            except IntegrityError:
                # A concurrent request with the same key won the race: answer with its run.
                run, interrupted = await insert()
        except _Replay as replay:
            async with self._db.session() as session:
                return await session.get_one(Run, replay.run_id), False
        for active_id in interrupted:
            await self._executor.cancel(active_id, reason="interrupted", wait=0)
        if run.status == "running":
            self._log.open_new(run.id)
            self._executor.submit(run, run.thread_id)
        else:
            self._executor.submit(run.id, run.thread_id)
        return run, True

    async def _insert(
        self,
        principal: Principal,
        thread_id: str,
        text: str,
        multitask: Multitask,
        key: str | None,
        digest: str,
        options: dict[str, Any],
        input_message_id: str | None,
    ) -> tuple[Run, list[str]]:
        """Insert a new run; its thread's active runs to interrupt. Raises ``_Replay`` for a known key.

        Straight through the driver (``Database.direct``): on the path to every run's first token."""
        title = text.strip().splitlines()[0][:80] if text.strip() else None
        async with self._db.direct() as tx:
            found = await tx.first(
                _TOUCH_THREAD if principal.is_admin else _TOUCH_OWN_THREAD,
                {
                    "thread_id": thread_id,
                    "owner_id": principal.user_id,
                    "touched_at": now(),
                    "new_title": title,
                },
            )
            if found is None:
                raise not_found("thread", thread_id)
            thread = Thread(id=thread_id, user_id=found[0], assistant=found[1])  # for the hooks
            if key is not None:
                existing = await tx.first(_BY_KEY, {"user_id": thread.user_id, "key": key})
                if existing is not None:
                    if existing[1] != digest:
                        raise ApiError(
                            422,
                            "idempotency_key_reused",
                            "this Idempotency-Key was already used with a different request",
                        )
                    raise _Replay(existing[0])
            active = [r[0] for r in await tx.rows(_ACTIVE, {"thread_id": thread_id})]
            if active and multitask == "reject":
                raise ApiError(
                    409,
                    "run_active",
                    f"thread {thread_id} already has an active run ({active[0]}); "
                    "wait for it, cancel it, or send multitask=enqueue or interrupt",
                )
            if self.admit is not None:
                await self.admit(tx, thread, text)
            run = Run(
                id=new_id("run"),
                thread_id=thread_id,
                user_id=thread.user_id,
                assistant=thread.assistant,
                status="queued",
                input=text,
                multitask=multitask,
                idempotency_key=key,
                request_hash=digest,
                options=options,
                input_message_id=input_message_id,
            )
            exposure = await self.assign(tx, run, thread) if self.assign is not None else None
            message = None
            if not active and self._executor.has_capacity():
                # Nothing ahead of it: claim it in this same transaction (one commit fewer
                # before the first token); the executor starts it as soon as this returns.
                run.status, run.attempt, run.started_at = "running", 1, now()
                if run.input_message_id is None:
                    message = Message(
                        id=new_id("msg"), thread_id=thread_id, role="user", content=text, run_id=run.id
                    )
                    run.input_message_id = message.id
            # The run is returned as a plain object, tracked by no session.
            await tx.insert(_runs, row(run))
            if message is not None:
                await tx.insert(_MESSAGES, row(message))
            if exposure is not None:
                await tx.insert(exposure.__table__, row(exposure))  # type: ignore[arg-type]
        return run, active if multitask == "interrupt" else []

    async def get(self, principal: Principal, run_id: str) -> Run:
        async with self._db.session() as session:
            run = await session.scalar(visible(select(Run).where(Run.id == run_id), principal, Run.user_id))
        if run is None:
            raise not_found("run", run_id)
        return run

    async def cancel(self, principal: Principal, run_id: str) -> Run:
        """Cancel a run; cancelling a finished run changes nothing."""
        run = await self.get(principal, run_id)
        if run.status in TERMINAL_STATUSES:
            return run
        await self._executor.cancel(run.id, reason="cancelled", wait=self._cancel_wait)
        return await self.get(principal, run_id)

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
            await self._executor.cancel(run_id, wait=self._cancel_wait)
        for release in self.on_delete:
            await release(thread_id)
        await delete_thread_rows(self._db, thread_id)
