"""The Responses wire format, read as raw HTTP: every streamed event, and every object, must
validate against the official SDK's own pydantic models (none may fail to parse)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from openai.types import CreateEmbeddingResponse
from openai.types.conversations import Conversation, ConversationItem
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import Settings
from parley.providers.base import Finish, ProviderError, TextDelta, ToolCallDelta
from parley.providers.scripted import Delay, Hang, ScriptedProvider
from tests.conftest import serve
from tests.identity import client_as
from tests.test_responses import WEATHER, scripted

EVENT = TypeAdapter(ResponseStreamEvent)
ITEM = TypeAdapter(ResponseItem)
CONVERSATION_ITEM = TypeAdapter(ConversationItem)


async def events_of(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> list[Any]:
    """The stream's events, each validated strictly by the SDK's model of its type."""
    parsed = []
    async with aconnect_sse(http, method, url, **kwargs) as source:
        assert source.response.status_code == 200, await source.response.aread()
        async for sse in source.aiter_sse():
            event = EVENT.validate_json(sse.data, strict=False)
            assert sse.event == event.type
            assert sse.id == str(event.sequence_number)
            parsed.append(event)
    assert [e.sequence_number for e in parsed] == sorted({e.sequence_number for e in parsed})
    return parsed


async def test_every_event_and_object_parses_with_the_sdk_models(
    settings_for: Callable[..., Settings],
) -> None:
    provider = ScriptedProvider(
        turns=[
            [
                TextDelta("Checking"),
                TextDelta(" now."),
                ToolCallDelta(0, "call_1", "get_weather", '{"city": "Oslo"}'),
            ],
            [TextDelta("cut he"), Finish("length")],
            [ProviderError("the model refused", status=400)],
            [Delay(0.05), TextDelta("thinking"), Hang()],
            [TextDelta("ok")],
        ]
    )
    async with scripted(settings_for, provider) as server, client_as(server, "wire") as http:
        body = {"model": "general", "input": "Weather in Oslo?", "tools": [WEATHER], "stream": True}
        tools = await events_of(http, "POST", "/v1/responses", json=body)
        cut = await events_of(
            http, "POST", "/v1/responses", json={"model": "general", "input": "x", "stream": True}
        )
        failed = await events_of(
            http, "POST", "/v1/responses", json={"model": "general", "input": "y", "stream": True}
        )
        background = (
            await http.post("/v1/responses", json={"model": "general", "input": "z", "background": True})
        ).json()
        Response.model_validate(background)
        while not (await http.get(f"/v1/responses/{background['id']}")).json()["output"]:
            await asyncio.sleep(0.02)
        Response.model_validate((await http.post(f"/v1/responses/{background['id']}/cancel")).json())
        cancelled = await events_of(
            http, "GET", f"/v1/responses/{background['id']}", params={"stream": "true"}
        )
        resumed = await events_of(
            http, "GET", f"/v1/responses/{background['id']}", params={"stream": "true", "starting_after": "2"}
        )
        assert [e.sequence_number for e in resumed] == [e.sequence_number for e in cancelled[3:]]
        by_header = await events_of(
            http,
            "GET",
            f"/v1/responses/{background['id']}",
            params={"stream": "true"},
            headers={"Last-Event-ID": "2"},
        )
        assert by_header == resumed

        assert {e.type for e in tools} >= {
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.completed",
        }
        assert (cut[-1].type, cut[-1].response.status) == ("response.incomplete", "incomplete")
        assert (failed[-1].type, failed[-1].response.status) == ("response.failed", "failed")
        assert (cancelled[-1].type, cancelled[-1].response.status) == ("response.incomplete", "cancelled")

        # The objects: a response, its input items, a conversation and its items.
        response_id = tools[-1].response.id
        Response.model_validate((await http.get(f"/v1/responses/{response_id}")).json())
        for item in (await http.get(f"/v1/responses/{response_id}/input_items")).json()["data"]:
            ITEM.validate_python(item)
        conversation = (
            await http.post("/v1/conversations", json={"items": [{"role": "user", "content": "hi"}]})
        ).json()
        Conversation.model_validate(conversation)
        done = await http.post(
            "/v1/responses", json={"model": "general", "input": "go on", "conversation": conversation["id"]}
        )
        Response.model_validate(done.json())
        await http.post(
            f"/v1/conversations/{conversation['id']}/items",
            json={
                "items": [
                    {"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c", "output": "sunny"},
                ]
            },
        )
        items = (await http.get(f"/v1/conversations/{conversation['id']}/items")).json()["data"]
        assert {i["type"] for i in items} == {"message", "function_call", "function_call_output"}
        for item in items:
            CONVERSATION_ITEM.validate_python(item)


async def test_embeddings_parse_with_the_sdk_model(settings_for: Callable[..., Settings]) -> None:
    async with serve(settings_for(embeddings="hash")) as server, client_as(server, "wire") as http:
        answer = await http.post("/v1/embeddings", json={"model": "hash-256", "input": ["a", "b"]})
        parsed = CreateEmbeddingResponse.model_validate(answer.json())
        assert [len(d.embedding) for d in parsed.data] == [256, 256]
        refused = await http.post("/v1/embeddings", json={"model": "hash-256", "input": [[1, 2, 3]]})
        assert refused.status_code == 422
        assert json.loads(refused.text)["error"]["code"] == "invalid_request"
