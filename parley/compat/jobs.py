"""Seed 001's API (job-based chat with file analysis), as documented in its design.

Each user has one chat session (a thread); every message or uploaded file becomes a
job, which is a run on that thread (the job id is the run id):

``POST /messages`` ``{"message"}`` → ``{"job_id", "status"}``; ``POST /files`` (multipart,
part ``file``) → the upload is checked and stored, and its analysis becomes a job;
``GET /messages/{id}`` → ``status`` ``pending|processing|done|error`` and the ``result``;
``GET /chat/history``; ``DELETE /chat/clear``. Errors have the seed's documented shape,
``{"success": false, "error": "<message>", "code": "<Parley's code>"}``, with the same status.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import Field
from sqlalchemy import select

from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.files import UPLOAD_BODY, UPLOAD_RESPONSES, file_json
from parley.api.schemas import Body, iso
from parley.errors import RESPONSES, ApiError, describe_validation
from parley.files import File
from parley.ratelimit import rate_class
from parley.runs.lifecycle import NewRun
from parley.store.schema import Message, Run, Thread, User, new_id
from parley.users import Principal

if TYPE_CHECKING:
    from parley.app import Parley


class SeedErrors(APIRoute):
    """Errors as seed 001 documents them: ``{"success": false, "error": "<message>"}``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return _error(exc.status, exc.code, exc.message, exc.headers)
            except RequestValidationError as exc:
                status, code, message = describe_validation(list(exc.errors()))
                return _error(status, code, message)

        return route


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"success": False, "error": message, "code": code}, status, headers=headers)


#: The seed's error shape, for the OpenAPI schema.
SEED_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {"success": {"const": False}, "error": {"type": "string"}, "code": {"type": "string"}},
}


def seed_shaped(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """Documented error answers, in the seed's shape."""
    return {
        status: {
            "description": doc["description"],
            "content": {"application/json": {"schema": SEED_ERROR_SCHEMA}},
        }
        for status, doc in responses.items()
    }


router = APIRouter(tags=["compat: jobs (seed 001)"], route_class=SeedErrors, responses=seed_shaped(RESPONSES))

SESSION_MARK = "jobs"
STATUS = {
    "queued": "pending",
    "running": "processing",
    "completed": "done",
    "failed": "error",
    "cancelled": "error",
    "interrupted": "error",
}


class MessageIn(Body):
    message: str = Field(min_length=1, description="The user's message.")


def job_json(run: Run) -> dict[str, Any]:
    meta = (run.options or {}).get("metadata", {})
    return {
        "job_id": run.id,
        "type": meta.get("job_type", "message"),
        "file_id": meta.get("file_id"),
        "status": STATUS.get(run.status, "error"),
        "input": run.input,
        "result": run.output if run.status == "completed" else None,
        "error": run.error,
        "created_at": iso(run.created_at),
        "finished_at": iso(run.finished_at),
    }


async def session_thread(parley: Parley, principal: Principal, *, create: bool) -> Thread | None:
    """The user's chat session thread, created on first use."""
    mark = Thread.metadata_["compat"].as_string() == SESSION_MARK
    stmt = select(Thread).where(Thread.user_id == principal.user_id, mark).order_by(Thread.created_at)
    async with parley.db.session() as session:
        thread = await session.scalar(stmt)
    if thread is not None or not create:
        return thread
    async with parley.db.transaction() as session:
        # Lock the user so two first messages at once still make one session.
        await session.execute(select(User.id).where(User.id == principal.user_id).with_for_update())
        thread = await session.scalar(stmt)
        if thread is None:
            assistant = "general" if "general" in parley.assistants else parley.assistants.all()[0].name
            thread = Thread(
                id=new_id("thr"),
                user_id=principal.user_id,
                assistant=assistant,
                title="Chat",
                metadata_={"compat": SESSION_MARK},
            )
            session.add(thread)
    return thread


def _check_length(parley: Parley, text: str) -> None:
    if len(text) > parley.settings.max_input_chars:
        raise ApiError(
            413, "input_too_large", f"message is longer than {parley.settings.max_input_chars} characters"
        )


@router.post("/messages", status_code=202)
@rate_class("runs")
async def post_message(body: MessageIn, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    _check_length(parley, body.message)
    thread = await session_thread(parley, principal, create=True)
    assert thread is not None
    run, _ = await parley.runs.create(principal, NewRun(thread.id, body.message, multitask="enqueue"))
    return job_json(run)


@router.get("/messages/{job_id}")
async def get_job(job_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    return job_json(await parley.runs.get(principal, job_id))


def analysis_prompt(file: File, room: int) -> str:
    header = (
        f'Analyse the file "{file.name}" ({file.kind}, {file.size} bytes) and summarise what it contains.'
    )
    if file.text is None:
        size = f"{file.meta.get('width')}x{file.meta.get('height')} pixels" if file.meta else "an image"
        return f"{header}\nIt is an image ({size}); its pixels are not available to you."
    text = file.text[: max(0, room - len(header) - 100)]
    cut = "" if len(text) == len(file.text) else "\n[... the rest of the file is cut ...]"
    return f"{header}\n\n--- {file.name} ---\n{text}{cut}"


@router.post("/files", status_code=202, openapi_extra=UPLOAD_BODY, responses=seed_shaped(UPLOAD_RESPONSES))
@rate_class("uploads")
async def post_file(request: Request, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    file = await parley.files.upload(request, principal)
    thread = await session_thread(parley, principal, create=True)
    assert thread is not None
    file = await parley.files.attach(file, thread.id)
    prompt = analysis_prompt(file, parley.settings.max_input_chars)
    run, _ = await parley.runs.create(
        principal,
        NewRun(
            thread.id,
            prompt,
            multitask="enqueue",
            options={"metadata": {"job_type": "file", "file_id": file.id}},
        ),
    )
    return {**job_json(run), "file": file_json(file)}


@router.get("/chat/history")
async def history(parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    thread = await session_thread(parley, principal, create=False)
    if thread is None:
        return {"messages": [], "jobs": [], "files": []}
    async with parley.db.session() as session:
        messages = (
            await session.scalars(
                select(Message).where(Message.thread_id == thread.id).order_by(Message.created_at, Message.id)
            )
        ).all()
        runs = (
            await session.scalars(
                select(Run).where(Run.thread_id == thread.id).order_by(Run.created_at, Run.id)
            )
        ).all()
    files = await parley.files.list(principal, limit=1000, thread_id=thread.id)
    return {
        "messages": [
            {
                "id": m.id,
                "role": m.role,
                "content": m.content,
                "job_id": m.run_id,
                "created_at": iso(m.created_at),
            }
            for m in messages
        ],
        "jobs": [job_json(r) for r in runs],
        "files": [file_json(f) for f in reversed(files)],
    }


@router.delete("/chat/clear")
async def clear(parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    thread = await session_thread(parley, principal, create=False)
    if thread is None:
        return {"cleared": True, "messages": 0, "files": 0}
    async with parley.db.session() as session:
        count = len((await session.scalars(select(Message.id).where(Message.thread_id == thread.id))).all())
    files = await parley.files.delete_for_thread(principal, thread.id)
    await parley.runs.delete_thread(principal, thread.id)
    return {"cleared": True, "messages": count, "files": files}
