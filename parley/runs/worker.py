"""The worker: a loop over a claim. It claims runs (``parley.runs.lifecycle``), executes each as
one asyncio task, renews their leases by heartbeat, and honours cancel requests.

A run's task streams the provider through the agent and appends events, then writes exactly
one terminal event, atomically with the run's final state and fenced by its attempt.
Cancelling a run cancels its task while it produces, which closes the provider stream (the
async generator is closed, and with it the upstream connection); the task catches that and
writes the terminal event. A cancel request reaches the worker over the bus (``cancel:RUN``)
at once, or with the next heartbeat if that wake-up was lost.

``parley serve`` embeds a worker (``PARLEY_WORKER=on``, the default); ``parley worker`` runs
one without an HTTP server. Either way it is this same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from parley import events as ev
from parley.agent import Agent, run_agent
from parley.assistants import Assistant, Assistants, UnknownAssistant
from parley.bus import Bus
from parley.events import EventLog, EventLogError
from parley.metrics import Metrics
from parley.providers.base import ProviderError
from parley.providers.registry import Providers, UnknownProvider
from parley.providers.route import Route
from parley.runs.lifecycle import QUEUED, Lifecycle, StaleAttempt, new_worker_id
from parley.runs.state import RunState
from parley.store.schema import Run

log = structlog.get_logger(__name__)
# Its own generator: the shared ``random`` state belongs to whoever else runs in the process.
_jitter = random.Random()

#: An idle worker looks for queued runs this often even without a wake-up (a lost one).
POLL_SECONDS = 5.0

# The agent loop: given the collaborators and the run state, stream the model turns (and tools).
Producer = Callable[[Agent, RunState], Awaitable[None]]
# The assistant as a run's experiment variant serves it (``Experiments.apply``).
ApplyVariant = Callable[[Run, Assistant], Awaitable[Assistant]]
# Wraps a run's route, e.g. to meter it against the user's token budget.
GuardRoute = Callable[[Run, Route], Route]


def cancel_channel(run_id: str) -> str:
    return f"cancel:{run_id}"


class Worker:
    def __init__(
        self,
        lifecycle: Lifecycle,
        log_: EventLog,
        bus: Bus,
        agent: Agent,
        assistants: Assistants,
        providers: Providers,
        metrics: Metrics,
        *,
        concurrency: int = 32,
        apply_variant: ApplyVariant | None = None,
        guard_route: GuardRoute | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.id = new_worker_id()
        self.lifecycle = lifecycle
        lifecycle.own_workers.add(self.id)
        self.log = log_
        self.bus = bus
        self.agent = agent
        self.assistants = assistants
        self.providers = providers
        self.metrics = metrics
        self.concurrency = concurrency
        self.apply_variant = apply_variant
        self.guard_route = guard_route
        self.poll_seconds = poll_seconds
        #: The agent loop (``parley.agent.run_agent``); tests may swap it.
        self.produce: Producer = run_agent
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, int] = {}  # run id -> attempt, for heartbeats
        #: Runs producing now: their task may be cancelled to end the stream.
        self._producing: set[str] = set()
        self._cancel_reasons: dict[str, str] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._room = asyncio.Event()
        self._claiming = False
        self._stopping = False
        log_.on_fenced = self._fenced

    # -- the loop -----------------------------------------------------------------------

    async def start(self) -> None:
        self._claiming = True
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="parley-worker-claim"),
            asyncio.create_task(self._heartbeat_loop(), name="parley-worker-heartbeat"),
        ]

    def has_capacity(self) -> bool:
        """Whether a run created now may be claimed for this worker in its creating transaction."""
        return self._claiming and len(self._tasks) < self.concurrency

    def adopt(self, run: Run) -> None:
        """Execute a run claimed for this worker by the transaction that created it."""
        self.log.open_new(run.id, 0, run.attempt)
        self._spawn(run)

    async def _claim_loop(self) -> None:
        async with self.bus.subscribe(QUEUED) as queued:
            while self._claiming:
                if len(self._tasks) >= self.concurrency:
                    self._room.clear()
                    await self._room.wait()
                    continue
                try:
                    run = await self.lifecycle.claim(self.id)
                except Exception as exc:  # the database is away: try again later
                    log.warning("claim_failed", error=str(exc))
                    run = None
                    await asyncio.sleep(1.0)
                if run is not None:
                    self.log.open_new(run.id, 0, run.attempt)  # a claimed run has no events yet
                    self._spawn(run)
                    # The run starts (its ``run.started`` on its way to the commit) before this
                    # loop spends the event loop on the next claim: first tokens come first.
                    await asyncio.sleep(0)
                    continue
                # Idle: until a run is queued (or one of ours ends), or the poll comes round.
                await queued.wait(self.poll_seconds * _jitter.uniform(0.8, 1.2))

    async def _heartbeat_loop(self) -> None:
        every = self.lifecycle.lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            held = dict(self._held)
            try:
                beat = await self.lifecycle.heartbeat(self.id, held)
            except Exception as exc:
                log.warning("heartbeat_failed", error=str(exc))
                continue
            for run_id in held.keys() - beat.kept:
                if run_id in self._held:  # not ended meanwhile: another worker has it now
                    self._stop_run(run_id, "lost")
            for run_id, reason in beat.cancels.items():
                self._stop_run(run_id, reason)

    def _fenced(self, run_id: str) -> None:
        self._stop_run(run_id, "lost")

    def _spawn(self, run: Run) -> None:
        self._held[run.id] = run.attempt
        task = asyncio.create_task(self._run(run), name=f"run-{run.id}")
        self._tasks[run.id] = task
        task.add_done_callback(lambda _t: self._done(run.id))

    def _done(self, run_id: str) -> None:
        self._tasks.pop(run_id, None)
        self._held.pop(run_id, None)
        self._cancel_reasons.pop(run_id, None)
        self._room.set()
        if self._claiming:
            # The thread's next queued run may start now: look at once, here or elsewhere.
            asyncio.get_running_loop().create_task(self.bus.publish(QUEUED))

    async def stop(self, grace: float = 0.0) -> None:
        """Stop claiming; let running runs finish for ``grace`` seconds; then end the rest with
        their terminal event (``run.failed``, interrupted), or hand back those that produced
        nothing, so no reader is left hanging."""
        self._claiming = False
        self._room.set()
        if self._tasks and grace > 0:
            await asyncio.wait(list(self._tasks.values()), timeout=grace)
        self._stopping = True
        tasks = list(self._tasks.values())
        for run_id in list(self._tasks):
            self._stop_run(run_id, "shutdown")
        await asyncio.gather(*tasks, return_exceptions=True)
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    # -- cancel ---------------------------------------------------------------------------

    def _stop_run(self, run_id: str, reason: str) -> None:
        """Stop a run's task: ``cancelled``/``interrupted`` (asked for), ``shutdown``, or ``lost``
        (its lease is gone: it ends without writing anything more)."""
        task = self._tasks.get(run_id)
        if task is None or run_id in self._cancel_reasons:
            return
        self._cancel_reasons[run_id] = reason
        if run_id in self._producing:
            task.cancel()
        # Else the run is being set up (it stops once it starts producing) or is writing its end.

    async def _watch_cancel(self, run_id: str, task: asyncio.Task[None]) -> None:
        async with self.bus.subscribe(cancel_channel(run_id)) as wake:
            while not task.done():
                if await wake.wait(None) and (reason := await self.lifecycle.cancel_requested(run_id)):
                    self._stop_run(run_id, reason)
                    return

    # -- execution --------------------------------------------------------------------------

    async def _run(self, run: Run) -> None:
        structlog.contextvars.bind_contextvars(run_id=run.id)
        self.metrics.runs_active.inc()
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self._watch_cancel(run.id, task), name=f"cancel-{run.id}")
        try:
            if run.cancel_requested is not None:
                self._cancel_reasons[run.id] = run.cancel_requested
            await self._execute(run)
        finally:
            watcher.cancel()
            self.metrics.runs_active.dec()

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
        # event loop's queue before the first token); ``_stop_run`` cancels it, with its reason.
        task = asyncio.current_task()
        assert task is not None
        outcome: str
        error: BaseException | None
        self._producing.add(run.id)
        try:
            if run.id in self._cancel_reasons:
                if self._cancel_reasons[run.id] == "shutdown" and await self.lifecycle.release(run):
                    return  # nothing produced: back to the queue, for another worker
                raise asyncio.CancelledError  # stopped while it was being set up
            self.log.append(run.id, ev.RUN_STARTED, _started(run, state.model))
            await self.produce(self.agent, state)
        except asyncio.CancelledError:
            if run.id not in self._cancel_reasons:
                raise  # not ours: the event loop is closing
            task.uncancel()
            outcome, error = self._cancel_reasons[run.id], None
        except EventLogError as exc:
            outcome, error = ("lost", None) if run.id in self._cancel_reasons else ("failed", exc)
        except Exception as exc:
            outcome, error = "failed", exc
        else:
            outcome, error = "completed", None
        finally:
            self._producing.discard(run.id)
        await self._end(state, outcome, error)

    async def _end(self, state: RunState, outcome: str, error: BaseException | None) -> None:
        run = state.run
        try:
            if outcome == "completed":
                await self.lifecycle.complete(state)
                self._after_run(state)
            elif outcome == "failed":
                await self.lifecycle.fail(state, error or RuntimeError("unknown failure"))
            elif outcome == "lost":
                log.warning("lease_lost", run_id=run.id, attempt=run.attempt)
                self.log.forget(run.id)
            else:
                await self.lifecycle.cancelled(state, outcome)
        except StaleAttempt:
            log.warning("stale_attempt", run_id=run.id, attempt=run.attempt)
            self.log.forget(run.id)
        except EventLogError as exc:
            log.error("terminal_event_not_written", run_id=run.id, error=str(exc))
            self.log.forget(run.id)

    def _after_run(self, state: RunState) -> None:
        """Calibrate token estimates, and schedule the thread's memory work (never blocks)."""
        context, assistant, route = self.agent.context, state.assistant, state.route
        if assistant is None or route is None:
            return
        if state.usage_reported and not state.fallbacks and not state.tool_calls:
            context.observe(route.primary, state.message_data.get("context", {}), state.input_tokens)
        context.after_run(state.run, assistant, route.primary)

    # -- what tests and health checks read -----------------------------------------------

    @property
    def running(self) -> int:
        return len(self._tasks)


def _started(run: Run, model: str) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "thread_id": run.thread_id,
        "assistant": run.assistant,
        "model": model,
        "variant": run.variant,
        "attempt": run.attempt,
    }
