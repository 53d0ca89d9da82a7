"""The OpenAI-compatible endpoints, driven by the official ``openai`` SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import openai
import pytest

from parley.config import Settings
from parley.providers.base import ProviderError, TextDelta, ToolCallDelta
from parley.providers.scripted import Hang, ScriptedProvider
from tests.conftest import Server, serve
from tests.identity import key_for

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


async def sdk(server: Server) -> openai.AsyncOpenAI:
    """The official SDK, with a Parley API key of its own user."""
    key = await key_for(server, "sdk-user")
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


@asynccontextmanager
async def scripted(
    settings_for: Callable[..., Settings], provider: ScriptedProvider
) -> AsyncIterator[Server]:
    async with serve(settings_for(model="scripted:test"), providers={"scripted:test": provider}) as server:
        yield server


async def test_models_are_the_assistants(server: Server) -> None:
    client = await sdk(server)
    models = await client.models.list()
    assistants = (await server.client.get("/v1/assistants")).json()["data"]
    # The assistants, then the embedding model of /v1/embeddings.
    assert [m.id for m in models.data] == [a["name"] for a in assistants] + ["all-minilm-l6-v2"]
    assert "general" in [m.id for m in models.data]
    assert (await client.models.retrieve("general")).owned_by == "parley"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-4o")


async def test_a_completion_answers_and_is_accounted_for(server: Server) -> None:
    client = await sdk(server)
    completion = await client.chat.completions.create(
        model="general", messages=[{"role": "user", "content": "hello over there"}]
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "hello over there"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 3
    extra = completion.model_extra or {}
    assert extra["parley"]["cost_usd"] == 0.0  # the scripted provider is free
    run = (await server.client.get(f"/v1/runs/{extra['parley']['run_id']}")).json()
    assert run["status"] == "completed"
    assert run["output"] == "hello over there"
    messages = (await server.client.get(f"/v1/threads/{run['thread_id']}/messages")).json()["data"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "hello over there"),
        ("assistant", "hello over there"),
    ]


async def test_a_stream_arrives_in_chunks_with_usage_last(server: Server) -> None:
    client = await sdk(server)
    stream = await client.chat.completions.create(
        model="general",
        messages=[{"role": "system", "content": "Echo."}, {"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert len({c.id for c in chunks}) == 1


async def test_client_tools_come_back_as_tool_calls(settings_for: Callable[..., Settings]) -> None:
    provider = ScriptedProvider(
        turns=[
            [ToolCallDelta(0, "call_1", "get_weather", '{"city": '), ToolCallDelta(0, arguments='"Oslo"}')],
            [TextDelta("It is sunny in Oslo.")],
        ]
    )
    async with scripted(settings_for, provider) as server:
        client = await sdk(server)
        question = {"role": "user", "content": "Weather in Oslo?"}
        first = await client.chat.completions.create(
            model="general", messages=[question], tools=[WEATHER], tool_choice="auto"
        )
        sent = provider.requests[-1]
        assert [t.name for t in sent.tools] == ["get_weather"]
        assert sent.tool_choice == "auto"
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        call = choice.message.tool_calls[0]
        assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
            "call_1",
            "get_weather",
            {"city": "Oslo"},
        )

        second = await client.chat.completions.create(
            model="general",
            tools=[WEATHER],
            messages=[
                question,
                choice.message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'},
            ],
        )
        assert second.choices[0].message.content == "It is sunny in Oslo."
        history = provider.requests[-1].messages
        assert [m.role for m in history][-3:] == ["user", "assistant", "tool"]
        assert history[-2].tool_calls[0].name == "get_weather"
        assert history[-1].tool_call_id == "call_1"
        assert history[-1].content == '{"sky": "sunny"}'


async def test_streamed_tool_calls(settings_for: Callable[..., Settings]) -> None:
    provider = ScriptedProvider(turns=[[ToolCallDelta(0, "call_9", "get_weather", '{"city": "Rome"}')]])
    async with scripted(settings_for, provider) as server:
        stream = await (await sdk(server)).chat.completions.create(
            model="general", messages=[{"role": "user", "content": "Rome?"}], tools=[WEATHER], stream=True
        )
        chunks = [c async for c in stream]
        calls = [t for c in chunks for t in (c.choices[0].delta.tool_calls or [])]
        assert [(t.id, t.function.name, t.function.arguments) for t in calls] == [
            ("call_9", "get_weather", '{"city": "Rome"}')
        ]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_sampling_and_format_reach_the_provider(settings_for: Callable[..., Settings]) -> None:
    provider = ScriptedProvider(turns=[[TextDelta('{"ok": true}')]])
    async with scripted(settings_for, provider) as server:
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
        await (await sdk(server)).chat.completions.create(
            model="general",
            messages=[{"role": "user", "content": "ok?"}],
            max_tokens=7,
            temperature=0.1,
            response_format={"type": "json_schema", "json_schema": {"name": "ok", "schema": schema}},
        )
        sent = provider.requests[-1]
        assert (sent.max_tokens, sent.temperature, sent.response_schema) == (7, 0.1, schema)


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "assistant", "content": "I speak last"}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
        [{"role": "tool", "content": "orphan result"}],
        [{"role": "wizard", "content": "hi"}],
    ],
    ids=["empty", "assistant-last", "image", "tool-without-id", "bad-role"],
)
async def test_bad_requests_are_refused_and_store_nothing(
    server: Server, messages: list[dict[str, object]]
) -> None:
    with pytest.raises(openai.UnprocessableEntityError):
        await (await sdk(server)).chat.completions.create(model="general", messages=messages)  # type: ignore[arg-type]
    assert (await server.client.get("/v1/threads")).json()["data"] == []


async def test_an_unknown_model_is_a_404(server: Server) -> None:
    with pytest.raises(openai.NotFoundError, match="assistants"):
        await (await sdk(server)).chat.completions.create(
            model="gpt-5", messages=[{"role": "user", "content": "hi"}]
        )


async def test_a_failed_run_is_an_api_error(settings_for: Callable[..., Settings]) -> None:
    provider = ScriptedProvider(turns=[[ProviderError("the model refused", status=400)]])
    async with scripted(settings_for, provider) as server:
        with pytest.raises(openai.APIStatusError) as caught:
            await (await sdk(server)).chat.completions.create(
                model="general", messages=[{"role": "user", "content": "x"}]
            )
        assert caught.value.status_code == 502


async def test_a_stream_the_client_drops_cancels_the_run(settings_for: Callable[..., Settings]) -> None:
    provider = ScriptedProvider(turns=[[TextDelta("thinking"), Hang()]])
    async with scripted(settings_for, provider) as server:
        stream = await (await sdk(server)).chat.completions.create(
            model="general", messages=[{"role": "user", "content": "go"}], stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        run_id = stream.response.headers["x-run-id"]
        await stream.close()
        for _ in range(100):
            run = (await server.client.get(f"/v1/runs/{run_id}")).json()
            if run["status"] != "running":
                break
            await asyncio.sleep(0.05)
        assert run["status"] == "cancelled"
        assert provider.open_streams == 0


async def test_a_json_schema_format_without_a_schema_is_refused(server: Server) -> None:
    with pytest.raises(openai.UnprocessableEntityError, match="schema"):
        await (await sdk(server)).chat.completions.create(
            model="general",
            messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x"}},  # type: ignore[typeddict-item]
        )
    assert (await server.client.get("/v1/threads")).json()["data"] == []
