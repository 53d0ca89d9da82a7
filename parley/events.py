"""The run event log: appends with group commit, replay, and live follow.

Writers append events to a pending batch; one flusher task commits whatever has
accumulated in a single transaction (the batch grows while the previous commit runs,
so it adapts to load with no fixed delay), and only then publishes a wake-up. A
reader therefore only ever sees committed events: an event a client received is durable.

Per run there is a single writer (the worker task that holds the run's lease), so ``seq`` is
assigned in memory. On PostgreSQL, where several processes share the log, each commit is
fenced by the writer's attempt: a row is inserted only while its run is still ``running`` in
that attempt (the run's row is share-locked until the commit, so the reaper cannot end it in
between), and the events of a writer that lost its lease are neither stored nor shown; the
writer is told (``on_fenced``) and stops. SQLite serves one process, where the lease holder
is the only writer.

Text deltas coalesce: ``append_text`` adds to the run's last event when that event is a
``message.delta`` still waiting for its commit. A run that produces faster than events
commit (a zero-delay provider) therefore writes one delta per commit instead of one per
token, the text and the seqs staying exactly what a reader would have assembled; a run
that produces slower than commits (any real model) still gets one event per token.

Commits of continuing text are spaced: when a batch holds nothing but more text of replies
already being shown, the flusher waits until ``TEXT_COMMIT_INTERVAL`` after its last commit
(at most) before committing it. Anything else (a run's first text, any other event, a writer
waiting in ``flush``) commits at once. One stream sees tokens within that interval; a hundred
streams share one commit where they would each have had theirs (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple, Protocol

import orjson
import structlog
from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.bus import Bus
from parley.bus.postgres import CHANNEL
from parley.store.db import Database
from parley.store.schema import Base, Event, Run

log = structlog.get_logger(__name__)

RUN_STARTED = "run.started"
MESSAGE_DELTA = "message.delta"
TOOL_CALL = "tool.call"
TOOL_RESULT = "tool.result"
TOOL_REJECTED = "tool.rejected"
RETRIEVAL = "retrieval"
PROVIDER_FALLBACK = "provider.fallback"
RUN_COMPLETED = "run.completed"
RUN_FAILED = "run.failed"
RUN_CANCELLED = "run.cancelled"

TERMINAL_TYPES = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED})
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "interrupted"})

#: What an SSE stream sends for ``follow_with_heartbeats``' empty batch: a comment line with
#: no blank line after it. The blank line would end an event, and the OpenAI SDK's and
#: httpx-sse's decoders (unlike the SSE spec) hand an event with empty data to the reader when
#: an earlier frame set an ``id``: the SDK then failed parsing it as JSON mid-answer.
KEEPALIVE = b": ping\n"

# How long a finished run's events stay in memory for late readers.
_TAIL_LINGER_SECONDS = 60.0
_READ_PAGE = 1000
# A coalesced delta is closed at this size, so a resumed reader's page stays bounded.
_MAX_DELTA_CHARS = 8192
_MAX_AHEAD = 64
#: The most a continuing text delta waits for the commit after the previous one.
TEXT_COMMIT_INTERVAL = 0.005
_RECHECK_SECONDS = 5.0


class RunEvent(NamedTuple):
    """One event; a tuple, so a batch goes to the driver's executemany as is."""

    run_id: str
    seq: int
    type: str
    data: str  # JSON text: encoded once, stored and streamed as is
    created_at: float

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value


def encode(data: dict[str, Any]) -> str:
    return orjson.dumps(data, default=str).decode()


class EventLogError(RuntimeError):
    pass


class EventSink(Protocol):
    """What the agent writes a run's events through (``EventLog``)."""

    def append(self, run_id: str, type_: str, data: dict[str, Any]) -> RunEvent: ...

    def append_text(self, run_id: str, text: str) -> None: ...

    async def pace(self, run_id: str) -> None: ...

    async def flush(self) -> None: ...


