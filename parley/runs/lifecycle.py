"""Every state change of a run, in one place: create, claim (with a lease), heartbeat, finish
(fenced by attempt), request cancel, reap.

The database is the arbiter, so any number of processes may share it:

- a run is created ``queued`` (or claimed at once, in its creating transaction, when the
  creating process's own worker has room and the thread has no active run);
- a worker claims the oldest queued run of a thread that has no running run, with
  ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; a partial unique index (one ``running`` run per
  thread) makes two claims of one thread impossible, whatever the race;
- a claim carries a lease (``lease_until``) that the worker renews by heartbeat; every write
  of the run's end is fenced by its ``attempt``, so a worker that lost its lease writes nothing;
- a cancel is a durable request (``cancel_requested``) that the owning worker honours; a
  queued run is ended at once;
- the reaper resolves expired leases with the recovery policy: a run that produced nothing is
  queued again (its next claim is attempt + 1); one that produced events ends with
  ``run.failed`` (``interrupted``), or ``run.cancelled`` when a cancel was asked for, because
  its client may already have shown part of an answer that cannot be reproduced.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from sqlalchemy import (
    Float,
    String,
    and_,
    bindparam,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from parley import events as ev
from parley.assistants import UnknownAssistant
from parley.bus import Bus
from parley.bus.postgres import CHANNEL
from parley.errors import ApiError, not_found
from parley.events import EventLog
from parley.metrics import Metrics
from parley.providers.base import ProviderError
from parley.providers.registry import UnknownProvider
from parley.providers.route import AllProvidersFailed
from parley.runs.state import RunState
from parley.store.db import Database, Direct
from parley.store.schema import Base, Event, Message, Run, Thread, from_row, new_id, now, row
from parley.users import Principal

log = structlog.get_logger(__name__)

#: Where queued runs are announced (any worker may claim them).
QUEUED = "runs:queued"

Multitask = Literal["reject", "enqueue", "interrupt"]
ACTIVE_STATUSES = ("queued", "running")
INTERRUPTED_ERROR = {
    "code": "interrupted",
    "message": "the server stopped while this run was in progress; send the message again",
}
#: Sets a new run's experiment variant inside its creating transaction (``Experiments.assign``);
#: returns a row (an exposure) that the transaction inserts with the run, or None. Hooks read
#: through the transaction: a second pooled connection per creation could starve the pool.
Assign = Callable[[Direct, Run, Thread], Awaitable[Base | None]]
#: Decides, inside the creating transaction, whether a run may be created (raises ``ApiError``).
Admit = Callable[[Direct, Thread, str], Awaitable[None]]

_runs, _threads = Base.metadata.tables["runs"], Base.metadata.tables["threads"]
_messages = Base.metadata.tables["messages"]
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


def _claimable() -> Any:
    """The oldest queued run of a thread that has no running run (and no older queued one)."""
    candidate, running, earlier = aliased(Run), aliased(Run), aliased(Run)
    return (
        select(candidate.id)
        .where(
            candidate.status == "queued",
            ~select(running.id)
            .where(running.thread_id == candidate.thread_id, running.status == "running")
            .exists(),
            ~select(earlier.id)
            .where(
                earlier.thread_id == candidate.thread_id,
                earlier.status == "queued",
                or_(
                    earlier.created_at < candidate.created_at,
                    and_(earlier.created_at == candidate.created_at, earlier.id < candidate.id),
                ),
            )
            .exists(),
        )
        .order_by(candidate.created_at, candidate.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


_CLAIM = (
    update(_runs)
    .where(_runs.c.id == _claimable())
    .values(
        status="running",
        attempt=_runs.c.attempt + 1,
        started_at=bindparam("at"),
        lease_until=bindparam("lease"),
        worker_id=bindparam("worker"),
        cancel_requested=null(),
    )
    .returning(*_runs.c)
)


# PostgreSQL: the claim and the user's message of the run in one statement (one round trip, its
# own transaction): the run's ``input_message_id`` is set to the given id unless the client
# stored its message already, and the message is inserted exactly when it was set.
def _claim_with_message() -> Any:
    message_id = bindparam("message_id", type_=String)
    claimed = _CLAIM.values(input_message_id=func.coalesce(_runs.c.input_message_id, message_id)).cte(
        "claimed"
    )
    message = (
        insert(_messages)
        .from_select(
            ["id", "thread_id", "role", "content", "run_id", "data", "created_at"],
            select(
                message_id,
                claimed.c.thread_id,
                literal("user", String),
                claimed.c.input,
                claimed.c.id,
                literal_column("'{}'"),
                bindparam("at", type_=Float),
            ).where(claimed.c.input_message_id == message_id),
        )
        .cte("message")
    )
    return select(claimed).add_cte(message)


_CLAIM_WITH_MESSAGE = _claim_with_message()


@functools.cache
def _insert_queued(columns: tuple[str, ...]) -> Any:
    """PostgreSQL: a queued run's insert (of these columns) and the notice that wakes idle
    workers as it commits, in one statement: a round trip fewer on the path to its first
    token, where a worker elsewhere claims it."""
    values = {name: bindparam(name, type_=_runs.c[name].type) for name in columns}
    return select(func.pg_notify(CHANNEL, bindparam("notice", type_=String))).add_cte(
        insert(_runs).values(values).cte("queued")
    )


_SET_INPUT = (
    update(_runs).where(_runs.c.id == bindparam("run_id")).values(input_message_id=bindparam("message_id"))
)
_HEARTBEAT = (
    update(_runs)
    .where(_runs.c.worker_id == bindparam("worker"), _runs.c.status == "running")
    .values(lease_until=bindparam("lease"))
    .returning(_runs.c.id, _runs.c.attempt, _runs.c.cancel_requested)
)
_FINALIZE = update(_runs).where(
    _runs.c.id == bindparam("run_id"),
    _runs.c.attempt == bindparam("attempt_no"),
    _runs.c.status == "running",
)


class StaleAttempt(RuntimeError):
    """Another attempt of this run has taken over (or the run ended): this writer must stop."""


class _Replay(Exception):
    """An Idempotency-Key seen before: its run is the answer, and the transaction rolls back."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id


