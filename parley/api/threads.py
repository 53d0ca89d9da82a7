"""Threads and messages: ``/v1/threads``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response

from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.schemas import ThreadCreate, ThreadUpdate, message_json, thread_json
from parley.errors import ApiError
from parley.feedback import ratings
from parley.threads import create_thread, get_thread, list_messages, list_threads, update_thread

router = APIRouter(prefix="/v1/threads", tags=["threads"])


@router.post("", status_code=201)
async def create(body: ThreadCreate, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    if body.assistant not in parley.assistants:
        raise ApiError(
            422, "unknown_assistant", f"assistant {body.assistant!r} does not exist; see GET /v1/assistants"
        )
    thread = await create_thread(
        parley.db, principal, body.assistant, metadata=body.metadata, title=body.title
    )
    return thread_json(thread)


@router.get("")
async def list_(
    parley: ParleyDep,
    principal: PrincipalDep,
    limit: int = Query(20, ge=1, le=100),
    before: str | None = Query(
        None,
        pattern=r"^thr_[0-9a-z]{26}$",
        description="Last thread id of the previous page (the page goes on even if it was deleted since).",
    ),
) -> dict[str, Any]:
    threads, has_more = await list_threads(parley.db, principal, limit=limit, before=before)
    return {"object": "list", "data": [thread_json(t) for t in threads], "has_more": has_more}


@router.get("/{thread_id}")
async def read(thread_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    async with parley.db.session() as session:
        return thread_json(await get_thread(session, principal, thread_id))


@router.patch("/{thread_id}")
async def update(
    thread_id: str, body: ThreadUpdate, parley: ParleyDep, principal: PrincipalDep
) -> dict[str, Any]:
    thread = await update_thread(parley.db, principal, thread_id, title=body.title, metadata=body.metadata)
    return thread_json(thread)


@router.delete("/{thread_id}", status_code=204)
async def delete(thread_id: str, parley: ParleyDep, principal: PrincipalDep) -> Response:
    await parley.runs.delete_thread(principal, thread_id)
    return Response(status_code=204)


@router.get("/{thread_id}/messages")
async def messages(
    thread_id: str,
    parley: ParleyDep,
    principal: PrincipalDep,
    limit: int = Query(50, ge=1, le=200),
    after: str | None = Query(None, description="Last message id of the previous page."),
) -> dict[str, Any]:
    rows, has_more = await list_messages(parley.db, principal, thread_id, limit=limit, after=after)
    rated = await ratings(parley.db, [m.id for m in rows if m.role == "assistant"])
    data = [message_json(m, rated.get(m.id)) for m in rows]
    return {"object": "list", "data": data, "has_more": has_more}