# PostgreSQL: the group commit as one statement over arrays, fenced by each writer's attempt
# (-1: not fenced), returning what it inserted.
_FENCED_INSERT = """
INSERT INTO run_events (run_id, seq, type, data, created_at)
SELECT e.run_id, e.seq, e.type, e.data, e.created_at
FROM unnest($1::varchar[], $2::int[], $3::varchar[], $4::text[], $5::float8[], $6::int[])
    AS e(run_id, seq, type, data, created_at, attempt)
WHERE e.attempt < 0 OR EXISTS (
    SELECT 1 FROM runs AS r
    WHERE r.id = e.run_id AND r.attempt = e.attempt AND r.status = 'running'
    FOR SHARE
)
RETURNING run_id, seq
"""

# The same, and the wake-up of the other processes' readers sent by the commit itself
# (``Bus.commit_notice``): a NOTIFY is delivered when its transaction commits.
_FENCED_INSERT_NOTIFY = f"""
WITH kept AS ({_FENCED_INSERT}), notice AS (SELECT pg_notify('{CHANNEL}', $7))
SELECT kept.run_id, kept.seq FROM kept, notice
"""

_events = Base.metadata.tables[Event.__tablename__]
_LAST_SEQ = select(func.max(_events.c.seq)).where(_events.c.run_id == bindparam("run_id"))
_INSERT_EVENT = insert(_events)
_READ = (
    select(_events.c.run_id, _events.c.seq, _events.c.type, _events.c.data, _events.c.created_at)
    .where(_events.c.run_id == bindparam("run_id"), _events.c.seq > bindparam("after"))
    .order_by(_events.c.seq)
    .limit(bindparam("limit"))
)


