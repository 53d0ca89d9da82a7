"""OpenAI-compatible endpoints: ``POST /v1/chat/completions`` and ``GET /v1/models``.

A "model" is an assistant: ``model="general"`` talks to the ``general`` assistant with its
instructions, route and knowledge. Each request becomes a thread holding the client's messages
and a run on it, so the answer is accounted for like any other (usage and cost on the stored
message); the response, streamed or not, is read from the run's event log. Tools the client
sends are the client's: the model's calls come back as ``tool_calls`` (see ``parley.passthrough``).
A file content part (``{"type": "file", "file": {"file_id": ...}}``, a file uploaded with
``POST /v1/files``) attaches that file to the run: it is read as sources (``parley.answers.attachments``).
Sampling parameters Parley does not model (``stop``, ``top_p``, ``seed``, penalties) are ignored.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import structlog
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sse_starlette import EventSourceResponse, ServerSentEvent

from parley import events as ev
from parley import passthrough
from parley.answers.attachments import MAX_FILES
from parley.api import embeddings
from parley.api.deps import ParleyDep, PrincipalDep
from parley.errors import ApiError, not_found
from parley.providers.base import ToolSpec
from parley.runs.lifecycle import NewRun
from parley.store.schema import Message, Run, new_id
from parley.threads import new_thread
from parley.users import Principal

if TYPE_CHECKING:
    from parley.app import Parley

log = structlog.get_logger(__name__)

router = APIRouter(tags=["openai"])


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FileRef(_Lenient):
    file_id: str | None = Field(default=None, max_length=100)


class ContentPart(_Lenient):
    type: str
    text: str | None = None
    file: FileRef | None = None


class FunctionCall(_Lenient):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = ""


class ToolCallIn(_Lenient):
    id: str = Field(min_length=1, max_length=100)
    type: Literal["function"] = "function"
    function: FunctionCall


class MessageIn(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=64)
    tool_calls: list[ToolCallIn] = Field(default_factory=list)
    tool_call_id: str | None = Field(default=None, max_length=100)


class FunctionSpec(_Lenient):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolIn(_Lenient):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(_Lenient):
    name: str


class NamedToolChoice(_Lenient):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Lenient):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Lenient):
    include_usage: StrictBool = False


class ChatCompletionRequest(_Lenient):
    model: str = Field(min_length=1, max_length=100)
    messages: list[MessageIn] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolIn] = Field(default_factory=list, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    response_format: ResponseFormat | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="Only one choice is supported.")


@router.get("/v1/models")
async def models(parley: ParleyDep, _: PrincipalDep) -> dict[str, Any]:
    """The assistants (chat), then the embedding model (``/v1/embeddings``) when there is one."""
    data = [_model(parley, a.name) for a in parley.assistants.all()]
    if (embedder := embeddings.model_id(parley)) is not None:
        data.append(embeddings.model_json(embedder))
    return {"object": "list", "data": data}


@router.get("/v1/models/{model}")
async def model(model: str, parley: ParleyDep, _: PrincipalDep) -> dict[str, Any]:
    if model == embeddings.model_id(parley):
        return embeddings.model_json(model)
    _assistant(parley, model)
    return _model(parley, model)


@router.post(
    "/v1/chat/completions",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE chunks with stream=true."}
    },
)
async def chat_completions(body: ChatCompletionRequest, parley: ParleyDep, principal: PrincipalDep) -> Any:
    assistant = _assistant(parley, body.model)
    rows = [_row(m) for m in body.messages]
    size = sum(len(r.content) for r in rows)
    if size > parley.settings.max_input_chars:
        raise ApiError(
            413,
            "input_too_large",
            f"messages hold {size} characters; the limit is {parley.settings.max_input_chars}",
        )
    if rows[-1].role not in ("user", "tool"):
        raise ApiError(422, "invalid_request", "the last message must come from the user or a tool")
    files = await own_files(parley, principal, _file_ids(body.messages))
    client = passthrough.options(
        tools=[ToolSpec(t.function.name, t.function.description, t.function.parameters) for t in body.tools],
        tool_choice=_tool_choice(body.tool_choice),
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        response_schema=_response_schema(body.response_format),
    )
    options: dict[str, Any] = {passthrough.KEY: client} if client else {}
    if files:
        options["metadata"] = {"files": files}
    run = await _start(parley, principal, assistant, rows, options)
    headers = {"X-Run-Id": run.id, "X-Thread-Id": run.thread_id}
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    if body.stream:
        return EventSourceResponse(
            _chunks(parley, principal, run, body.model, include_usage),
            ping=int(max(1, parley.settings.sse_ping_seconds)),
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", **headers},
        )
    return JSONResponse(await _completion(parley, run, body.model), headers=headers)


def _assistant(parley: Parley, name: str) -> str:
    if name not in parley.assistants:
        known = ", ".join(a.name for a in parley.assistants.all())
        raise ApiError(
            404, "model_not_found", f"model {name!r} does not exist; the models are the assistants: {known}"
        )
    return name


def _model(parley: Parley, name: str) -> dict[str, Any]:
    assistant = parley.assistants.get(name)
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "parley",
        "description": assistant.description,
        "route": parley.assistants.route_of(assistant),
    }


def _row(message: MessageIn) -> Message:
    if isinstance(message.content, list):
        unsupported = sorted({p.type for p in message.content if p.type not in ("text", "file")})
        if unsupported:
            raise ApiError(
                422,
                "unsupported_content",
                f"only text and file content are supported, not {', '.join(unsupported)}",
            )
        content = "".join(p.text or "" for p in message.content)
    else:
        content = message.content or ""
    data: dict[str, Any] = {}
    if message.role == "tool":
        if not message.tool_call_id:
            raise ApiError(422, "invalid_request", "a tool message needs its tool_call_id")
        data = {"tool_call_id": message.tool_call_id, **({"name": message.name} if message.name else {})}
    if message.tool_calls:
        data["tool_calls"] = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in message.tool_calls
        ]
    role = "system" if message.role == "developer" else message.role
    return Message(id=new_id("msg"), role=role, content=content, data=data)


def _file_ids(messages: list[MessageIn]) -> list[str]:
    """The files the messages' ``{"type": "file", "file": {"file_id"}}`` parts attach, once each."""
    ids: list[str] = []
    for message in messages:
        for part in message.content if isinstance(message.content, list) else []:
            if part.type != "file":
                continue
            if part.file is None or not part.file.file_id:
                raise ApiError(
                    422,
                    "unsupported_content",
                    "a file part needs file.file_id: upload the file with POST /v1/files, then send its id",
                )
            ids.append(part.file.file_id)
    ids = list(dict.fromkeys(ids))
    if len(ids) > MAX_FILES:
        raise ApiError(422, "too_many_files", f"{len(ids)} files are attached; the limit is {MAX_FILES}")
    return ids


