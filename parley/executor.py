"""The executor: runs execute as a bounded set of asyncio tasks, one run per thread at a time.

Each run is one task: it streams the provider and appends events, then writes exactly one
terminal event, atomically with the run's final state. Cancelling a run cancels its task
while it produces, which closes the provider stream (the async generator is closed, and
with it the upstream connection); the task catches that and writes the terminal event.

Recovery policy (on start): a run a dead process left ``queued``, or ``running`` without a
single event, is queued again; a run that had produced events is ended with
``run.failed`` (code ``interrupted``) and status ``interrupted``, because its client may
already have shown part of an answer that cannot be reproduced.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley import events as ev
from parley.agent import run_agent
from parley.assistants import Assistant, Assistants, UnknownAssistant
from parley.events import EventLog, EventLogError
from parley.metrics import Metrics
from parley.providers.base import ProviderError
from parley.providers.registry import Providers, UnknownProvider
from parley.providers.route import AllProvidersFailed, Route
from parley.store.db import Database
from parley.store.schema import Base, Message, Run, new_id, now, row
from parley.tools.base import Tools

if TYPE_CHECKING:
    from parley.answers.compose import SentenceGate
    from parley.context import ContextBuilder

if TYPE_CHECKING:
    from parley.knowledge.bases import Knowledge

log = structlog.get_logger(__name__)

INTERRUPTED_ERROR = {
    "code": "interrupted",
    "message": "the server stopped while this run was in progress; send the message again",
}


class StaleAttempt(RuntimeError):
    """Another attempt of this run has taken over; this writer must stop."""


@dataclass
class RunState:
    """What a run has produced so far."""

    run: Run
    #: None only when the run failed before its assistant or route could be resolved.
    assistant: Assistant | None
    route: Route | None
    model: str = ""
    text: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    usage_reported: bool = False
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    finish_reason: str | None = None
    fallbacks: int = 0
    sources: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    message_data: dict[str, Any] = field(default_factory=dict)
    #: Checks a model's grounded answer sentence by sentence (``parley.answers.compose``).
    gate: SentenceGate | None = None

    def usage(self) -> dict[str, Any]:
        end = time.perf_counter()
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": None
            if self.route is None
            else self.route.cost_usd(self.input_tokens, self.output_tokens),
            "latency_ms": round((end - self.started) * 1000, 2),
            "ttft_ms": None
            if self.first_token is None
            else round((self.first_token - self.started) * 1000, 2),
        }


# A step of the agent loop: given the run state, stream one model turn (and any tools).
Producer = Callable[["Executor", RunState], Awaitable[None]]
# The assistant as a run's experiment variant serves it (``Experiments.apply``).
ApplyVariant = Callable[[Run, Assistant], Awaitable[Assistant]]


class Executor:
    def __init__(
        self,
        db: Database,
        log_: EventLog,
        providers: Providers,
        assistants: Assistants,
        metrics: Metrics,
        *,
        context: ContextBuilder,
        max_concurrent: int = 32,
        tools: Tools | None = None,
    ) -> None:
        self.db = db
        self.log = log_
        self.providers = providers
        self.assistants = assistants
        self.metrics = metrics
        self._max_concurrent = max_concurrent
        self.tools = tools
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Runs producing now: their task (in ``_tasks``) may be cancelled to end the stream.
        self._producing: set[str] = set()
        self._cancel_reasons: dict[str, str] = {}
        self._thread_queue: dict[str, deque[str | Run]] = {}
        self._stopping = False
        #: Knowledge bases that assistants retrieve from (set by the app).
        self.knowledge: Knowledge | None = None
        #: The agent loop (``parley.agent.run_agent``); tests may swap it.
        self.produce: Producer = run_agent
        self.apply_variant: ApplyVariant | None = None
        #: Wraps a run's route, e.g. to meter it against the user's token budget.
        self.guard_route: Callable[[Run, Route], Route] | None = None
        #: Builds prompts within the token budget; keeps summaries and memory (``parley.context``).
        self.context = context

    # -- scheduling --------------------------------------------------------------

    def has_capacity(self) -> bool:
        """Whether a run started now would execute at once (used to start runs on creation)."""
        return not self._stopping and len(self._tasks) < self._max_concurrent

    def submit(self, run: str | Run, thread_id: str) -> None:
        """Schedule a run: a queued run's id, or a ``Run`` already claimed (status running)
        by the transaction that created it. It starts once its thread's earlier runs are done."""
        if self._stopping:
            return
        queue = self._thread_queue.get(thread_id)
        if queue is not None:
            queue.append(run)
            return
        self._thread_queue[thread_id] = deque()
        self._spawn(run, thread_id)

    def _spawn(self, run: str | Run, thread_id: str) -> None:
        run_id = run if isinstance(run, str) else run.id
        task = asyncio.create_task(self._run(run), name=f"run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _t: self._done(run_id, thread_id))

    def _done(self, run_id: str, thread_id: str) -> None:
        self._tasks.pop(run_id, None)
        self._cancel_reasons.pop(run_id, None)
        queue = self._thread_queue.get(thread_id)
        if queue:
            self._spawn(queue.popleft(), thread_id)
        else:
            self._thread_queue.pop(thread_id, None)

    async def recover(self) -> None:
        """Resolve runs a dead process left behind, then schedule the queued ones."""
        async with self.db.session() as session:
            running = (await session.scalars(select(Run).where(Run.status == "running"))).all()
        for run in running:
            last = await self.log.last_seq(run.id)
            if last == 0:
                async with self.db.transaction() as session:
                    await session.execute(
                        update(Run).where(Run.id == run.id, Run.status == "running").values(status="queued")
                    )
                log.info("run_requeued", run_id=run.id)
                continue
            await self.log.append_terminal(
                run.id,
                ev.RUN_FAILED,
                {"error": INTERRUPTED_ERROR},
                _finalize(run.id, run.attempt, status="interrupted", error=INTERRUPTED_ERROR),
            )
            self.metrics.runs.labels(run.assistant, "interrupted").inc()
            log.warning("run_interrupted", run_id=run.id, events=last)
        async with self.db.session() as session:
            queued = (
                await session.execute(
                    select(Run.id, Run.thread_id).where(Run.status == "queued").order_by(Run.created_at)
                )
            ).all()
        for run_id, thread_id in queued:
            self.submit(run_id, thread_id)

    async def stop(self) -> None:
        """Stop: running runs end with ``run.failed`` (interrupted) so their readers finish."""
        self._stopping = True
        self._thread_queue.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- cancel ------------------------------------------------------------------

    async def cancel(self, run_id: str, *, reason: str = "cancelled", wait: float = 2.0) -> None:
        """Cancel a queued or running run. ``reason`` is ``cancelled`` or ``interrupted``."""
        if await self._cancel_queued(run_id, reason):
            return
        task = self._tasks.get(run_id)
        if task is None:
            return  # already finished, or not running in this process
        if run_id not in self._cancel_reasons:  # a second cancel waits for the first
            self._cancel_reasons[run_id] = reason
            if run_id in self._producing:
                task.cancel()
            # Else the run is being set up (it cancels itself once it starts producing) or is
            # writing its end: either way, waiting for its task gives the caller the final state.
        if wait > 0:
            await asyncio.wait([task], timeout=wait)

    async def _cancel_queued(self, run_id: str, reason: str) -> bool:
        if run_id in self._producing:
            return False
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

    # -- execution ---------------------------------------------------------------

    async def _run(self, item: str | Run) -> None:
        async with self._slots:
            run = item if isinstance(item, Run) else await self._claim(item)
            if run is None:
                return
            structlog.contextvars.bind_contextvars(run_id=run.id)
            self.metrics.runs_active.inc()
            try:
                await self._execute(run)
            finally:
                self.metrics.runs_active.dec()

    async def _claim(self, run_id: str) -> Run | None:
        """queued -> running, with a new attempt number and the input message in the thread."""
        async with self.db.transaction() as session:
            run = await session.scalar(select(Run).where(Run.id == run_id).with_for_update())
            if run is None or run.status != "queued":
                return None
            run.status = "running"
            run.attempt += 1
            run.started_at = now()
            if run.input_message_id is None:
                message = Message(
                    id=new_id("msg"), thread_id=run.thread_id, role="user", content=run.input, run_id=run.id
                )
                session.add(message)
                run.input_message_id = message.id
        await self.log.open(run_id)
        return run

    async def _execute(self, run: Run) -> None:
        try:
            assistant = self.assistants.get(run.assistant)
            if run.variant is not None and self.apply_variant is not None:
                assistant = await self.apply_variant(run, assistant)
            route = self.providers.route(self.assistants.route_of(assistant))
        except (UnknownAssistant, UnknownProvider, ProviderError) as exc:
            await self._end(RunState(run, None, None), "failed", exc)
            return
        if self.guard_route is not None:
            route = self.guard_route(run, route)
        state = RunState(run, assistant, route, model=route.name)
        # The run produces in this same task (a task of its own would cost a pass through the
        # event loop's queue before the first token); ``cancel`` cancels it, tagged with its reason.
        task = asyncio.current_task()
        assert task is not None
        self._producing.add(run.id)
        try:
            if run.id in self._cancel_reasons:
                raise asyncio.CancelledError  # cancelled while it was being set up: nothing produced
            await self._produce(state)
        except asyncio.CancelledError:
            if self._stopping:
                # The server is stopping: end the run so its readers are not left hanging.
                self._producing.discard(run.id)
                await asyncio.shield(self._end(state, "interrupted", None))
                raise
            task.uncancel()
            outcome, error = self._cancel_reasons.get(run.id, "cancelled"), None
        except Exception as exc:
            outcome, error = "failed", exc
        else:
            outcome, error = "completed", None
        finally:
            self._producing.discard(run.id)
        await self._end(state, outcome, error)

    async def _produce(self, state: RunState) -> None:
        run = state.run
        self.log.append(
            run.id,
            ev.RUN_STARTED,
            {
                "run_id": run.id,
                "thread_id": run.thread_id,
                "assistant": run.assistant,
                "model": state.model,
                "variant": run.variant,
                "attempt": run.attempt,
            },
        )
        await self.produce(self, state)

    async def _end(self, state: RunState, outcome: str, error: BaseException | None) -> None:
        run = state.run
        try:
            if outcome == "completed":
                await self._write_completed(state)
            elif outcome == "failed":
                await self._write_failed(state, error or RuntimeError("unknown failure"))
            else:
                await self._write_cancelled(state, outcome)
        except StaleAttempt:
            log.warning("stale_attempt", run_id=run.id, attempt=run.attempt)
            self.log.forget(run.id)
        except EventLogError as exc:
            log.error("terminal_event_not_written", run_id=run.id, error=str(exc))
            self.log.forget(run.id)

    async def _write_completed(self, state: RunState) -> None:
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

        async def finish(session: AsyncSession) -> None:
            await (await session.connection()).execute(insert(_messages), row(message))
            await _finalize(
                run.id,
                run.attempt,
                status="completed",
                output=state.text,
                usage=usage,
                model=state.model,
                finish_reason=finish_reason,
                output_message_id=message_id,
            )(session)

        await self.log.append_terminal(run.id, ev.RUN_COMPLETED, data, finish)
        self.metrics.runs.labels(run.assistant, "completed").inc()
        log.info("run_completed", **{k: v for k, v in usage.items() if v is not None})
        self.context.after_run(state)

    async def _write_failed(self, state: RunState, error: BaseException) -> None:
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

    async def _write_cancelled(self, state: RunState, outcome: str) -> None:
        run = state.run
        if outcome == "interrupted" and run.id not in self._cancel_reasons:
            # The server is stopping.
            await self.log.append_terminal(
                run.id,
                ev.RUN_FAILED,
                {"error": INTERRUPTED_ERROR},
                _finalize(
                    run.id, run.attempt, status="interrupted", error=INTERRUPTED_ERROR, output=state.text
                ),
            )
        else:
            data: dict[str, Any] = {} if outcome == "cancelled" else {"reason": outcome}
            await self.log.append_terminal(
                run.id,
                ev.RUN_CANCELLED,
                data,
                _finalize(run.id, run.attempt, status=outcome, output=state.text, model=state.model),
            )
        self.metrics.runs.labels(run.assistant, outcome).inc()
        log.info("run_" + outcome)


_runs, _messages = Base.metadata.tables["runs"], Base.metadata.tables["messages"]
# Core statements: the ORM's unit of work and its in-Python evaluation of the WHERE
# clause cost more than the statements themselves at the end of every run.
_FINALIZE = update(_runs).where(
    _runs.c.id == bindparam("run_id"),
    _runs.c.attempt == bindparam("attempt_no"),
    _runs.c.status == "running",
)


def _finalize(run_id: str, attempt: int, **values: Any) -> Callable[[AsyncSession], Awaitable[None]]:
    """Set a run's final state, fenced by its attempt number."""

    async def apply(session: AsyncSession) -> None:
        result = await (await session.connection()).execute(
            _FINALIZE.values(finished_at=now(), **values), {"run_id": run_id, "attempt_no": attempt}
        )
        if result.rowcount != 1:
            raise StaleAttempt(run_id)

    return apply
