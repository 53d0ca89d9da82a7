"""Runs and their event streams: ``/v1/threads/{id}/runs``, ``/v1/runs/{id}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.schemas import RunCreate, run_json
from parley.api.sse import (
    SSE_EVENT_SCHEMA,
    SSE_RESPONSES,
    EventStream,
    check_cursor,
    parse_cursor,
    stream_run,
)
from parley.errors import ApiError, documented_error
from parley.ratelimit import rate_class
from parley.runs.lifecycle import NewRun

router = APIRouter(tags=["runs"])


@router.post(
    "/v1/threads/{thread_id}/runs",
    status_code=201,
    responses={
        200: {
            "description": "An Idempotency-Key replay (the first run), or the run's SSE stream with stream=true.",
            "content": {"application/json": {}, "text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        },
        409: documented_error("The thread has an active run (multitask=reject)."),
    },
)
@rate_class("runs")
async def create(
    thread_id: str,
    body: RunCreate,
    parley: ParleyDep,
    principal: PrincipalDep,
    idempotency_key: str | None = Header(None, max_length=200),
) -> Any:
    if len(body.input) > parley.settings.max_input_chars:
        raise ApiError(
            413,
            "input_too_large",
            f"input is {len(body.input)} characters; the limit is {parley.settings.max_input_chars}",
        )
    run, created = await parley.runs.create(
        principal,
        NewRun(
            thread_id,
            body.input,
            multitask=body.multitask,
            idempotency_key=idempotency_key,
            options={"metadata": body.metadata} if body.metadata else {},
        ),
    )
    if created and body.metadata:
        await parley.files.attach_listed(run.user_id, run.thread_id, body.metadata.get("files"))
    headers = {"Location": f"/v1/runs/{run.id}", "X-Run-Id": run.id}
    if body.stream:
        return stream_run(
            parley.log, parley.metrics, run.id, 0, ping=parley.settings.sse_ping_seconds, headers=headers
        )
    return JSONResponse(run_json(run), status_code=201 if created else 200, headers=headers)


@router.get("/v1/runs/{run_id}")
async def read(run_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    return run_json(await parley.runs.get(principal, run_id))


@router.get(
    "/v1/runs/{run_id}/events",
    response_class=EventStream,
    responses=SSE_RESPONSES,
)
async def events(
    run_id: str,
    parley: ParleyDep,
    principal: PrincipalDep,
    after: int | None = Query(None, ge=0, description="Resume after this event seq."),
    last_event_id: str | None = Header(None, max_length=20, json_schema_extra={"pattern": r"^\s*[0-9]*\s*$"}),
) -> EventStream:
    await parley.runs.get(principal, run_id)
    cursor = parse_cursor(last_event_id, after)
    await check_cursor(parley.log, run_id, cursor)
    return stream_run(parley.log, parley.metrics, run_id, cursor, ping=parley.settings.sse_ping_seconds)


@router.post("/v1/runs/{run_id}/cancel")
async def cancel(run_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    return run_json(await parley.runs.cancel(principal, run_id))
