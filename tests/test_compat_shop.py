"""Seed 000's API (the shopping assistant) over Parley's runtime."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from parley.providers.base import TextDelta, ToolCallDelta
from parley.providers.scripted import ScriptedProvider
from tests.conftest import Server, serve
from tests.sse import Frame


def call(name: str, arguments: dict[str, Any], index: int = 0) -> ToolCallDelta:
    return ToolCallDelta(index, f"call_{name}_{index}", name, json.dumps(arguments))


async def session(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/sessions")
    assert response.status_code == 200, response.text
    return str(response.json()["session_id"])


async def listen(
    client: httpx.AsyncClient,
    session_id: str,
    until: Callable[[list[Frame]], bool],
    *,
    say: str | None = None,
    headers: dict[str, str] | None = None,
) -> list[Frame]:
    """Read the session stream until ``until`` holds; ``say`` is posted once the stream is connected."""
    frames: list[Frame] = []
    posted: asyncio.Task[httpx.Response] | None = None
    async with aconnect_sse(client, "GET", f"/api/stream/{session_id}", headers=headers or {}) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if sse.event == "message" and not sse.data:
                continue  # a keep-alive ping
            frames.append(Frame(sse.id, sse.event, sse.data))
            if sse.event == "connection" and say is not None:
                posted = asyncio.create_task(
                    client.post(f"/api/chat/{session_id}/message", json={"message": say})
                )
            if until(frames):
                break
    if posted is not None:
        response = await posted
        assert response.status_code == 200
        assert response.json()["success"] is True
    return frames


def completions(n: int) -> Callable[[list[Frame]], bool]:
    return lambda frames: sum(f.event == "completion" for f in frames) >= n


async def test_health_and_sessions(server: Server) -> None:
    health = (await server.client.get("/health")).json()
    assert health["status"] == "healthy"
    session_id = await session(server.client)
    info = (await server.client.get(f"/api/sessions/{session_id}")).json()
    assert info["session_id"] == session_id
    assert info["context"]["cart_summary"]["total_items"] == 0
    missing = await server.client.get("/api/sessions/thr_nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert (await server.client.post("/api/chat/thr_nope/message", json={"message": "hi"})).status_code == 404
    empty = await server.client.post(f"/api/chat/{session_id}/message", json={"message": ""})
    assert empty.status_code == 422


async def test_the_stream_greets_then_streams_each_message(settings_for) -> None:
    provider = ScriptedProvider(
        turns=[
            [call("search_products", {"query": "wireless headphones"})],
            [TextDelta("Here are "), TextDelta("some headphones.")],
            [
                call("add_to_cart", {"product_id": "AUD-103"}, 0),
                call("search_products", {"query": "keyboard"}, 1),
            ],
            [TextDelta("Added. Keyboards too.")],
        ]
    )
    async with serve(settings_for(model="scripted:shop"), providers={"scripted:shop": provider}) as server:
        session_id = await session(server.client)
        frames = await listen(server.client, session_id, completions(2), say="Show me wireless headphones")
        events = [f.event for f in frames]
        assert events[0] == "connection"
        assert frames[0].json == {"status": "connected", "session_id": session_id}
        welcome = events.index("completion")
        assert set(events[1:welcome]) == {"text_chunk"}
        # A chunk carries the text produced since the last one (one or several model deltas).
        assert events[welcome + 1 : welcome + 3] == ["function_call", "function_result"]
        assert set(events[welcome + 3 : -1]) == {"text_chunk"}
        assert events[-1] == "completion"
        turn = frames[welcome + 1 :]
        assert turn[0].json["function"] == "search_products"
        assert turn[0].json["parameters"] == {"query": "wireless headphones"}
        result = turn[1].json["result"]
        assert result["success"] is True
        assert (
            result["data"]["products"][0]["name"].endswith(
                ("Headphones", "Headphones, White", "Headphones, Graphite")
            )
            or result["data"]["total"] > 0
        )
        chunks = [f.json for f in turn[2:-1]]
        assert "".join(c["content"] for c in chunks) == "Here are some headphones."
        assert all(c["partial"] for c in chunks)
        assert turn[-1].json["status"] == "complete"
        run_id = turn[-1].json["turn_id"]
        assert all(f.id.startswith(f"{run_id}:") for f in turn)

        # A multi-step request, then resuming the stream inside that run from Last-Event-ID.
        frames = await listen(
            server.client,
            session_id,
            completions(2),
            say="add the headphones to my cart and find me a keyboard",
        )
        turn = frames[[f.event for f in frames].index("completion") + 1 :]
        assert [f.json["function"] for f in turn if f.event == "function_call"] == [
            "add_to_cart",
            "search_products",
        ]
        assert all(f.json["result"]["success"] for f in turn if f.event == "function_result")
        cart = (await server.client.get(f"/api/cart/{session_id}")).json()
        assert [i["product_id"] for i in cart["items"]] == ["AUD-103"]

        resumed = await listen(
            server.client, session_id, completions(1), headers={"Last-Event-ID": turn[1].id}
        )
        assert resumed[0].event == "connection"
        assert [(f.id, f.event) for f in resumed[1:]] == [(f.id, f.event) for f in turn[2:]]


async def test_an_invented_id_in_chat_is_refused_on_the_stream(settings_for) -> None:
    provider = ScriptedProvider(
        turns=[
            [call("show_product_details", {"product_id": "PROD-001"})],
            [TextDelta("Please search first.")],
        ]
    )
    async with serve(settings_for(model="scripted:shop"), providers={"scripted:shop": provider}) as server:
        session_id = await session(server.client)
        frames = await listen(server.client, session_id, completions(2), say="tell me about PROD-001")
        result = next(f.json["result"] for f in frames if f.event == "function_result")
        assert result["success"] is False
        assert result["error"]["code"] == "INVALID_REFERENCE"
        assert "search first" in result["error"]["message"]


async def test_a_failed_run_says_error_then_completion(settings_for) -> None:
    from parley.providers.base import ProviderError

    provider = ScriptedProvider(turns=[[ProviderError("upstream is down")]])
    settings = settings_for(model="scripted:shop", fallback_message="The shop assistant is resting.")
    async with serve(settings, providers={"scripted:shop": provider}) as server:
        session_id = await session(server.client)
        frames = await listen(server.client, session_id, completions(2), say="hello")
        assert [f.event for f in frames][-2:] == ["error", "completion"]
        assert frames[-2].json["error"] == "The shop assistant is resting."
        assert frames[-1].json["status"] == "error"


async def test_functions_called_directly(server: Server) -> None:
    client = server.client
    session_id = await session(client)

    search = await client.post(
        "/api/functions/search_products",
        json={"session_id": session_id, "query": "mechanical keyboard", "limit": 3},
    )
    assert search.status_code == 200
    body = search.json()
    assert body["success"] is True
    assert body["context_updated"] is True
    assert body["data"]["total_results"] == len(body["data"]["products"]) == 3
    first = body["data"]["products"][0]
    assert {"id", "name", "price", "category", "in_stock", "rating"} <= set(first)

    details = (
        await client.post(
            "/api/functions/show_product_details", json={"session_id": session_id, "product_id": first["id"]}
        )
    ).json()
    assert details["success"] is True
    assert details["data"]["product"]["id"] == first["id"]
    assert details["data"]["recommendations"]
    assert details["validation"]["in_recent_search"] is True
    unseen = (
        await client.post(
            "/api/functions/show_product_details", json={"session_id": session_id, "product_id": "BKF-101"}
        )
    ).json()
    assert unseen["validation"]["in_recent_search"] is False  # a user may open any real product
    missing = (
        await client.post(
            "/api/functions/show_product_details", json={"session_id": session_id, "product_id": "NOPE-1"}
        )
    ).json()
    assert missing["success"] is False
    assert missing["error"]["code"] == "PRODUCT_NOT_FOUND"

    added = (
        await client.post(
            "/api/functions/add_to_cart",
            json={"session_id": session_id, "product_id": first["id"], "quantity": 2},
        )
    ).json()
    assert added["success"] is True
    assert added["data"]["cart_item"]["quantity"] == 2
    assert added["data"]["cart_summary"]["total_items"] == 2
    sold_out = (
        await client.post(
            "/api/functions/add_to_cart", json={"session_id": session_id, "product_id": "MOU-102"}
        )
    ).json()
    assert sold_out == {
        "success": False,
        "error": {"code": "OUT_OF_STOCK", "message": sold_out["error"]["message"]},
    }

    by_product = (
        await client.post(
            "/api/functions/get_recommendations", json={"session_id": session_id, "based_on": first["id"]}
        )
    ).json()
    assert by_product["data"]["recommendation_context"]["based_on_product"] == first["name"]
    by_category = (
        await client.post(
            "/api/functions/get_recommendations",
            json={"session_id": session_id, "based_on": "books", "max_results": 3},
        )
    ).json()
    assert {p["category"] for p in by_category["data"]["recommendations"]} == {"books"}
    nonsense = (
        await client.post(
            "/api/functions/get_recommendations", json={"session_id": session_id, "based_on": "spaceships"}
        )
    ).json()
    assert nonsense["error"]["code"] == "INVALID_REFERENCE"
    assert "books" in nonsense["error"]["details"]["valid_categories"]

    cart = (await client.get(f"/api/cart/{session_id}")).json()
    assert cart["success"] is True
    assert cart["items"][0]["product_id"] == first["id"]
    assert cart["summary"]["total_items"] == 2
    context = (await client.get(f"/api/sessions/{session_id}")).json()["context"]
    assert first["id"] in [p["id"] for p in context["recent_products"]]
    cleared = (await client.delete(f"/api/cart/{session_id}")).json()
    assert cleared["released_units"] == 2
    assert (await client.get(f"/api/cart/{session_id}")).json()["items"] == []


async def test_bad_function_requests_are_4xx_and_store_nothing(server: Server) -> None:
    client = server.client
    session_id = await session(client)
    cases = [
        ("search_products", {"session_id": session_id}),  # no query
        ("search_products", {"query": "lamp"}),  # no session
        ("add_to_cart", {"session_id": session_id, "product_id": "KEY-101", "quantity": 0}),
        ("get_recommendations", {"session_id": session_id, "based_on": "books", "max_results": 50}),
        ("add_to_cart", {"session_id": session_id, "product_id": "KEY-101", "coupon": "FREE"}),
    ]
    for name, body in cases:
        response = await client.post(f"/api/functions/{name}", json=body)
        assert response.status_code == 422, (name, body, response.text)
        assert response.json()["error"]["code"] == "invalid_request"
    other = await client.post(
        "/api/functions/add_to_cart", json={"session_id": "thr_nope", "product_id": "KEY-101"}
    )
    assert other.status_code == 404
    broken = await client.post(
        "/api/functions/add_to_cart", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400
    assert (await client.get(f"/api/cart/{session_id}")).json()["items"] == []
    assert (await client.get(f"/api/sessions/{session_id}")).json()["context"]["recent_products"] == []


async def test_products_a_user_searched_can_be_named_by_the_model(settings_for) -> None:
    provider = ScriptedProvider(
        turns=[[call("add_to_cart", {"product_id": "KEY-101"})], [TextDelta("Added.")]]
    )
    async with serve(settings_for(model="scripted:shop"), providers={"scripted:shop": provider}) as server:
        session_id = await session(server.client)
        await server.client.post(
            "/api/functions/search_products", json={"session_id": session_id, "query": "forge tkl keyboard"}
        )
        frames = await listen(server.client, session_id, completions(2), say="add the black one")
        result = next(f.json["result"] for f in frames if f.event == "function_result")
        assert result["success"] is True
        assert result["data"]["cart_item"]["product_id"] == "KEY-101"
