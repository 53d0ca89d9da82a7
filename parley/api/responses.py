"""The OpenAI Responses API: ``/v1/responses`` (see ``parley.responses`` and ``parley.response_view``).

``model`` is an assistant, as on ``/v1/chat/completions``. Function tools are the client's
(``parley.passthrough``); other tool types, and input that is not text, are refused with a 422.
Parameters Parley does not model (``top_p``, ``truncation``, ``reasoning``, ``include``,
``parallel_tool_calls``, ``prompt_cache_key``...) are accepted and ignored.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parley import items as item_rows
from parley import passthrough
from parley.answers.attachments import MAX_FILES
from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.openai import own_files
from parley.api.sse import EventStream, parse_cursor
from parley.errors import ApiError
from parley.providers.base import ToolSpec
from parley.ratelimit import rate_class
from parley.responses import NewResponse

router = APIRouter(tags=["responses"])

MAX_METADATA = 16


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class FunctionTool(_Lenient):
    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceFunction(_Lenient):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)


class ConversationRef(_Lenient):
    id: str = Field(min_length=1, max_length=100)


class TextFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, max_length=64)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(_Lenient):
    format: TextFormat | None = None


class ResponseCreate(_Lenient):
    model: str = Field(min_length=1, max_length=100)
    input: str | list[Any]
    instructions: str | None = None
    stream: bool = False
    background: bool = False
    store: bool = True
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=100)
    conversation: str | ConversationRef | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    metadata: dict[str, str] | None = None
    text: TextConfig | None = None


def checked_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    metadata = metadata or {}
    if len(metadata) > MAX_METADATA:
        raise ApiError(422, "invalid_metadata", f"metadata holds at most {MAX_METADATA} keys")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise ApiError(422, "invalid_metadata", "metadata keys are at most 64 characters, values 512")
    return metadata


def _tools(tools: list[dict[str, Any]]) -> list[FunctionTool]:
    out = []
    for index, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise ApiError(
                422,
                "unsupported_tool",
                f"tools[{index}]: only function tools are supported, not {tool.get('type')!r}",
            )
        try:
            out.append(FunctionTool.model_validate(tool))
        except ValidationError as exc:
            raise ApiError(422, "invalid_request", f"tools[{index}]: {exc.errors()[0]['msg']}") from exc
    return out


def _format(text: TextConfig | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(format as echoed, JSON schema for the provider)``."""
    if text is None or text.format is None or text.format.type == "text":
        return None, None
    if text.format.type == "json_object":
        return {"type": "json_object"}, {"type": "object"}
    if not text.format.schema_:
        raise ApiError(422, "invalid_request", "text.format json_schema needs a schema")
    echoed = text.format.model_dump(by_alias=True, exclude_none=True)
    return echoed, text.format.schema_