async def own_files(parley: Parley, principal: Principal, ids: list[str]) -> list[str]:
    """``ids`` if each names a file of the caller's own (an admin's too: a run reads only its
    user's files); else 404, before anything is stored."""
    for file_id in ids:
        file = await parley.files.get(principal, file_id)
        if file.user_id != principal.user_id:
            raise not_found("file", file_id)
    return ids


async def _start(
    parley: Parley, principal: Principal, assistant: str, rows: list[Message], options: dict[str, Any]
) -> Run:
    """A new thread with the client's messages and its run, in one transaction."""
    thread = new_thread(principal.user_id, assistant, metadata={"via": "chat.completions"})
    last = rows[-1]
    run, _ = await parley.runs.create(
        principal,
        NewRun(
            thread.id,
            last.content if last.role == "user" else "",
            options=options,
            input_message_id=last.id,
            thread=thread,
            messages=tuple(rows),
        ),
    )
    return run


def _tool_choice(choice: str | NamedToolChoice | None) -> str | None:
    return choice.function.name if isinstance(choice, NamedToolChoice) else choice


def _response_schema(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {"type": "object"}
    if response_format.json_schema is None or not response_format.json_schema.schema_:
        raise ApiError(422, "invalid_request", "response_format json_schema needs json_schema.schema")
    return response_format.json_schema.schema_


class _Outcome:
    """The pieces of an answer, gathered from a run's events."""

    def __init__(self) -> None:
        self.text = ""
        self.tool_calls: list[dict[str, Any]] = []
        self.terminal: dict[str, Any] | None = None
        self.terminal_type = ""

    def tool_call(self, data: dict[str, Any]) -> dict[str, Any]:
        call = {
            "index": len(self.tool_calls),
            "id": data["id"],
            "type": "function",
            "function": {"name": data["name"], "arguments": data["arguments"]},
        }
        self.tool_calls.append(call)
        return call

    @property
    def finish_reason(self) -> str:
        if self.tool_calls:
            return "tool_calls"
        return str((self.terminal or {}).get("finish_reason") or "stop")

    def usage(self) -> dict[str, Any]:
        usage = (self.terminal or {}).get("usage") or {}
        prompt, completion = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cost_usd": usage.get("cost_usd"),
        }

    def error(self) -> dict[str, Any]:
        if self.terminal_type == ev.RUN_CANCELLED:
            return {"code": "run_cancelled", "message": "the run was cancelled"}
        error: dict[str, Any] = (self.terminal or {}).get("error") or {}
        return {"code": error.get("code", "run_failed"), "message": error.get("message", "the run failed")}


