"""Seed 000's API (the shopping assistant), as its README documents and its repository behaves.

A seed *session* is a Parley thread of the ``shop`` assistant. ``POST
/api/chat/{session_id}/message`` starts a run; ``GET /api/stream/{session_id}`` is one
long-lived SSE stream per session that says ``connection``, greets, and then streams
every run of the session as it happens, with the seed's event names: ``text_chunk``
``{content, partial}``, ``function_call``, ``function_result``, ``completion``, ``error``.
Frame ids are ``RUN_ID:SEQ``, so ``Last-Event-ID`` resumes inside a run.

``POST /api/functions/NAME`` calls a tool directly, as the user (no provenance check:
the user clicked a real card); the call is kept in the thread like the model's own, so
the products it showed can be referenced later. Domain failures (out of stock, unknown
product) answer ``200 {"success": false, "error": {code, message}}`` as the seed does;
malformed requests get a 4xx.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Header
from pydantic import Field, StrictBool, StrictFloat
from sqlalchemy import ColumnElement, func, or_, select
from sse_starlette import EventSourceResponse, ServerSentEvent

from parley import __version__
from parley import events as ev
from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.schemas import Body, iso
from parley.errors import ApiError
from parley.events import RunEvent
from parley.providers.base import ToolCall
from parley.runs.lifecycle import NewRun
from parley.shop import product_json
from parley.store.schema import Message, Run, Thread, new_id
from parley.threads import create_thread, get_thread, history
from parley.tools.base import ToolError
from parley.tools.calls import Outcome
from parley.tools.provenance import Seen
from parley.users import Principal

router = APIRouter(prefix="/api", tags=["compat: shopping assistant (seed 000)"])
health = APIRouter(tags=["compat: shopping assistant (seed 000)"])

WELCOME = (
    "Hello! I'm your AI shopping assistant. ",
    "I can help you search for products, ",
    "get detailed information, and manage your cart. ",
    "What would you like to find today?",
)
_RECHECK_SECONDS = 2.0


def channel(session_id: str) -> str:
    return f"shop-session:{session_id}"


class ChatIn(Body):
    message: str = Field(min_length=1, description="The user's message.")
    context: dict[str, Any] | None = None


class SearchIn(Body):
    session_id: str = Field(min_length=1)
    query: str = Field(min_length=1, max_length=200)
    category: str | None = Field(default=None, max_length=100)
    limit: int = Field(default=10, ge=1, le=50)
    min_price: StrictFloat | None = Field(default=None, ge=0)
    max_price: StrictFloat | None = Field(default=None, ge=0)
    in_stock: StrictBool = False


class DetailsIn(Body):
    session_id: str = Field(min_length=1)
    product_id: str = Field(min_length=1, max_length=64)
    include_recommendations: StrictBool = True


class CartIn(Body):
    session_id: str = Field(min_length=1)
    product_id: str = Field(min_length=1, max_length=64)
    quantity: int = Field(default=1, ge=1, le=99)


class RemoveIn(Body):
    session_id: str = Field(min_length=1)
    product_id: str = Field(min_length=1, max_length=64)
    quantity: int | None = Field(default=None, ge=1)


class RecommendIn(Body):
    session_id: str = Field(min_length=1)
    based_on: str = Field(min_length=1, max_length=100, description="A product id or a category.")
    recommendation_type: str = "similar"
    max_results: int = Field(default=5, ge=1, le=20)


@health.get("/health")
async def health_check() -> dict[str, Any]:
    return {"status": "healthy", "timestamp": datetime.now(UTC).isoformat(), "version": __version__}


@router.post("/sessions")
async def create_session(parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    thread = await create_thread(parley.db, principal, "shop", metadata={"origin": "seed-000"})
    return {"session_id": thread.id, "created_at": iso(thread.created_at), "expires_at": None}


@router.get("/sessions/{session_id}")
@router.get("/sessions/{session_id}/context", include_in_schema=False)
async def get_session(session_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    async with parley.db.session() as session:
        thread = await get_thread(session, principal, session_id)
        messages = await history(session, session_id)
    seen = Seen.from_history(messages, window=parley.tools.ref_window, max_age=parley.tools.ref_max_age)
    cart = await parley.shop.cart(session_id)
    return {
        "session_id": thread.id,
        "created_at": iso(thread.created_at),
        "context": {
            "recent_products": [{"id": i, "name": n} for i, n in seen.ids("product").items()],
            "messages": len([m for m in messages if m.content]),
            "cart_summary": cart["summary"],
        },
        "last_updated": iso(thread.updated_at),
    }


@router.post("/chat/{session_id}/message")
async def send_message(
    session_id: str, body: ChatIn, parley: ParleyDep, principal: PrincipalDep
) -> dict[str, Any]:
    if len(body.message) > parley.settings.max_input_chars:
        raise ApiError(
            413, "input_too_large", f"message is longer than {parley.settings.max_input_chars} characters"
        )
    run, _ = await parley.runs.create(principal, NewRun(session_id, body.message, multitask="enqueue"))
    await parley.bus.publish(channel(session_id))
    return {"success": True, "message_id": run.id, "run_id": run.id, "session_id": session_id}


@router.get("/stream/{session_id}", response_class=EventSourceResponse)
async def stream(
    session_id: str,
    parley: ParleyDep,
    principal: PrincipalDep,
    last_event_id: str | None = Header(None, max_length=100),
) -> EventSourceResponse:
    async with parley.db.session() as session:
        await get_thread(session, principal, session_id)
    resume_run, resume_seq = _cursor(last_event_id)

    async def frames() -> AsyncIterator[ServerSentEvent]:
        parley.metrics.sse_streams.inc()
        try:
            yield _sse("connection", {"status": "connected", "session_id": session_id})
            if resume_run is None:
                for chunk in WELCOME:
                    yield _sse("text_chunk", {"content": chunk, "partial": True})
                yield _sse("completion", {"turn_id": "welcome", "status": "complete"})
            async with parley.db.session() as session:
                connected_at = await session.scalar(
                    select(func.max(Run.created_at)).where(Run.thread_id == session_id)
                )
            streamed: set[str] = set()
            async with parley.bus.subscribe(channel(session_id)) as subscription:
                while True:
                    for run_id in await _runs_to_stream(
                        parley, session_id, connected_at, resume_run, streamed
                    ):
                        streamed.add(run_id)
                        after = resume_seq if run_id == resume_run else 0
                        async for event in parley.log.follow(run_id, after):
                            for frame in _translate(event):
                                yield frame
                    await subscription.wait(_RECHECK_SECONDS)
        finally:
            parley.metrics.sse_streams.dec()

    return EventSourceResponse(
        frames(),
        ping=int(max(1, parley.settings.sse_ping_seconds)),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _runs_to_stream(
    parley: Any, session_id: str, connected_at: float | None, resume_run: str | None, streamed: set[str]
) -> list[str]:
    """Runs of the session still to stream: active or newer than the connection, oldest first."""
    conditions: list[ColumnElement[bool]] = [Run.status.in_(("queued", "running"))]
    if connected_at is not None:
        conditions.append(Run.created_at > connected_at)
    else:
        conditions.append(Run.id.is_not(None))
    if resume_run is not None:
        conditions.append(Run.id == resume_run)
    async with parley.db.session() as session:
        rows = await session.scalars(
            select(Run.id)
            .where(Run.thread_id == session_id, or_(*conditions))
            .order_by(Run.created_at, Run.id)
        )
        return [r for r in rows if r not in streamed]


def _cursor(last_event_id: str | None) -> tuple[str | None, int]:
    if not last_event_id or ":" not in last_event_id:
        return None, 0
    run_id, _, seq = last_event_id.strip().rpartition(":")
    if not seq.isdigit() or not run_id:
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must look like RUN_ID:SEQ")
    return run_id, int(seq)


def _sse(event: str, data: dict[str, Any], id_: str | None = None) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(data, ensure_ascii=False, default=str), event=event, id=id_)


def _translate(event: RunEvent) -> Iterable[ServerSentEvent]:
    ident = f"{event.run_id}:{event.seq}"
    data = event.payload()
    if event.type == ev.MESSAGE_DELTA:
        yield _sse("text_chunk", {"content": data["text"], "partial": True}, ident)
    elif event.type == ev.TOOL_CALL:
        payload = {"function": data["name"], "parameters": data["arguments"], "tool_call_id": data["id"]}
        yield _sse("function_call", payload, ident)
    elif event.type == ev.TOOL_RESULT:
        if data.get("is_error"):
            output = data.get("output") or {}
            result: dict[str, Any] = {
                "success": False,
                "error": {"code": output.get("code", "FUNCTION_ERROR"), "message": output.get("error", "")},
            }
        else:
            result = {"success": True, "data": data["output"]}
        yield _sse(
            "function_result", {"function": data["name"], "tool_call_id": data["id"], "result": result}, ident
        )
    elif event.type == ev.TOOL_REJECTED:
        error = {"code": "INVALID_REFERENCE", "message": data["reason"], "suggestions": data["suggestions"]}
        payload = {
            "function": data["name"],
            "tool_call_id": data["id"],
            "result": {"success": False, "error": error},
        }
        yield _sse("function_result", payload, ident)
    elif event.type == ev.RUN_COMPLETED:
        yield _sse(
            "completion", {"turn_id": event.run_id, "status": "complete", "usage": data.get("usage")}, ident
        )
    elif event.type == ev.RUN_FAILED:
        error = data.get("error", {})
        yield _sse(
            "error", {"error": error.get("message", ""), "code": error.get("code"), "type": "ai_error"}, ident
        )
        yield _sse("completion", {"turn_id": event.run_id, "status": "error"})
    elif event.type == ev.RUN_CANCELLED:
        yield _sse("completion", {"turn_id": event.run_id, "status": "cancelled"}, ident)


# -- direct function calls -------------------------------------------------------------------


async def _call(
    parley: Any, principal: Principal, session_id: str, name: str, arguments: dict[str, Any]
) -> Outcome:
    """Run a tool as the user and keep the call in the thread (for context and provenance)."""
    async with parley.db.session() as session:
        thread: Thread = await get_thread(session, principal, session_id)
    tool = parley.tools.get(name)
    try:
        args = tool.parse(arguments)
    except ValueError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    call = ToolCall(new_id("call"), name, json.dumps(arguments))
    ctx = parley.tools.context(parley.db, thread_id=session_id, user_id=thread.user_id)
    try:
        result = await tool.run(ctx, args)
    except ToolError as exc:
        return Outcome(call, "error", {"error": exc.message, "code": exc.code, "details": exc.details})
    outcome = Outcome(call, "ok", result.output, result.ui, result.refs)
    async with parley.db.session() as session, session.begin():
        session.add(
            Message(
                id=new_id("msg"),
                thread_id=session_id,
                role="assistant",
                content="",
                data={"tool_calls": [outcome.record(1)], "origin": "api"},
            )
        )
    return outcome


def _failure(outcome: Outcome, **details: Any) -> dict[str, Any]:
    output = outcome.output
    error = {"code": output.get("code", "FUNCTION_ERROR"), "message": output["error"]}
    if output.get("details") or details:
        error["details"] = {**output.get("details", {}), **details}
    return {"success": False, "error": error}


@router.post("/functions/search_products")
async def search_products(body: SearchIn, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    arguments = body.model_dump(exclude={"session_id"}, exclude_none=True)
    outcome = await _call(parley, principal, body.session_id, "search_products", arguments)
    if outcome.status != "ok":
        return _failure(outcome)
    products = outcome.output["products"]
    return {
        "success": True,
        "data": {
            "products": products,
            "total_results": len(products),
            "search_context": {"query": body.query, "category": body.category, "results_cached": True},
        },
        "context_updated": True,
    }


@router.post("/functions/show_product_details")
async def show_product_details(body: DetailsIn, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    async with parley.db.session() as session:
        await get_thread(session, principal, body.session_id)
        messages = await history(session, body.session_id)
    seen = Seen.from_history(messages, window=parley.tools.ref_window, max_age=parley.tools.ref_max_age)
    arguments = body.model_dump(exclude={"session_id"})
    outcome = await _call(parley, principal, body.session_id, "show_product_details", arguments)
    if outcome.status != "ok":
        return _failure(
            outcome, product_id=body.product_id, suggestions=seen.suggest("product", body.product_id)
        )
    return {
        "success": True,
        "data": outcome.output,
        "validation": {
            "product_exists": True,
            "in_recent_search": seen.contains("product", body.product_id),
            "context_valid": True,
        },
    }


@router.post("/functions/add_to_cart")
async def add_to_cart(body: CartIn, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    arguments = body.model_dump(exclude={"session_id"})
    outcome = await _call(parley, principal, body.session_id, "add_to_cart", arguments)
    if outcome.status != "ok":
        return _failure(outcome)
    validation = {"product_exists": True, "sufficient_stock": True, "valid_quantity": True}
    return {"success": True, "data": outcome.output, "validation": validation}


@router.post("/functions/remove_from_cart")
async def remove_from_cart(body: RemoveIn, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    arguments = body.model_dump(exclude={"session_id"}, exclude_none=True)
    outcome = await _call(parley, principal, body.session_id, "remove_from_cart", arguments)
    if outcome.status != "ok":
        return _failure(outcome)
    return {"success": True, "data": outcome.output}


@router.post("/functions/get_recommendations")
async def get_recommendations(
    body: RecommendIn, parley: ParleyDep, principal: PrincipalDep
) -> dict[str, Any]:
    product = await parley.shop.get(body.based_on)
    arguments: dict[str, Any] = {"max_results": body.max_results}
    arguments["product_id" if product is not None else "category"] = body.based_on
    outcome = await _call(parley, principal, body.session_id, "get_recommendations", arguments)
    if outcome.status != "ok":
        return _failure(outcome, valid_categories=await parley.shop.categories())
    data = outcome.output
    return {
        "success": True,
        "data": {
            "recommendations": data["recommendations"],
            "recommendation_context": data["recommendation_context"],
        },
    }


@router.get("/cart/{session_id}")
async def get_cart(session_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    async with parley.db.session() as session:
        await get_thread(session, principal, session_id)
    cart = await parley.shop.cart(session_id)
    items = [
        {**item, "id": f"{session_id}:{item['product_id']}", "added_at": iso(item["added_at"])}
        for item in cart["items"]
    ]
    return {"success": True, "items": items, "summary": cart["summary"]}


@router.delete("/cart/{session_id}")
async def clear_cart(session_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    async with parley.db.session() as session:
        await get_thread(session, principal, session_id)
    released = await parley.shop.clear_cart(session_id)
    cart = await parley.shop.cart(session_id)
    return {
        "success": True,
        "message": "cart cleared",
        "released_units": released,
        "summary": cart["summary"],
    }


__all__ = ["health", "product_json", "router"]
