"""OpenAI Responses over Parley's runs: a response is a run, its thread the conversation.

Creating a response stores its input items as messages of a thread, then creates a run on it
(``Runs.create``: the same idempotency, admission, budgets and experiments as any run). Which
thread: the ``conversation``'s (a thread of the caller's); for ``previous_response_id``, the
previous response's thread when that response is still its latest turn, else a new thread
with a copy of the history up to it (a fork: the chain branches, as OpenAI's does); otherwise a
new thread. What the request asked that the run itself does not hold (the model name as sent,
``instructions``, ``store``, ``background``, metadata, tools as sent, the input's message ids)
is kept in ``run.options["response"]`` (``parley.response_view.KEY``): it is written once, with
the run, and read with it, so no table of its own is needed. The client's tools, sampling and
``instructions`` travel in ``run.options["client"]`` (``parley.passthrough``).

Reading a response replays its run's log through ``ResponseView``; a stream follows the log.
``store=false``: the response is not readable afterwards, and a thread made for it (a new one,
or a fork) is deleted once it ends; a conversation keeps its items.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from sqlalchemy import delete, func, select, update

from parley.errors import ApiError, not_found
from parley.events import KEEPALIVE, TERMINAL_STATUSES, EventLog
from parley.response_view import KEY, ResponseView, frame, is_response, spec_of
from parley.runs.lifecycle import NewRun
from parley.store.db import Database
from parley.store.schema import Base, Event, Message, Run, Thread, new_id, now
from parley.threads import get_thread, new_thread
from parley.users import Principal

log = structlog.get_logger(__name__)

_threads, _messages = Base.metadata.tables["threads"], Base.metadata.tables["messages"]


class RunsApi(Protocol):
    """What responses use of ``parley.runs``' ``Runs``: its public face, nothing more."""

    async def create(self, principal: Principal, new: NewRun) -> tuple[Run, bool]: ...

    async def get(self, principal: Principal, run_id: str) -> Run: ...

    async def cancel(self, principal: Principal, run_id: str) -> Run: ...

    async def delete_thread(self, principal: Principal, thread_id: str) -> None: ...


@dataclass
class NewResponse:
    """A validated ``POST /v1/responses``."""

    model: str
    rows: list[Message]
    #: ``run.options["response"]``, less what ``create`` adds (input ids, own thread).
    spec: dict[str, Any]
    #: ``run.options["client"]`` (``parley.passthrough.options``).
    client: dict[str, Any]
    request_hash: str
    previous_response_id: str | None = None
    conversation: str | None = None
    idempotency_key: str | None = None
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Placed:
    """Where a response's input goes: the thread, the ids of its input messages, and for a new
    thread the thread and the messages to store with the run."""

    thread_id: str
    added: list[str]
    thread: Thread | None = None
    messages: tuple[Message, ...] = ()