def parse(body: ResponseCreate, parley: Any) -> NewResponse:
    """Validate a request into what ``Responses.create`` stores; nothing is stored on a 4xx."""
    if body.model not in parley.assistants:
        known = ", ".join(a.name for a in parley.assistants.all())
        raise ApiError(
            404,
            "model_not_found",
            f"model {body.model!r} does not exist; the models are the assistants: {known}",
        )
    if body.background and not body.store:
        raise ApiError(
            400, "invalid_request", "background responses must be stored: background needs store=true"
        )
    conversation = (
        body.conversation.id if isinstance(body.conversation, ConversationRef) else body.conversation
    )
    if conversation is not None and body.previous_response_id is not None:
        raise ApiError(400, "invalid_request", "send conversation or previous_response_id, not both")
    rows = item_rows.to_messages(body.input)
    if len(item_rows.file_ids(body.input)) > MAX_FILES:
        raise ApiError(422, "too_many_files", f"more than {MAX_FILES} files are attached")
    size = sum(len(r.content) for r in rows) + len(body.instructions or "")
    if size > parley.settings.max_input_chars:
        raise ApiError(
            413,
            "input_too_large",
            f"the input holds {size} characters; the limit is {parley.settings.max_input_chars}",
        )
    if rows[-1].role not in ("user", "tool"):
        raise ApiError(
            422, "invalid_request", "the last input item must be a user message or a function_call_output"
        )
    tools = _tools(body.tools)
    echoed_format, schema = _format(body.text)
    choice = body.tool_choice
    client = passthrough.options(
        tools=[
            ToolSpec(t.name, t.description or "", t.parameters or {"type": "object", "properties": {}})
            for t in tools
        ],
        tool_choice=choice.name if isinstance(choice, ToolChoiceFunction) else choice,
        max_tokens=body.max_output_tokens,
        temperature=body.temperature,
        response_schema=schema,
        instructions=body.instructions,
    )
    spec: dict[str, Any] = {
        "model": body.model,
        "instructions": body.instructions,
        "previous_response_id": body.previous_response_id,
        "store": body.store,
        "background": body.background,
        "metadata": checked_metadata(body.metadata),
        "tools": [t.model_dump() for t in tools],
        "tool_choice": choice.model_dump() if isinstance(choice, ToolChoiceFunction) else choice,
        "temperature": body.temperature,
        "max_output_tokens": body.max_output_tokens,
        "format": echoed_format,
    }
    canonical = json.dumps(body.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return NewResponse(
        model=body.model,
        rows=rows,
        spec=spec,
        client=client,
        request_hash=hashlib.sha256(canonical.encode()).hexdigest(),
        previous_response_id=body.previous_response_id,
        conversation=conversation,
    )


@router.post(
    "/v1/responses",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "A response, or its stream events."}
    },
)
@rate_class("runs")
async def create(
    body: ResponseCreate,
    parley: ParleyDep,
    principal: PrincipalDep,
    idempotency_key: str | None = Header(None, max_length=200),
) -> Any:
    new = parse(body, parley)
    new.idempotency_key = idempotency_key
    new.files = await own_files(parley, principal, item_rows.file_ids(body.input))
    run, created = await parley.responses.create(principal, new)
    if created and new.files:
        # The conversation (or chain) keeps seeing them, as a native run's listed files.
        await parley.files.attach_listed(run.user_id, run.thread_id, new.files)
    headers = {"X-Run-Id": run.id, "X-Thread-Id": run.thread_id}
    if body.stream:
        frames = parley.responses.stream(
            run,
            ping=parley.settings.sse_ping_seconds,
            principal=principal,
            cancel_on_close=not body.background,
        )
        return EventStream(frames, headers=headers)
    if body.background:
        view = await parley.responses.view(run)
    else:
        view = await parley.responses.wait(run)
        if not body.store:
            await parley.responses.forget(run)
    return JSONResponse(view.snapshot(), headers=headers)


@router.get(
    "/v1/responses/{response_id}",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The response, or its stream events."}
    },
)
async def read(
    response_id: str,
    parley: ParleyDep,
    principal: PrincipalDep,
    stream: bool = Query(False, description="Replay the response's stream events from the log, then follow."),
    starting_after: int | None = Query(None, ge=0, description="Resume after this sequence_number."),
    last_event_id: str | None = Header(None, max_length=20),
) -> Any:
    run = await parley.responses.get(principal, response_id)
    if stream:
        after = (
            parse_cursor(last_event_id, starting_after)
            if (last_event_id or starting_after is not None)
            else -1
        )
        await parley.responses.check_cursor(run, after)
        frames = parley.responses.stream(run, after=after, ping=parley.settings.sse_ping_seconds)
        return EventStream(frames, headers={"X-Run-Id": run.id})
    return (await parley.responses.view(run)).snapshot()


@router.post("/v1/responses/{response_id}/cancel")
async def cancel(response_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    run = await parley.responses.get(principal, response_id)
    run = await parley.responses.cancel(principal, run)
    return (await parley.responses.view(run)).snapshot()


@router.delete("/v1/responses/{response_id}")
async def delete(response_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    run = await parley.responses.get(principal, response_id)
    await parley.responses.delete(principal, run)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items")
async def input_items(
    response_id: str,
    parley: ParleyDep,
    principal: PrincipalDep,
    after: str | None = Query(None, max_length=100, description="The last item id of the previous page."),
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = Query("desc"),
) -> dict[str, Any]:
    run = await parley.responses.get(principal, response_id)
    found = [
        item for message in await parley.responses.input_items(run) for item in item_rows.to_items(message)
    ]
    return item_rows.page(found, after=after, limit=limit, order=order)
