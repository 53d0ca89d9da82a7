"""Seed 002's API (run-based chat over SSE), as documented in its README.

``POST /api/users`` → ``{"user_id", "name"}``; ``POST /api/threads`` → ``{"thread_id"}``;
``POST /api/threads/{id}/messages`` → ``{"run_id"}``; ``GET /api/runs/{id}``;
``GET /api/runs/{id}/events`` (SSE, ``Last-Event-ID``) with the seed's event names
``token``, ``final``, ``done``, ``error``, ``cancelled``; ``POST /api/runs/{id}/cancel``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterable
from typing import Any

from fastapi import APIRouter, Header
from pydantic import Field
from sqlalchemy import select
from sse_starlette import ServerSentEvent

from parley import events as ev
from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.schemas import Body, iso
from parley.api.sse import SSE_RESPONSES, EventStream, check_cursor, parse_cursor, stream_run
from parley.errors import ApiError, not_found
from parley.events import TERMINAL_STATUSES, RunEvent
from parley.ratelimit import rate_class
from parley.runs.lifecycle import NewRun
from parley.store.schema import Run, User
from parley.threads import create_thread
from parley.users import create_user

router = APIRouter(prefix="/api", tags=["compat: chatbot-sse (seed 002)"])

_STATUS = {"completed": "done", "failed": "error"}


class UserIn(Body):
    name: str = Field(min_length=1, max_length=200)


class ThreadIn(Body):
    user_id: int = Field(ge=1, le=2**31 - 1)  # a database integer id


class MessageIn(Body):
    content: str = Field(min_length=1)


def _run(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "thread_id": run.thread_id,
        "status": _STATUS.get(run.status, run.status),
        "output": run.output,
        "error": run.error,
        "usage": run.usage,
        "created_at": iso(run.created_at),
        "finished_at": iso(run.finished_at),
    }


def _translate(event: RunEvent) -> Iterable[ServerSentEvent]:
    seq = str(event.seq)
    if event.type == ev.MESSAGE_DELTA:
        yield ServerSentEvent(data=json.dumps({"token": event.payload()["text"]}), event="token", id=seq)
    elif event.type == ev.RUN_COMPLETED:
        data = event.payload()
        final = {"text": data["text"], "sources": data.get("sources", []), "usage": data.get("usage")}
        yield ServerSentEvent(data=json.dumps(final), event="final", id=seq)
        yield ServerSentEvent(data="{}", event="done")
    elif event.type == ev.RUN_FAILED:
        yield ServerSentEvent(data=json.dumps(event.payload()), event="error", id=seq)
        yield ServerSentEvent(data="{}", event="done")
    elif event.type == ev.RUN_CANCELLED:
        yield ServerSentEvent(data="{}", event="cancelled", id=seq)
        yield ServerSentEvent(data="{}", event="done")
    else:
        yield ServerSentEvent(data=event.data, event=event.type, id=seq)


async def _done_only() -> AsyncGenerator[bytes, None]:
    yield ServerSentEvent(data="{}", event="done").encode()


@router.post("/users")
async def create_user_(body: UserIn, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    if not principal.is_admin:
        return {"user_id": principal.user_id, "name": principal.name}
    user = await create_user(parley.db, body.name)
    return {"user_id": user.user_id, "name": user.name}


@router.post("/threads")
async def create_thread_(body: ThreadIn, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    if body.user_id != principal.user_id and not principal.is_admin:
        raise not_found("user", body.user_id)
    async with parley.db.session() as session:
        if await session.scalar(select(User.id).where(User.id == body.user_id)) is None:
            raise not_found("user", body.user_id)
    thread = await create_thread(
        parley.db,
        principal,
        "recruiter" if "recruiter" in parley.assistants else "general",
        user_id=body.user_id,
    )
    return {"thread_id": thread.id, "user_id": thread.user_id}


@router.post("/threads/{thread_id}/messages")
@rate_class("runs")
async def post_message(
    thread_id: str, body: MessageIn, parley: ParleyDep, principal: PrincipalDep
) -> dict[str, Any]:
    if len(body.content) > parley.settings.max_input_chars:
        raise ApiError(
            413, "input_too_large", f"content is longer than {parley.settings.max_input_chars} characters"
        )
    run, _ = await parley.runs.create(principal, NewRun(thread_id, body.content, multitask="enqueue"))
    return {"run_id": run.id, "thread_id": thread_id, "status": _STATUS.get(run.status, run.status)}


@router.get("/runs/{run_id}")
async def get_run(run_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    return _run(await parley.runs.get(principal, run_id))


@router.get("/runs/{run_id}/events", response_class=EventStream, responses=SSE_RESPONSES)
async def run_events(
    run_id: str,
    parley: ParleyDep,
    principal: PrincipalDep,
    last_event_id: str | None = Header(None, max_length=20, json_schema_extra={"pattern": r"^\s*[0-9]*\s*$"}),
) -> EventStream:
    run = await parley.runs.get(principal, run_id)
    cursor = parse_cursor(last_event_id, None)
    if run.status in TERMINAL_STATUSES and cursor >= await parley.log.last_seq(run_id):
        # The README's "resume from event 10" on a run that ended sooner: nothing is left to
        # replay, so the stream just closes (with the seed's closing ``done``).
        return EventStream(_done_only())
    await check_cursor(parley.log, run_id, cursor)
    return stream_run(
        parley.log,
        parley.metrics,
        run_id,
        cursor,
        ping=parley.settings.sse_ping_seconds,
        translate=_translate,
    )


@router.post("/runs/{run_id}/cancel")
async def cancel_run(run_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    return _run(await parley.runs.cancel(principal, run_id))