class EventLog:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        *,
        on_commit: Callable[[int], None] | None = None,
        on_fenced: Callable[[str], None] | None = None,
    ) -> None:
        self._db = db
        self._bus = bus
        self._on_commit = on_commit
        #: Told of a run whose writer lost its lease: its events were not stored.
        self.on_fenced = on_fenced
        self._next_seq: dict[str, int] = {}
        #: The attempt each run is written for (PostgreSQL fences commits by it).
        self._attempts: dict[str, int] = {}
        self._pending: list[RunEvent] = []
        # Runs with an urgent event pending (a start, a reply's first text...): their readers
        # are woken first after the commit, ahead of runs that only continue their text.
        self._urgent_runs: dict[str, None] = {}
        # Runs whose last pending event is a message.delta still open to more text.
        self._open_text: dict[str, _OpenText] = {}
        # Runs whose last event is text: their next delta continues a reply already shown.
        self._speaking: set[str] = set()
        self._pending_done: asyncio.Future[None] | None = None
        self._inflight_done: asyncio.Future[None] | None = None
        # Committed events of runs written here: seqs start..start+len-1, for fast reads.
        self._tail: dict[str, _Tail] = {}
        self._finished: dict[str, float] = {}
        self._wake = asyncio.Event()
        # Set when a pending event must not wait out the text commit interval.
        self._hurry = asyncio.Event()
        self._last_commit = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        # The group commit hands ``RunEvent`` tuples to the driver as they are: in column order.
        insert_event = db.compiled(_INSERT_EVENT, column_keys=RunEvent._fields)
        if insert_event.names != list(RunEvent._fields):
            raise EventLogError(f"RunEvent's fields do not match the insert's columns: {insert_event.names}")
        self._insert_sql = insert_event.sql

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="parley-event-flusher")

    async def stop(self) -> None:
        self._closing = True
        self._wake.set()
        if self._flusher is not None:
            await self._flusher

    # -- writing ---------------------------------------------------------------

    async def open(self, run_id: str, attempt: int = -1) -> int:
        """Become the writer of a run's ``attempt``; returns the last committed seq (0 for a new run)."""
        async with self._db.session() as session:
            last = await session.scalar(_LAST_SEQ, {"run_id": run_id})
        self.open_new(run_id, last or 0, attempt)
        return last or 0

    def open_new(self, run_id: str, last: int = 0, attempt: int = -1) -> None:
        """Become the writer of a run whose last committed seq is known (0: a new run)."""
        self._next_seq[run_id] = last + 1
        self._attempts[run_id] = attempt
        self._tail[run_id] = _Tail(run_id, last + 1)
        self._finished.pop(run_id, None)

    def append(self, run_id: str, type_: str, data: dict[str, Any]) -> RunEvent:
        """Queue an event for the next group commit. Durable once ``flush`` returns."""
        if self._closing:
            raise EventLogError("the event log is shutting down")
        seq = self._next_seq.get(run_id)
        if seq is None:
            raise EventLogError(f"this process does not write run {run_id} (any more)")
        self._next_seq[run_id] = seq + 1
        event = RunEvent(run_id, seq, type_, encode(data), time.time())
        self._close_text(run_id)
        self._speaking.discard(run_id)
        self._queue(event, urgent=True)
        return event

    def append_text(self, run_id: str, text: str) -> None:
        """Queue a ``message.delta``, merged into the run's pending one if there is one."""
        if self._closing:
            raise EventLogError("the event log is shutting down")
        open_ = self._open_text.get(run_id)
        if open_ is not None and open_.size + len(text) <= _MAX_DELTA_CHARS:
            open_.pieces.append(text)
            open_.size += len(text)
            return
        seq = self._next_seq.get(run_id)
        if seq is None:
            raise EventLogError(f"this process does not write run {run_id} (any more)")
        self._next_seq[run_id] = seq + 1
        opens = run_id not in self._speaking
        self._open_text[run_id] = _OpenText(len(self._pending), text, opens=opens)
        self._speaking.add(run_id)
        self._queue(RunEvent(run_id, seq, MESSAGE_DELTA, "", time.time()), urgent=opens)

    def _queue(self, event: RunEvent, *, urgent: bool) -> None:
        self._pending.append(event)
        if self._pending_done is None:
            self._pending_done = asyncio.get_running_loop().create_future()
        if urgent:
            self._urgent_runs[event.run_id] = None
            self._hurry.set()
        self._wake.set()

    def _close_text(self, run_id: str) -> None:
        """Encode the run's open delta: text from now on goes into a new event."""
        open_ = self._open_text.pop(run_id, None)
        if open_ is not None:
            event = self._pending[open_.index]
            self._pending[open_.index] = event._replace(data=encode({"text": "".join(open_.pieces)}))

    def _take_pending(self) -> tuple[list[RunEvent], dict[str, None]]:
        """The pending batch, its coalesced deltas encoded; its runs, urgent ones first."""
        for run_id in list(self._open_text):
            self._close_text(run_id)
        batch, self._pending = self._pending, []
        runs, self._urgent_runs = self._urgent_runs, {}
        for event in batch:
            runs[event.run_id] = None
        return batch, runs

    async def pace(self, run_id: str) -> None:
        """After a text delta. The first text of a reply (or after a tool call) is committed
        at once, and the run waits for that commit: its readers, woken by the commit, send it
        before the run goes on producing. Later text waits in the open event until the
        provider yields (a real model, between tokens) or ``_MAX_AHEAD`` deltas are queued:
        then wait for the commit. A provider that never waits would otherwise hold the event
        loop for its whole answer, or spend it committing one event per token."""
        open_ = self._open_text.get(run_id)
        if open_ is None:
            return
        if (open_.opens and len(open_.pieces) == 1) or len(open_.pieces) >= _MAX_AHEAD:
            await self.flush()

    async def flush(self) -> None:
        """Wait until every event appended so far is committed (raises if a commit failed)."""
        if self._pending:
            self._hurry.set()
        for future in (self._inflight_done, self._pending_done):
            if future is not None:
                await asyncio.shield(future)

    async def append_terminal(
        self,
        run_id: str,
        type_: str,
        data: dict[str, Any],
        with_event: Callable[[AsyncSession], Awaitable[None]],
    ) -> RunEvent:
        """Commit the terminal event and the run's final state in one transaction.

        ``with_event`` writes the final state, first, and raises to refuse (e.g. the run is no
        longer in the state the caller expected): nothing is written then. Also usable by a
        process that is not the run's writer (cancel of a queued run, recovery): the seq is
        taken from the log inside the transaction, after ``with_event``, whose update of the
        run's row makes a second terminal writer of the run wait on PostgreSQL (SQLite has one
        writer at a time) and then find the run already ended, instead of taking the same seq.
        """
        if run_id in self._next_seq:
            await self.flush()
        async with self._db.transaction() as session:
            await with_event(session)
            conn = await session.connection()
            last = (await conn.execute(_LAST_SEQ, {"run_id": run_id})).scalar()
            event = RunEvent(run_id, (last or 0) + 1, type_, encode(data), time.time())
            await conn.execute(_INSERT_EVENT, _row(event))
        self._next_seq.pop(run_id, None)
        self._attempts.pop(run_id, None)
        self._speaking.discard(run_id)
        self._published([event])
        self._finished.pop(run_id, None)  # to the end: ``_evict`` reads them oldest first
        self._finished[run_id] = time.monotonic()
        await self._bus.publish(run_id)
        return event

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._space_text_commits()
                batch, runs = self._take_pending()
                done, self._pending_done = self._pending_done, None
                self._inflight_done = done
                try:
                    await self._commit(batch, runs)
                except Exception as exc:
                    log.error("event_commit_failed", events=len(batch), error=str(exc))
                    if done is not None and not done.done():
                        done.set_exception(EventLogError(f"could not commit events: {exc}"))
                        done.exception()  # mark retrieved; writers see it through flush()
                else:
                    if done is not None and not done.done():
                        done.set_result(None)
                finally:
                    self._inflight_done = None
            self._evict()
            if self._closing and not self._pending:
                return

    async def _space_text_commits(self) -> None:
        """Wait out the text commit interval, unless something pending is in a hurry."""
        wait = self._last_commit + TEXT_COMMIT_INTERVAL - time.monotonic()
        if wait > 0 and not self._hurry.is_set() and not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._hurry.wait()
        self._hurry.clear()
        self._last_commit = time.monotonic()

    async def _commit(self, batch: list[RunEvent], runs: dict[str, None]) -> None:
        notice = None
        if self._db.is_sqlite:
            async with self._db.writer(urgent=True):
                await self._db.insert_many(self._insert_sql, batch)
        else:
            notice = self._bus.commit_notice(runs)
            batch = await self._commit_fenced(batch, runs, notice)
        self._published(batch)
        # Readers run in the order they are woken: a new stream's first text goes out before
        # the next token of a hundred streams already under way.
        for run_id in runs:
            if notice is None:
                await self._bus.publish(run_id)
            else:
                await self._bus.wake_here(run_id)

    async def _commit_fenced(
        self, batch: list[RunEvent], runs: dict[str, None], notice: str | None
    ) -> list[RunEvent]:
        attempts = self._attempts
        arrays = (
            [e.run_id for e in batch],
            [e.seq for e in batch],
            [e.type for e in batch],
            [e.data for e in batch],
            [e.created_at for e in batch],
            [attempts.get(e.run_id, -1) for e in batch],
        )
        if notice is None:
            inserted = await self._db.fetch_kept(_FENCED_INSERT, *arrays)
        else:
            inserted = await self._db.fetch_kept(_FENCED_INSERT_NOTIFY, *arrays, notice)
        if len(inserted) == len(batch):
            return batch
        stored = {(run_id, seq) for run_id, seq in inserted}
        kept = [e for e in batch if (e.run_id, e.seq) in stored]
        for run_id in {e.run_id for e in batch if (e.run_id, e.seq) not in stored}:
            log.warning("events_fenced", run_id=run_id, attempt=attempts.get(run_id))
            runs.pop(run_id, None)
            self.forget(run_id)
            if self.on_fenced is not None:
                self.on_fenced(run_id)
        return kept

    def _published(self, events: list[RunEvent]) -> None:
        for event in events:
            tail = self._tail.get(event.run_id)
            if tail is not None and tail.start + len(tail) == event.seq:
                tail.append(event)
        if self._on_commit is not None:
            self._on_commit(len(events))

    def _evict(self) -> None:
        # In the order the runs finished (a dict keeps insertion order): only the oldest are looked at.
        cutoff = time.monotonic() - _TAIL_LINGER_SECONDS
        while self._finished:
            run_id, at = next(iter(self._finished.items()))
            if at >= cutoff:
                return
            del self._finished[run_id]
            self._tail.pop(run_id, None)

    def forget(self, run_id: str) -> None:
        """Drop a run's writer state (its task ended without a terminal event here)."""
        self._next_seq.pop(run_id, None)
        self._attempts.pop(run_id, None)
        self._speaking.discard(run_id)
        self._tail.pop(run_id, None)

    # -- reading ---------------------------------------------------------------

    async def read(self, run_id: str, after: int, limit: int = _READ_PAGE) -> list[RunEvent]:
        tail = self._tail.get(run_id)
        if tail is not None and tail.start <= after + 1:
            return tail.slice(after + 1 - tail.start, limit)
        # Straight through the driver: a reader in another process than the writer reads every
        # event it sends from here, on the path to the first token.
        async with self._db.read() as db:
            rows = await db.rows(_READ, {"run_id": run_id, "after": after, "limit": limit})
        return [RunEvent(*row) for row in rows]

    async def last_seq(self, run_id: str) -> int:
        tail = self._tail.get(run_id)
        if tail is not None:
            return tail.start + len(tail) - 1
        async with self._db.session() as session:
            value = await session.scalar(_LAST_SEQ, {"run_id": run_id})
        return value or 0

    async def _is_finished(self, run_id: str) -> bool:
        if run_id in self._finished:
            return True
        if run_id in self._next_seq:
            return False
        async with self._db.session() as session:
            status = await session.scalar(select(Run.status).where(Run.id == run_id))
        return status is None or status in TERMINAL_STATUSES

    async def follow(self, run_id: str, after: int = 0) -> AsyncIterator[RunEvent]:
        """Replay the log after ``after``, then follow live events; ends after the terminal event."""
        async for batch in self.follow_with_heartbeats(run_id, after, every=_RECHECK_SECONDS):
            for event in batch:
                yield event

    async def follow_with_heartbeats(
        self, run_id: str, after: int = 0, *, every: float
    ) -> AsyncIterator[list[RunEvent]]:
        """Like ``follow``, but the events come in the batches they were read in (a reader
        that sends them can send a batch at once), and an empty batch comes after each
        ``every`` seconds without an event."""
        async with self._bus.subscribe(run_id) as subscription:
            cursor = after
            # Whether the run may have ended without a wake-up here: at first, and after a
            # wait that timed out. A woken reader needs no look: an ended run's terminal event
            # is in the log (it commits with the final status), so the read finds it.
            look = True
            while True:
                events = await self.read(run_id, cursor)
                if events:
                    for i, event in enumerate(events):
                        if event.terminal:
                            yield events[: i + 1]
                            return
                    yield events
                    cursor = events[-1].seq
                    if len(events) == _READ_PAGE:
                        continue  # more may be there already
                    # Subscribed before the read: what committed since has woken the subscription.
                elif look and await self._is_finished(run_id):
                    # Terminal event and final status commit together: one last read is enough.
                    if last := await self.read(run_id, cursor):
                        yield last
                    return
                # A timeout also guards against a lost wake-up from a remote bus.
                look = not await subscription.wait(every)
                if look:
                    yield []