def _completion_id(run: Run) -> str:
    return f"chatcmpl-{run.id}"


async def _completion(parley: Parley, run: Run, model: str) -> dict[str, Any]:
    outcome = _Outcome()
    async for event in parley.log.follow(run.id):
        _gather(outcome, event, client_tools=passthrough.client_tools(run.options))
    if outcome.terminal_type != ev.RUN_COMPLETED:
        error = outcome.error()
        status = 409 if error["code"] == "run_cancelled" else 502
        raise ApiError(status, error["code"], error["message"])
    message: dict[str, Any] = {"role": "assistant", "content": outcome.text or None, "refusal": None}
    if outcome.tool_calls:
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in outcome.tool_calls]
    return {
        "id": _completion_id(run),
        "object": "chat.completion",
        "created": int(run.created_at),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": outcome.finish_reason, "logprobs": None}
        ],
        "usage": outcome.usage(),
        "system_fingerprint": None,
        "parley": _parley_part(run, outcome),
    }


def _parley_part(run: Run, outcome: _Outcome) -> dict[str, Any]:
    terminal = outcome.terminal or {}
    return {
        "run_id": run.id,
        "thread_id": run.thread_id,
        "message_id": terminal.get("message_id"),
        **terminal.get("usage", {}),
    }


def _gather(outcome: _Outcome, event: ev.RunEvent, *, client_tools: bool) -> dict[str, Any] | None:
    """Add one event to ``outcome``; returns the chunk delta it makes, if any."""
    if event.type == ev.MESSAGE_DELTA:
        text = str(event.payload()["text"])
        outcome.text += text
        return {"content": text}
    if event.type == ev.TOOL_CALL and client_tools:
        return {"tool_calls": [outcome.tool_call(event.payload())]}
    if event.terminal:
        outcome.terminal = event.payload()
        outcome.terminal_type = event.type
    return None


async def _chunks(
    parley: Parley, principal: Principal, run: Run, model: str, include_usage: bool
) -> AsyncIterator[ServerSentEvent]:
    created = int(time.time())
    client_tools = passthrough.client_tools(run.options)

    def body(choices: list[dict[str, Any]], **extra: Any) -> ServerSentEvent:
        data = {
            "id": _completion_id(run),
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }
        return ServerSentEvent(data=json.dumps(data, ensure_ascii=False))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> ServerSentEvent:
        return body([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}])

    outcome = _Outcome()
    yield chunk({"role": "assistant", "content": ""})
    try:
        async for event in parley.log.follow(run.id):
            delta = _gather(outcome, event, client_tools=client_tools)
            if delta is not None:
                yield chunk(delta)
        if outcome.terminal_type == ev.RUN_COMPLETED:
            yield chunk({}, outcome.finish_reason)
            if include_usage:
                yield body([], usage=outcome.usage(), parley=_parley_part(run, outcome))
        else:
            yield ServerSentEvent(data=json.dumps({"error": outcome.error()}))
        yield ServerSentEvent(data="[DONE]")
    finally:
        if not outcome.terminal_type:
            # The client went away mid-answer: stop generating for nobody.
            try:
                await asyncio.shield(parley.runs.cancel(principal, run.id))
            except Exception as exc:
                log.warning("cancel_after_disconnect_failed", run_id=run.id, error=str(exc))
