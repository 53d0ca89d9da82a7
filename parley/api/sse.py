"""Run event streams over SSE (sse-starlette does the framing and the idle pings)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable

from sse_starlette import EventSourceResponse, ServerSentEvent

from parley.errors import ApiError
from parley.events import EventLog, RunEvent
from parley.metrics import Metrics

Translate = Callable[[RunEvent], Iterable[ServerSentEvent]]


def native(event: RunEvent) -> Iterable[ServerSentEvent]:
    yield ServerSentEvent(data=event.data, event=event.type, id=str(event.seq))


def parse_cursor(last_event_id: str | None, after: int | None) -> int:
    """The resume point: ``Last-Event-ID`` wins over ``?after=``."""
    if last_event_id is not None and last_event_id.strip():
        value = last_event_id.strip()
        if not value.isdigit():
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
) -> EventSourceResponse:
    async def frames() -> AsyncIterator[ServerSentEvent]:
        metrics.sse_streams.inc()
        try:
            async for event in log.follow(run_id, after):
                for frame in translate(event):
                    yield frame
        finally:
            metrics.sse_streams.dec()

    return EventSourceResponse(
        frames(),
        ping=int(max(1, ping)),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", **(headers or {})},
    )