class Responses:
    def __init__(self, db: Database, runs: RunsApi, log_: EventLog) -> None:
        self._db = db
        self._runs = runs
        self._log = log_

    # -- create --------------------------------------------------------------------------

    async def create(self, principal: Principal, new: NewResponse) -> tuple[Run, bool]:
        """The response's run; ``(run, False)`` for an Idempotency-Key seen before."""
        if new.idempotency_key is not None:
            known = await self._by_key(principal, new.idempotency_key, new.request_hash)
            if known is not None:
                return known, False
        spec = dict(new.spec, request=new.request_hash)
        placed = await self._place(principal, new, spec)
        text = new.rows[-1].content if new.rows[-1].role == "user" else ""
        options: dict[str, Any] = {KEY: spec}
        if new.client:
            options["client"] = new.client
        if new.files:
            options["metadata"] = {"files": new.files}
        try:
            run, created = await self._runs.create(
                principal,
                NewRun(
                    placed.thread_id,
                    text,
                    options=options,
                    input_message_id=placed.added[-1] if placed.added else None,
                    idempotency_key=new.idempotency_key,
                    thread=placed.thread,
                    messages=placed.messages,
                ),
            )
        except ApiError as exc:
            if placed.thread is None:
                await self._undo(placed.added)
            if exc.code == "idempotency_key_reused" and new.idempotency_key is not None:
                # A concurrent request with the same key won the race.
                known = await self._by_key(principal, new.idempotency_key, new.request_hash)
                if known is not None:
                    return known, False
            raise
        return run, created

    async def _by_key(self, principal: Principal, key: str, request_hash: str) -> Run | None:
        async with self._db.session() as session:
            run = await session.scalar(
                select(Run).where(Run.user_id == principal.user_id, Run.idempotency_key == key)
            )
        if run is None:
            return None
        if not is_response(run) or spec_of(run).get("request") != request_hash:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request",
            )
        return run

    async def _place(self, principal: Principal, new: NewResponse, spec: dict[str, Any]) -> _Placed:
        """Where the input goes: appended to an existing thread now, or a new thread (with the
        input) for the run's own transaction. A lone user message on a new thread is left to
        the run (it stores its input itself)."""
        if new.conversation is not None:
            thread_id = await self._conversation(principal, new.conversation)
            spec["conversation"] = thread_id
            added = await self._append(thread_id, new.model, new.rows)
            spec["input"] = added
            return _Placed(thread_id, added)
        history: list[Message] = []
        if new.previous_response_id is not None:
            previous = await self.get(principal, new.previous_response_id)
            if previous.status not in TERMINAL_STATUSES:
                raise ApiError(
                    409,
                    "response_in_progress",
                    f"response {previous.id} is still in progress: wait for it, or cancel it",
                )
            history, latest = await self._history_until(previous)
            if latest and spec.get("store", True):
                added = await self._append(previous.thread_id, new.model, new.rows)
                spec["input"] = added
                return _Placed(previous.thread_id, added)
        thread = new_thread(principal.user_id, new.model, metadata={"via": "responses"})
        spec["own_thread"] = True
        lone = not history and len(new.rows) == 1 and new.rows[0].role == "user"
        rows = () if lone else (*(_copy(m) for m in history), *new.rows)
        added = [m.id for m in new.rows] if not lone else []
        spec["input"] = added
        return _Placed(thread.id, added, thread, rows)

    async def _conversation(self, principal: Principal, thread_id: str) -> str:
        async with self._db.session() as session:
            thread = await get_thread(session, principal, thread_id)
            active = await session.scalar(
                select(Run.id)
                .where(Run.thread_id == thread.id, Run.status.not_in(TERMINAL_STATUSES))
                .limit(1)
            )
        if active is not None:
            raise ApiError(
                409,
                "conversation_busy",
                f"conversation {thread_id} has a response in progress ({active}): wait for it or cancel it",
            )
        return thread.id

    async def _history_until(self, previous: Run) -> tuple[list[Message], bool]:
        """The previous response's thread up to its last message; whether that is the thread's last."""
        own = set(spec_of(previous).get("input") or [])
        async with self._db.session() as session:
            messages = list(
                (
                    await session.scalars(
                        select(Message)
                        .where(Message.thread_id == previous.thread_id)
                        .order_by(Message.created_at, Message.id)
                    )
                ).all()
            )
        ends = [
            i
            for i, m in enumerate(messages)
            if m.run_id == previous.id or m.id in own or m.id == previous.input_message_id
        ]
        if not ends:
            return messages, True
        last = ends[-1]
        return messages[: last + 1], last == len(messages) - 1

    async def _append(self, thread_id: str, model: str, rows: list[Message]) -> list[str]:
        start = now()
        async with self._db.transaction() as session:
            # The conversation goes on with the model this response names.
            await session.execute(
                update(Thread)
                .where(Thread.id == thread_id, Thread.assistant != model)
                .values(assistant=model)
            )
            for index, message in enumerate(rows):
                message.thread_id = thread_id
                message.created_at = start + index * 1e-6
                session.add(message)
        return [m.id for m in rows]

    async def _undo(self, added: list[str]) -> None:
        """Remove the input ``_place`` appended to a thread for a run that was not created."""
        if added:
            async with self._db.transaction() as session:
                await session.execute(delete(Message).where(Message.id.in_(added)))

    # -- read ------------------------------------------------------------------------------

    async def get(self, principal: Principal, response_id: str) -> Run:
        """A stored response of the caller's (404 for anything else, as for another user's)."""
        try:
            run = await self._runs.get(principal, response_id)
        except ApiError as exc:
            raise not_found("response", response_id) from exc
        if not is_response(run) or not spec_of(run).get("store", True):
            raise not_found("response", response_id)
        return run

    async def view(self, run: Run) -> ResponseView:
        """The response as its log says so far."""
        view = ResponseView(run)
        view.start()
        after = 0
        while batch := await self._log.read(run.id, after):
            for event in batch:
                view.feed(event)
            after = batch[-1].seq
        return view

    async def wait(self, run: Run) -> ResponseView:
        view = ResponseView(run)
        view.start()
        async for event in self._log.follow(run.id):
            view.feed(event)
        return view

    async def stream(
        self,
        run: Run,
        *,
        after: int = -1,
        ping: float = 15.0,
        principal: Principal | None = None,
        cancel_on_close: bool = False,
    ) -> AsyncGenerator[bytes, None]:
        """The response's stream events numbered after ``after``, as SSE frames; ends after
        the terminal one. ``cancel_on_close``: a client that leaves before the end cancels the
        run (a request that was not ``background``)."""
        view = ResponseView(run)
        head = b"".join(frame(e) for e in view.start() if e["sequence_number"] > after)
        if head and run.status != "running":
            # Queued: say so now. A running run's first events are a moment away, and go in
            # the same write (each write costs a pass through the middlewares and a syscall).
            yield head
            head = b""
        try:
            # The events read together go out in one write, as on the native stream.
            async for batch in self._log.follow_with_heartbeats(run.id, 0, every=ping):
                body = head + b"".join(
                    frame(e) for event in batch for e in view.feed(event) if e["sequence_number"] > after
                )
                head = b""
                if body or not batch:
                    yield body or KEEPALIVE
        finally:
            if not view.done and cancel_on_close and principal is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._runs.cancel(principal, run.id))
            if not spec_of(run).get("store", True) and (view.done or cancel_on_close):
                await asyncio.shield(self.forget(run))

    async def check_cursor(self, run: Run, after: int) -> None:
        """A finished response has a known last event: resuming after it is a 400."""
        if run.status not in TERMINAL_STATUSES or after < 0:
            return
        last = (await self.view(run)).sequence - 1
        if after > last:
            raise ApiError(
                400,
                "invalid_cursor",
                f"cannot resume after event {after}: the response's last event is {last}",
            )

    async def input_items(self, run: Run) -> list[Message]:
        """The messages the response was given, in order."""
        ids = list(spec_of(run).get("input") or [])
        if not ids and run.input_message_id:
            ids = [run.input_message_id]
        async with self._db.session() as session:
            found = {
                m.id: m for m in (await session.scalars(select(Message).where(Message.id.in_(ids)))).all()
            }
        return [found[i] for i in ids if i in found]

    # -- end -------------------------------------------------------------------------------

    async def cancel(self, principal: Principal, run: Run) -> Run:
        await self._runs.cancel(principal, run.id)
        return await self._runs.get(principal, run.id)

    async def delete(self, principal: Principal, run: Run) -> None:
        """Delete a response: its run and events; with them its thread when the thread was made
        for it and holds no other run. Messages of a conversation or a chain stay in it."""
        if run.status not in TERMINAL_STATUSES:
            run = await self._runs.cancel(principal, run.id)
            if run.status not in TERMINAL_STATUSES:
                raise ApiError(409, "response_in_progress", f"response {run.id} could not be stopped yet")
        if spec_of(run).get("own_thread") and await self._only_run(run):
            await self._runs.delete_thread(principal, run.thread_id)
            return
        async with self._db.transaction() as session:
            await session.execute(delete(Event).where(Event.run_id == run.id))
            await session.execute(delete(Run).where(Run.id == run.id))

    async def forget(self, run: Run) -> None:
        """After a ``store=false`` response: its own thread goes; a conversation keeps its items."""
        if not spec_of(run).get("own_thread"):
            return
        async with self._db.session() as session:
            status = await session.scalar(select(Run.status).where(Run.id == run.id))
        if status is not None and status not in TERMINAL_STATUSES:
            return  # still running: the stream that ends it forgets it
        async with self._db.transaction() as session:
            await session.execute(delete(Event).where(Event.run_id == run.id))
            await session.execute(delete(Run).where(Run.thread_id == run.thread_id))
            await session.execute(delete(Message).where(Message.thread_id == run.thread_id))
            await session.execute(delete(Thread).where(Thread.id == run.thread_id))

    async def _only_run(self, run: Run) -> bool:
        async with self._db.session() as session:
            count = await session.scalar(
                select(func.count()).select_from(Run).where(Run.thread_id == run.thread_id)
            )
        return count == 1


def _copy(message: Message) -> Message:
    return Message(
        id=new_id("msg"), role=message.role, content=message.content, data=dict(message.data or {})
    )
