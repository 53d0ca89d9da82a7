"""Seed 003's API (the experimentation platform), as its README and client use it.

``POST /chat`` ``{"message", "conversation_id"?}`` streams the answer over SSE as unnamed
``data:`` frames — ``{"token"}`` per piece of text, then ``{"done": true, "message_id",
"conversation_id", "variant", "model", "tokens_in", "tokens_out", "latency_ms", "cost"}``,
or ``{"error"}`` — with the caller's experiment variant of the ``general`` assistant.
``POST /feedback`` ``{"message_id", "rating", "comment"?}``; ``GET /feedback/stats``.
Authentication (``x-api-key``) is the server's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter
from pydantic import Field, StrictInt, field_validator
from sse_starlette import ServerSentEvent

from parley import events as ev
from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.schemas import Body
from parley.api.sse import SSE_RESPONSES, EventStream, stream_run
from parley.errors import ApiError
from parley.events import RunEvent
from parley.experiments import variants_of
from parley.feedback import rate, stats_by_variant
from parley.runs.lifecycle import NewRun
from parley.store.schema import Run
from parley.threads import create_thread, get_thread

router = APIRouter(tags=["compat: promptlab (seed 003)"])

ASSISTANT = "general"


class ChatIn(Body):
    message: str = Field(min_length=1, max_length=10_000)
    conversation_id: str | None = Field(default=None, max_length=40)


class FeedbackIn(Body):
    message_id: str = Field(min_length=1, max_length=40)
    rating: StrictInt = Field(json_schema_extra={"enum": [1, -1]})
    comment: str | None = Field(default=None, max_length=1000)

    @field_validator("rating")
    @classmethod
    def _thumb(cls, value: int) -> int:
        if value not in (1, -1):
            raise ValueError("rating must be 1 or -1")
        return value


class _Frames:
    """Run events → the seed's frames (stateful: the model is announced by ``run.started``)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.model = run.model

    def __call__(self, event: RunEvent) -> Iterable[ServerSentEvent]:
        seq = str(event.seq)
        if event.type == ev.MESSAGE_DELTA:
            yield ServerSentEvent(data=json.dumps({"token": event.payload()["text"]}), id=seq)
        elif event.type == ev.RUN_STARTED:
            self.model = event.payload().get("model")
        elif event.type == ev.RUN_COMPLETED:
            data = event.payload()
            usage = data.get("usage") or {}
            done = {
                "done": True,
                "message_id": data["message_id"],
                "conversation_id": self.run.thread_id,
                "variant": self.run.variant,
                "model": self.model,
                "tokens_in": usage.get("input_tokens"),
                "tokens_out": usage.get("output_tokens"),
                "latency_ms": usage.get("latency_ms"),
                "cost": usage.get("cost_usd"),
            }
            yield ServerSentEvent(data=json.dumps(done), id=seq)
        elif event.type == ev.RUN_FAILED:
            message = event.payload().get("error", {}).get("message", "the model failed to answer")
            yield ServerSentEvent(data=json.dumps({"error": message}), id=seq)
        elif event.type == ev.RUN_CANCELLED:
            yield ServerSentEvent(data=json.dumps({"error": "the answer was cancelled"}), id=seq)


@router.post("/chat", response_class=EventStream, responses=SSE_RESPONSES)
async def chat(body: ChatIn, parley: ParleyDep, principal: PrincipalDep) -> EventStream:
    if len(body.message) > parley.settings.max_input_chars:
        raise ApiError(
            413, "input_too_large", f"message is longer than {parley.settings.max_input_chars} characters"
        )
    if body.conversation_id is not None:
        async with parley.db.session() as session:
            thread_id = (await get_thread(session, principal, body.conversation_id)).id
    else:
        thread_id = (await create_thread(parley.db, principal, ASSISTANT)).id
    run, _ = await parley.runs.create(principal, NewRun(thread_id, body.message, multitask="enqueue"))
    return stream_run(
        parley.log,
        parley.metrics,
        run.id,
        0,
        ping=parley.settings.sse_ping_seconds,
        translate=_Frames(run),
        headers={"X-Run-Id": run.id},
    )


@router.post("/feedback")
async def feedback(body: FeedbackIn, parley: ParleyDep, principal: PrincipalDep) -> dict[str, str]:
    _, created = await rate(parley.db, principal, body.message_id, body.rating, body.comment)
    return {"status": "success", "message": "Feedback recorded" if created else "Feedback updated"}


@router.get("/feedback/stats")
async def feedback_stats(parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    """Ratings per variant of the caller's answers (an administrator's: everyone's); every variant
    of a running experiment is listed, rated or not."""
    rows = await stats_by_variant(parley.db, principal)
    seen = {(row["experiment"], row["variant"]) for row in rows}
    for experiment in await parley.experiments.list():
        if experiment.status == "running":
            for variant in variants_of(experiment):
                if (experiment.key, variant.name) not in seen:
                    rows.append(
                        {
                            "experiment": experiment.key,
                            "variant": variant.name,
                            "rated": 0,
                            "up": 0,
                            "down": 0,
                        }
                    )
    rows.sort(key=lambda row: (row["experiment"], row["variant"]))
    return {
        "stats": [
            {
                "experiment": row["experiment"],
                "variant": row["variant"],
                "total_feedback": row["rated"],
                "thumbs_up": row["up"],
                "thumbs_down": row["down"],
                "approval_rate": round(100 * row["up"] / row["rated"], 2) if row["rated"] else 0,
            }
            for row in rows
        ]
    }