class _OpenText:
    __slots__ = ("index", "opens", "pieces", "size")

    def __init__(self, index: int, text: str, *, opens: bool) -> None:
        self.index = index
        #: The first text since the run's last other event (the start of a reply).
        self.opens = opens
        self.pieces = [text]
        self.size = len(text)


class _Tail:
    """A run's committed events from seq ``start`` on, kept for fast reads: as columns of strings
    and floats, not ``RunEvent`` tuples. The cyclic GC tracks every instance of a tuple subclass
    for good, and never a str or a float: at 100 live streams the tails were ~110,000 of the
    server's ~130,000 tracked objects (12,000 without them), all of which a full collection scans."""

    __slots__ = ("created", "data", "run_id", "start", "types")

    def __init__(self, run_id: str, start: int) -> None:
        self.run_id = run_id
        self.start = start
        self.types: list[str] = []
        self.data: list[str] = []
        self.created: list[float] = []

    def __len__(self) -> int:
        return len(self.types)

    def append(self, event: RunEvent) -> None:
        self.types.append(event.type)
        self.data.append(event.data)
        self.created.append(event.created_at)

    def slice(self, index: int, limit: int) -> list[RunEvent]:
        end = min(index + limit, len(self.types))
        return [
            RunEvent(self.run_id, self.start + i, self.types[i], self.data[i], self.created[i])
            for i in range(index, end)
        ]


def _row(event: RunEvent) -> dict[str, Any]:
    return {
        "run_id": event.run_id,
        "seq": event.seq,
        "type": event.type,
        "data": event.data,
        "created_at": event.created_at,
    }
