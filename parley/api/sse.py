"""Run event streams over SSE.

Framing comes from sse-starlette (``ServerSentEvent.encode``). The response itself is a
lean one: the frames are sent from the request's own task, with a single watcher task for
the client's disconnect, and idle pings come from the follow loop. sse-starlette's
``EventSourceResponse`` runs a task group of three to four tasks per stream; with 1,000
idle streams that was 48 KiB per connection against 38 KiB here (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from typing import Any

from sse_starlette import ServerSentEvent
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from parley.errors import ApiError
from parley.events import KEEPALIVE, EventLog, RunEvent
from parley.metrics import Metrics

Translate = Callable[[RunEvent], Iterable[ServerSentEvent]]


#: OpenAPI for a route answering with an ``EventStream``: each event has ``event``, ``data`` (JSON
#: text) and ``id`` (the cursor to resume after it).
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}
SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        "description": "Server-sent events.",
    }
}


class EventStream(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        *,
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> None:
        super().__init__(
            frames,
            status_code,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", **(headers or {})},
            media_type=self.media_type,
        )
        self.frames = frames

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            await self.frames.aclose()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            task.cancel()

        watcher = asyncio.create_task(watch())
        try:
            async for frame in self.frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()
            return
        finally:
            watcher.cancel()
            await self.frames.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def native(event: RunEvent) -> Iterable[ServerSentEvent]:
    yield ServerSentEvent(data=event.data, event=event.type, id=str(event.seq))


def parse_cursor(last_event_id: str | None, after: int | None) -> int:
    """The resume point: ``Last-Event-ID`` wins over ``?after=``."""
    if last_event_id is not None and last_event_id.strip():
        value = last_event_id.strip()
        if not (value.isascii() and value.isdigit()):  # "²".isdigit(), but int("²") fails
            raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be a non-negative event seq")
        return int(value)
    return after or 0


async def check_cursor(log: EventLog, run_id: str, after: int) -> None:
    last = await log.last_seq(run_id)
    if after > last:
        raise ApiError(400, "invalid_cursor", f"cannot resume after event {after}: the run has {last} events")


def stream_run(
    log: EventLog,
    metrics: Metrics,
    run_id: str,
    after: int,
    *,
    ping: float,
    translate: Translate = native,
    headers: dict[str, str] | None = None,
) -> EventStream:
    async def frames() -> AsyncGenerator[bytes, None]:
        metrics.sse_streams.inc()
        try:
            async for batch in log.follow_with_heartbeats(run_id, after, every=ping):
                if not batch:
                    yield KEEPALIVE
                    continue
                # The events read together go out in one write (a run's start and its first
                # text, say): each send costs a pass through the middlewares and a syscall.
                if body := b"".join(frame.encode() for event in batch for frame in translate(event)):
                    yield body
        finally:
            metrics.sse_streams.dec()

    return EventStream(frames(), headers=headers)