@dataclass(frozen=True)
class NewRun:
    """What a run is created from.

    ``thread``, when given, is a new thread (its id is ``thread_id``): it is stored with
    ``messages`` (the client's input, in order) in the run's own transaction, so a new
    conversation costs one commit before its first token, and a refused run leaves nothing
    behind. ``input_message_id`` names a message already stored (or among ``messages``) as the
    run's input; without it the run stores ``text`` as the user's message when it starts.
    """

    thread_id: str
    text: str
    multitask: Multitask = "reject"
    idempotency_key: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    input_message_id: str | None = None
    thread: Thread | None = None
    messages: tuple[Message, ...] = ()


@dataclass(frozen=True)
class Created:
    run: Run
    #: False when an Idempotency-Key replayed an earlier request: ``run`` is that request's run.
    created: bool
    #: Runs of the thread that a ``multitask="interrupt"`` creation must interrupt.
    interrupted: tuple[str, ...] = ()
    #: The queued run was announced to the other processes' workers by its commit: only this
    #: process's own subscribers remain to be woken (``Bus.wake_here``).
    announced: bool = False


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learnt: the runs whose lease was renewed, and cancel requests among them."""

    kept: frozenset[str]
    cancels: Mapping[str, str]


def new_worker_id() -> str:
    """``host:pid:random``: unique per process start, and telling whether its process is alive."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def is_dead(worker_id: str | None, own: frozenset[str] | set[str] = frozenset()) -> bool:
    """Whether ``worker_id`` names a process of this host that is provably gone: its pid is
    not running, or it is this process's pid under an id that is not one of ``own`` (this
    process's workers): a restarted container."""
    if worker_id is None:
        return True
    host, _, rest = worker_id.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return worker_id not in own
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def request_hash(thread_id: str, body: dict[str, Any]) -> str:
    canonical = json.dumps({"thread": thread_id, **body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Lifecycle:
    def __init__(
        self,
        db: Database,
        log_: EventLog,
        metrics: Metrics,
        *,
        bus: Bus | None = None,
        lease_seconds: float = 15.0,
        assign: Assign | None = None,
        admit: Admit | None = None,
    ) -> None:
        self.db = db
        self.log = log_
        self.metrics = metrics
        #: Announces a queued run with its creating commit, where the bus can (``commit_notice``).
        self.bus = bus
        self.lease_seconds = lease_seconds
        self.assign = assign
        self.admit = admit
        #: The ids of this process's workers (their runs are alive while the process is).
        self.own_workers: set[str] = set()

    # -- create -------------------------------------------------------------------------

    async def create(self, principal: Principal, new: NewRun, *, claim_for: str | None = None) -> Created:
        """Create a run. A replayed Idempotency-Key returns the first run (``created`` False).

        ``claim_for``: a worker of this process with room for the run; when the thread has no
        active run, the run is claimed for it in the creating transaction (one commit fewer
        before the first token).
        """
        digest = request_hash(
            new.thread_id, {"input": new.text, "multitask": new.multitask, "options": new.options}
        )
        try:
            try:
                return await self._insert(principal, new, digest, claim_for)
            except IntegrityError:
                # A concurrent request with the same key won the race, or a worker claimed a run
                # of this thread meanwhile: once more, which answers with the key's run or queues.
                return await self._insert(principal, new, digest, claim_for)
        except _Replay as replay:
            async with self.db.session() as session:
                return Created(await session.get_one(Run, replay.run_id), created=False)

    async def _insert(self, principal: Principal, new: NewRun, digest: str, claim_for: str | None) -> Created:
        """Straight through the driver (``Database.direct``): on the path to every run's first token."""
        text, key, multitask, thread_id = new.text, new.idempotency_key, new.multitask, new.thread_id
        title = text.strip().splitlines()[0][:80] if text.strip() else None
        async with self.db.direct() as tx:
            if new.thread is not None:
                thread = new.thread
                await tx.insert(_threads, {**row(thread), "title": thread.title or title})
                start = now()
                for index, stored in enumerate(new.messages):
                    stored.thread_id = thread.id
                    stored.created_at = start + index * 1e-6  # keeps the client's order
                    await tx.insert(_messages, row(stored))
            else:
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
            active = (
                []
                if new.thread is not None
                else [r[0] for r in await tx.rows(_ACTIVE, {"thread_id": thread_id})]
            )
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
                options=new.options,
                input_message_id=new.input_message_id,
            )
            exposure = await self.assign(tx, run, thread) if self.assign is not None else None
            message = None
            if not active and claim_for is not None:
                started = now()
                run.status, run.attempt, run.started_at = "running", 1, started
                run.worker_id, run.lease_until = claim_for, started + self.lease_seconds
                message = self._input_message(run)
            # Idle workers elsewhere wake as a queued run commits: no pass through this
            # process's event loop, no round trip of its own, on the path to its first token.
            notice = (
                self.bus.commit_notice([QUEUED]) if run.status == "queued" and self.bus is not None else None
            )
            # The run is returned as a plain object, tracked by no session.
            if notice is None:
                await tx.insert(_runs, row(run))
            else:
                values = row(run)
                await tx.rows(_insert_queued(tuple(values)), {**values, "notice": notice})
            if message is not None:
                await tx.insert(_messages, row(message))
            if exposure is not None:
                await tx.insert(exposure.__table__, row(exposure))  # type: ignore[arg-type]
        return Created(
            run,
            created=True,
            interrupted=tuple(active) if multitask == "interrupt" else (),
            announced=notice is not None,
        )

    @staticmethod
    def _input_message(run: Run) -> Message | None:
        """The user's message of a run that starts, unless the client stored it already."""
        if run.input_message_id is not None:
            return None
        message = Message(
            id=new_id("msg"), thread_id=run.thread_id, role="user", content=run.input, run_id=run.id
        )
        run.input_message_id = message.id
        return message

    # -- claim and heartbeat ------------------------------------------------------------

    async def claim(self, worker_id: str) -> Run | None:
        """Claim the next run for ``worker_id``: queued → running, attempt + 1, with a lease.

        Straight through the driver: on the path to the first token of every run that waited in
        the queue (all of them, when API and workers are separate processes). A claimed run has
        no events yet (the recovery policy queues again only runs that produced none)."""
        for _ in range(3):
            try:
                if not self.db.is_sqlite:
                    return await self._claim_in_one_statement(worker_id)
                async with self.db.direct() as tx:
                    at = now()
                    found = await tx.first(
                        _CLAIM, {"at": at, "lease": at + self.lease_seconds, "worker": worker_id}
                    )
                    if found is None:
                        return None
                    run = from_row(Run, found)
                    message = self._input_message(run)
                    if message is not None:
                        await tx.insert(_messages, row(message))
                        await tx.rows(_SET_INPUT, {"run_id": run.id, "message_id": message.id})
                return run
            except IntegrityError:
                continue  # another worker claimed a run of the same thread at the same moment
        return None

    async def _claim_in_one_statement(self, worker_id: str) -> Run | None:
        at, message_id = now(), new_id("msg")
        params = {"at": at, "lease": at + self.lease_seconds, "worker": worker_id, "message_id": message_id}
        async with self.db.one_statement() as db:
            found = await db.first(_CLAIM_WITH_MESSAGE, params)
        return None if found is None else from_row(Run, found)

    async def heartbeat(self, worker_id: str, held: Mapping[str, int]) -> Beat:
        """Renew the leases of the runs ``worker_id`` holds (run id → attempt)."""
        if not held:
            return Beat(frozenset(), {})
        async with self.db.transaction() as session:
            rows = (
                await session.execute(_HEARTBEAT, {"worker": worker_id, "lease": now() + self.lease_seconds})
            ).all()
        kept = frozenset(run_id for run_id, attempt, _ in rows if held.get(run_id) == attempt)
        cancels = {run_id: reason for run_id, _, reason in rows if run_id in kept and reason}
        return Beat(kept, cancels)

    async def cancel_requested(self, run_id: str) -> str | None:
        async with self.db.session() as session:
            value: str | None = await session.scalar(select(Run.cancel_requested).where(Run.id == run_id))
            return value

    # -- finish ---------------------------------------------------------------------------

    async def complete(self, state: RunState) -> None:
        run = state.run
        usage = state.usage()
        message_id = new_id("msg")
        finish_reason = state.finish_reason or "stop"
        data = {
            "message_id": message_id,
            "text": state.text,
            "sources": state.sources,
            "usage": usage,
            "finish_reason": finish_reason,
        }
        message = Message(
            id=message_id,
            thread_id=run.thread_id,
            role="assistant",
            content=state.text,
            run_id=run.id,
            data={
                **state.message_data,
                "usage": usage,
                "sources": state.sources,
                "model": state.model,
                "finish_reason": finish_reason,
            },
        )
        finalize = _finalize(
            run.id,
            run.attempt,
            status="completed",
            output=state.text,
            usage=usage,
            model=state.model,
            finish_reason=finish_reason,
            output_message_id=message_id,
            upkeep_pending=state.assistant is not None and state.route is not None,
        )

        async def finish(session: AsyncSession) -> None:
            await finalize(session)  # first: the fence
            await (await session.connection()).execute(insert(_messages), row(message))

        await self.log.append_terminal(run.id, ev.RUN_COMPLETED, data, finish)
        self.metrics.runs.labels(run.assistant, "completed").inc()
        log.info("run_completed", **{k: v for k, v in usage.items() if v is not None})

    async def fail(self, state: RunState, error: BaseException) -> None:
        run = state.run
        if isinstance(error, AllProvidersFailed):
            body = {"code": error.code, "message": error.message, "providers": error.failures}
        elif isinstance(error, ProviderError):
            body = {"code": error.code, "message": error.message}
        elif isinstance(error, UnknownAssistant):
            body = {"code": "unknown_assistant", "message": f"assistant {error.args[0]!r} is not configured"}
        elif isinstance(error, UnknownProvider):
            body = {"code": "unknown_provider", "message": str(error)}
        else:
            log.error("run_crashed", error=repr(error), exc_info=error)
            body = {"code": "internal_error", "message": "the run failed unexpectedly; see the server log"}
        await self.log.append_terminal(
            run.id,
            ev.RUN_FAILED,
            {"error": body},
            _finalize(run.id, run.attempt, status="failed", error=body, output=state.text, model=state.model),
        )
        self.metrics.runs.labels(run.assistant, "failed").inc()
        log.warning("run_failed", code=body["code"], message=body["message"])

    async def cancelled(self, state: RunState, reason: str) -> None:
        """End a running run that stopped producing: ``cancelled`` or ``interrupted`` (by a newer
        run of its thread) with ``run.cancelled``; ``shutdown`` with ``run.failed`` (interrupted)."""
        run = state.run
        if reason == "shutdown":
            await self.log.append_terminal(
                run.id,
                ev.RUN_FAILED,
                {"error": INTERRUPTED_ERROR},
                _finalize(
                    run.id, run.attempt, status="interrupted", error=INTERRUPTED_ERROR, output=state.text
                ),
            )
            reason = "interrupted"
        else:
            data: dict[str, Any] = {} if reason == "cancelled" else {"reason": reason}
            await self.log.append_terminal(
                run.id,
                ev.RUN_CANCELLED,
                data,
                _finalize(run.id, run.attempt, status=reason, output=state.text, model=state.model),
            )
        self.metrics.runs.labels(run.assistant, reason).inc()
        log.info("run_" + reason)

    async def release(self, run: Run) -> bool:
        """Hand a claimed run that has produced nothing back to the queue (graceful shutdown)."""
        async with self.db.transaction() as session:
            if await self.log.last_seq(run.id):
                return False
            result = await session.execute(
                update(Run)
                .where(Run.id == run.id, Run.attempt == run.attempt, Run.status == "running")
                .values(status="queued", worker_id=None, lease_until=None)
            )
        self.log.forget(run.id)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- cancel -------------------------------------------------------------------------

    async def request_cancel(
        self, run_id: str, reason: str = "cancelled"
    ) -> Literal["ended", "requested", "finished"]:
        """Cancel a run from any process: a queued run ends at once (``ended``); a running run
        gets a durable request that its worker honours (``requested``); ``finished``: nothing to do."""
        for _ in range(3):
            if await self._end_queued(run_id, reason):
                return "ended"
            async with self.db.transaction() as session:
                result = await session.execute(
                    update(Run)
                    .where(Run.id == run_id, Run.status == "running")
                    .values(cancel_requested=func.coalesce(Run.cancel_requested, reason))
                )
                if result.rowcount:  # type: ignore[attr-defined]
                    return "requested"
                status = await session.scalar(select(Run.status).where(Run.id == run_id))
            if status != "queued":  # else it went back to the queue meanwhile: once more
                return "finished"
        return "finished"

    async def _end_queued(self, run_id: str, reason: str) -> bool:
        data: dict[str, Any] = {} if reason == "cancelled" else {"reason": reason}
        status = "cancelled" if reason == "cancelled" else "interrupted"

        async def mark(session: AsyncSession) -> None:
            result = await session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == "queued")
                .values(status=status, finished_at=now())
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise StaleAttempt(run_id)

        try:
            await self.log.append_terminal(run_id, ev.RUN_CANCELLED, data, mark)
        except StaleAttempt:
            return False
        return True

    # -- reap -----------------------------------------------------------------------------

    async def reap(self, *, limit: int = 100) -> list[str]:
        """Resolve runs whose lease expired (or whose worker is provably dead: a process of
        this host that is gone). Returns the runs queued again. Idempotent; any process may."""
        at = now()
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(Run.id, Run.attempt, Run.worker_id, Run.lease_until)
                    .where(Run.status == "running")
                    .order_by(Run.lease_until)
                    .limit(limit)
                )
            ).all()
        requeued = []
        for run_id, attempt, worker_id, lease_until in rows:
            if lease_until is not None and lease_until >= at and not is_dead(worker_id, self.own_workers):
                continue
            if await self._resolve(run_id, attempt):
                requeued.append(run_id)
        return requeued

    async def _resolve(self, run_id: str, attempt: int) -> bool:
        """The recovery policy for one abandoned run; True when it was queued again."""
        async with self.db.transaction() as session:
            run = await session.scalar(
                select(Run)
                .where(Run.id == run_id, Run.attempt == attempt, Run.status == "running")
                .with_for_update(skip_locked=True)
            )
            if run is None:
                return False  # resolved meanwhile, or being resolved by another process
            if await self._last_seq(session, run_id) == 0 and run.cancel_requested is None:
                run.status, run.worker_id, run.lease_until = "queued", None, None
                log.info("run_requeued", run_id=run_id, attempt=attempt)
                return True
            cancel, assistant = run.cancel_requested, run.assistant
        if cancel is not None:
            data: dict[str, Any] = {} if cancel == "cancelled" else {"reason": cancel}
            status, type_, payload = cancel, ev.RUN_CANCELLED, data
            finalize = _finalize(run_id, attempt, status=cancel)
        else:
            status, type_, payload = "interrupted", ev.RUN_FAILED, {"error": INTERRUPTED_ERROR}
            finalize = _finalize(run_id, attempt, status="interrupted", error=INTERRUPTED_ERROR)
        try:
            await self.log.append_terminal(run_id, type_, payload, finalize)
        except StaleAttempt:
            return False
        self.metrics.runs.labels(assistant, status).inc()
        log.warning("run_" + status, run_id=run_id, reason="lease expired")
        return False

    @staticmethod
    async def _last_seq(session: AsyncSession, run_id: str) -> int:
        value = await session.scalar(select(func.max(Event.seq)).where(Event.run_id == run_id))
        return int(value or 0)

    # -- after a run ------------------------------------------------------------------------

    async def upkept(self, run_ids: list[str]) -> None:
        """The after-run memory work of these runs is done."""
        async with self.db.transaction() as session:
            await session.execute(update(Run).where(Run.id.in_(run_ids)).values(upkeep_pending=False))

    async def upkeep_due(self, *, older_than: float, limit: int = 20) -> list[Run]:
        """Completed runs whose memory work was left undone (their worker died), oldest first."""
        async with self.db.session() as session:
            return list(
                (
                    await session.scalars(
                        select(Run)
                        .where(Run.upkeep_pending.is_(True), Run.finished_at < time.time() - older_than)
                        .order_by(Run.finished_at)
                        .limit(limit)
                    )
                ).all()
            )


def _finalize(run_id: str, attempt: int, **values: Any) -> Callable[[AsyncSession], Awaitable[None]]:
    """Set a run's final state, fenced by its attempt number."""

    async def apply(session: AsyncSession) -> None:
        result = await (await session.connection()).execute(
            _FINALIZE.values(finished_at=now(), lease_until=None, **values),
            {"run_id": run_id, "attempt_no": attempt},
        )
        if result.rowcount != 1:
            raise StaleAttempt(run_id)

    return apply
