"""The Responses API (``/v1/responses``), driven by the official ``openai`` SDK as the only client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseStreamEvent

from parley.config import Settings
from parley.providers.base import Finish, ProviderError, TextDelta, ToolCallDelta
from parley.providers.fakes import FakeAnthropic, FakeOpenAI, Fault, Reply
from parley.providers.scripted import Delay, Hang, ScriptedProvider
from tests.conftest import Server, serve
from tests.identity import client_as, key_for
from tests.test_answers_attachments import NOTES

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


_clients: list[openai.AsyncOpenAI] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        client = _clients.pop()
        # A client whose connections belong to an event loop already closed has nothing to close.
        with contextlib.suppress(RuntimeError):
            await client.close()


async def sdk(server: Server, user: str = "sdk-user") -> openai.AsyncOpenAI:
    """The official SDK, with a Parley API key of ``user``'s."""
    key = await key_for(server, user)
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    _clients.append(client)
    return client


@asynccontextmanager
async def scripted(
    settings_for: Callable[..., Settings], provider: ScriptedProvider
) -> AsyncIterator[Server]:
    async with serve(settings_for(model="scripted:test"), providers={"scripted:test": provider}) as server:
        yield server


def slow(*words: str, pause: float = 0.05) -> list[Any]:
    """A provider turn that writes ``words`` with a pause before each."""
    steps: list[Any] = []
    for word in words:
        steps += [Delay(pause), TextDelta(word)]
    return steps


async def threads_of(server: Server, user: str = "sdk-user") -> list[dict[str, Any]]:
    """``user``'s threads, as the web UI lists them (native API)."""
    async with client_as(server, user) as http:
        data: list[dict[str, Any]] = (await http.get("/v1/threads")).json()["data"]
    return data


async def collect(stream: Any) -> list[ResponseStreamEvent]:
    return [event async for event in stream]


async def until(check: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_response_answers_and_is_an_accounted_run(server: Server) -> None:
    client = await sdk(server)
    response = await client.responses.create(model="general", input="hello over there")
    assert response.status == "completed"
    assert response.output_text == "hello over there"
    assert response.model == "general"
    assert response.usage is not None
    assert response.usage.output_tokens == 3
    assert response.usage.total_tokens == response.usage.input_tokens + 3
    extra = response.model_extra or {}
    assert extra["parley"]["cost_usd"] == 0.0  # the scripted provider is free
    assert extra["parley"]["run_id"] == response.id
    assert (await client.responses.retrieve(response.id)).output_text == "hello over there"
    # A response is a run in a thread: the web UI lists it like any other conversation.
    run = (await server.client.get(f"/v1/runs/{response.id}")).json()
    assert (run["status"], run["output"]) == ("completed", "hello over there")
    threads = await threads_of(server)
    assert [(t["id"], t["title"]) for t in threads] == [(run["thread_id"], "hello over there")]


async def test_a_stream_has_every_event_in_order_and_its_deltas_make_the_text(server: Server) -> None:
    client = await sdk(server)
    events = await collect(await client.responses.create(model="general", input="one two three", stream=True))
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1]
    assert final.type == "response.completed"
    assert deltas == final.response.output_text == "one two three"
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == deltas
    # The stored response says the same as its stream.
    assert (await client.responses.retrieve(final.response.id)).output_text == deltas


async def test_a_stream_that_pauses_past_the_keepalive_reads_cleanly_in_the_sdk(
    settings_for: Callable[..., Settings],
) -> None:
    # A model (or a tool) that is quiet for longer than the keepalive: the pings in between
    # must not reach the OpenAI SDK as events (a blank ping frame after a frame with an id
    # did: the SDK tried to parse an empty event and raised JSONDecodeError mid-answer).
    provider = ScriptedProvider(turns=[[TextDelta("before"), Delay(2.5), TextDelta(" after")]])
    async with scripted(settings_for, provider) as server:
        client = await sdk(server)
        events = await collect(await client.responses.create(model="general", input="wait", stream=True))
        final = events[-1]
        assert final.type == "response.completed"
        assert final.response.output_text == "before after"


async def test_a_background_response_is_polled_to_completion(settings_for: Callable[..., Settings]) -> None:
    provider = ScriptedProvider(turns=[slow("slow", " and", " steady", pause=0.1)])
    async with scripted(settings_for, provider) as server:
        client = await sdk(server)
        response = await client.responses.create(model="general", input="go", background=True)
        assert response.status in ("queued", "in_progress")
        assert response.background is True

        async def finished() -> bool:
            nonlocal response
            response = await client.responses.retrieve(response.id)
            return response.status not in ("queued", "in_progress")

        await until(finished)
        assert (response.status, response.output_text) == ("completed", "slow and steady")


async def test_a_cut_background_stream_resumes_exactly_where_it_stopped(
    settings_for: Callable[..., Settings],
) -> None:
    provider = ScriptedProvider(turns=[slow(*[f" w{i}" for i in range(12)], pause=0.03)])
    async with scripted(settings_for, provider) as server:
        client = await sdk(server)
        stream = await client.responses.create(model="general", input="go", background=True, stream=True)
        seen: list[ResponseStreamEvent] = []
        async for event in stream:
            seen.append(event)
            if event.type == "response.output_text.delta" and len(seen) >= 6:
                break
        await stream.close()  # the connection is cut; a background response goes on
        response_id = seen[0].response.id  # type: ignore[union-attr]
        resumed = await collect(
            await client.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number)
        )
        assert resumed[0].sequence_number == seen[-1].sequence_number + 1
        whole = await collect(await client.responses.retrieve(response_id, stream=True))
        # Cut + resumed is exactly the whole stream: nothing lost, nothing twice.
        assert [(e.sequence_number, e.type) for e in seen + resumed] == [
            (e.sequence_number, e.type) for e in whole
        ]
        text = "".join(e.delta for e in seen + resumed if e.type == "response.output_text.delta")
        assert whole[-1].type == "response.completed"
        assert text == whole[-1].response.output_text == " ".join(f"w{i}" for i in range(12))
        # Resuming after the last event gives nothing more; after a later one is refused.
        last = whole[-1].sequence_number
        assert (
            await collect(await client.responses.retrieve(response_id, stream=True, starting_after=last))
            == []
        )
        with pytest.raises(openai.BadRequestError, match="resume"):
            await client.responses.retrieve(response_id, stream=True, starting_after=last + 1)


async def test_a_stream_cut_on_one_server_resumes_on_another(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    provider = ScriptedProvider(turns=[slow(*[f"w{i} " for i in range(8)], pause=0.02)])
    async with scripted(settings_for, provider) as first:
        client = await sdk(first)
        stream = await client.responses.create(model="general", input="go", background=True, stream=True)
        seen: list[ResponseStreamEvent] = []
        async for event in stream:
            seen.append(event)
            if event.type == "response.output_text.delta":
                break
        await stream.close()
        response_id = seen[0].response.id  # type: ignore[union-attr]

        async def finished() -> bool:
            return (await client.responses.retrieve(response_id)).status == "completed"

        await until(finished)
        whole = await collect(await client.responses.retrieve(response_id, stream=True))
        # Another API process over the same database: same log, same events, same numbers.
        settings = settings_for(model="scripted:test", data_dir=tmp_path / "second")
        async with serve(settings, providers={"scripted:test": ScriptedProvider()}) as second:
            other = openai.AsyncOpenAI(base_url=f"{second.url}/v1", api_key=client.api_key, max_retries=0)
            _clients.append(other)
            resumed = await collect(
                await other.responses.retrieve(
                    response_id, stream=True, starting_after=seen[-1].sequence_number
                )
            )
    assert [e.model_dump() for e in seen + resumed] == [e.model_dump() for e in whole]


async def test_cancelling_a_background_response_closes_the_provider_within_a_second(
    settings_for: Callable[..., Settings],
) -> None:
    provider = ScriptedProvider(turns=[[TextDelta("thinking"), Hang()]])
    async with scripted(settings_for, provider) as server:
        client = await sdk(server)
        response = await client.responses.create(model="general", input="go", background=True)

        async def writing() -> bool:
            return (
                bool((await client.responses.retrieve(response.id)).output_text)
                and provider.open_streams == 1
            )

        await until(writing)
        started = time.monotonic()
        cancelled = await client.responses.cancel(response.id)
        while provider.open_streams and time.monotonic() - started < 1.0:
            await asyncio.sleep(0.01)
        assert provider.open_streams == 0
        assert time.monotonic() - started < 1.0
        assert cancelled.status == "cancelled"
        assert cancelled.output_text == "thinking"
        events = await collect(await client.responses.retrieve(response.id, stream=True))
        assert events[-1].type == "response.incomplete"
        assert events[-1].response.status == "cancelled"
        # Cancelling again changes nothing.
        assert (await client.responses.cancel(response.id)).status == "cancelled"


async def test_a_dropped_foreground_stream_cancels_its_run(settings_for: Callable[..., Settings]) -> None:
    provider = ScriptedProvider(turns=[[TextDelta("thinking"), Hang()]])
    async with scripted(settings_for, provider) as server:
        client = await sdk(server)
        stream = await client.responses.create(model="general", input="go", stream=True)
        first = None
        async for event in stream:
            first = first or event
            if event.type == "response.output_text.delta":
                break
        await stream.close()
        assert first is not None
        assert first.type == "response.created"

        async def ended() -> bool:
            return (await client.responses.retrieve(first.response.id)).status == "cancelled"  # type: ignore[union-attr]

        await until(ended)
        assert provider.open_streams == 0


async def test_previous_response_id_continues_the_chain_and_forks_it(
    settings_for: Callable[..., Settings],
) -> None:
    provider = ScriptedProvider(
        turns=[[TextDelta("Paris.")], [TextDelta("About 2 million.")], [TextDelta("Mostly French.")]]
    )
    async with scripted(settings_for, provider) as server:
        client = await sdk(server)
        first = await client.responses.create(
            model="general", input="Capital of France?", instructions="Answer in one word."
        )
        assert first.instructions == "Answer in one word."
        assert "Answer in one word." in provider.requests[-1].messages[0].content
        second = await client.responses.create(
            model="general", input="How many people live there?", previous_response_id=first.id
        )
        assert second.previous_response_id == first.id
        sent = [(m.role, m.content) for m in provider.requests[-1].messages if m.role != "system"]
        assert sent == [
            ("user", "Capital of France?"),
            ("assistant", "Paris."),
            ("user", "How many people live there?"),
        ]
        # Instructions are the response's own: the next one does not carry them.
        assert all("Answer in one word." not in m.content for m in provider.requests[-1].messages)
        # Branching from the first response again leaves the second turn out.
        third = await client.responses.create(
            model="general", input="What language do they speak?", previous_response_id=first.id
        )
        sent = [(m.role, m.content) for m in provider.requests[-1].messages if m.role != "system"]
        assert sent == [
            ("user", "Capital of France?"),
            ("assistant", "Paris."),
            ("user", "What language do they speak?"),
        ]
        assert third.output_text == "Mostly French."
        threads = {t["id"] for t in await threads_of(server)}
        assert len(threads) == 2  # the chain, and its branch


async def test_client_function_tools_round_trip(settings_for: Callable[..., Settings]) -> None:
    provider = ScriptedProvider(
        turns=[
            [ToolCallDelta(0, "call_1", "get_weather", '{"city": '), ToolCallDelta(0, arguments='"Oslo"}')],
            [TextDelta("It is sunny in Oslo.")],
        ]
    )
    async with scripted(settings_for, provider) as server:
        client = await sdk(server)
        first = await client.responses.create(
            model="general",
            input="Weather in Oslo?",
            tools=[WEATHER],
            tool_choice="auto",  # type: ignore[list-item]
        )
        sent = provider.requests[-1]
        assert ([t.name for t in sent.tools], sent.tool_choice) == (["get_weather"], "auto")
        calls = [item for item in first.output if item.type == "function_call"]
        assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
            ("call_1", "get_weather", {"city": "Oslo"})
        ]
        assert first.tools[0].name == "get_weather"  # type: ignore[union-attr]
        second = await client.responses.create(
            model="general",
            previous_response_id=first.id,
            tools=[WEATHER],  # type: ignore[list-item]
            input=[{"type": "function_call_output", "call_id": "call_1", "output": '{"sky": "sunny"}'}],
        )
        assert second.output_text == "It is sunny in Oslo."
        history = provider.requests[-1].messages
        assert [m.role for m in history][-3:] == ["user", "assistant", "tool"]
        assert history[-2].tool_calls[0].name == "get_weather"
        assert (history[-1].tool_call_id, history[-1].content) == ("call_1", '{"sky": "sunny"}')


async def test_streamed_function_calls(settings_for: Callable[..., Settings]) -> None:
    provider = ScriptedProvider(
        turns=[[TextDelta("Let me look."), ToolCallDelta(0, "call_9", "get_weather", '{"city": "Rome"}')]]
    )
    async with scripted(settings_for, provider) as server:
        client = await sdk(server)
        events = await collect(
            await client.responses.create(
                model="general",
                input="Rome?",
                tools=[WEATHER],  # type: ignore[list-item]
                tool_choice={"type": "function", "name": "get_weather"},
                stream=True,
            )
        )
        assert provider.requests[-1].tool_choice == "get_weather"
        done = [e for e in events if e.type == "response.function_call_arguments.done"]
        assert [(e.name, e.arguments) for e in done] == [("get_weather", '{"city": "Rome"}')]
        deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
        assert "".join(deltas) == '{"city": "Rome"}'
        final = events[-1]
        assert final.type == "response.completed"
        assert [item.type for item in final.response.output] == ["message", "function_call"]
        assert final.response.output_text == "Let me look."


async def test_input_items_are_listed_and_a_deleted_response_is_gone(server: Server) -> None:
    client = await sdk(server)
    response = await client.responses.create(
        model="general",
        input=[
            {"role": "developer", "content": "Echo the user."},
            {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
            {"role": "assistant", "content": "first"},
            {"role": "user", "content": "second words"},
        ],
    )
    assert response.output_text == "second words"
    items = await client.responses.input_items.list(response.id, order="asc")
    assert [(i.role, i.content[0].text) for i in items.data] == [  # type: ignore[union-attr]
        ("system", "Echo the user."),
        ("user", "first"),
        ("assistant", "first"),
        ("user", "second words"),
    ]
    newest = await client.responses.input_items.list(response.id, limit=1)
    assert newest.data[0].content[0].text == "second words"  # type: ignore[union-attr]
    assert newest.has_more
    older = await client.responses.input_items.list(response.id, limit=2, after=newest.data[0].id)
    assert [i.role for i in older.data] == ["assistant", "user"]  # type: ignore[union-attr]
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)
    assert await threads_of(server) == []


async def test_another_users_responses_and_conversations_are_404(server: Server) -> None:
    alice, bob = await sdk(server, "alice"), await sdk(server, "bob")
    response = await alice.responses.create(model="general", input="mine", background=True)
    conversation = await alice.conversations.create(metadata={"owner": "alice"})
    attempts = [
        bob.responses.retrieve(response.id),
        bob.responses.cancel(response.id),
        bob.responses.delete(response.id),
        bob.responses.input_items.list(response.id),
        bob.responses.create(model="general", input="x", previous_response_id=response.id),
        bob.conversations.retrieve(conversation.id),
        bob.conversations.update(conversation.id, metadata={"owner": "bob"}),
        bob.conversations.delete(conversation.id),
        bob.conversations.items.list(conversation.id),
        bob.conversations.items.create(conversation.id, items=[{"role": "user", "content": "hi"}]),
        bob.responses.create(model="general", input="x", conversation=conversation.id),
    ]
    for attempt in attempts:
        with pytest.raises(openai.NotFoundError):
            await attempt
    with pytest.raises(openai.NotFoundError):
        await bob.responses.retrieve(response.id, stream=True)
    assert (await alice.conversations.retrieve(conversation.id)).metadata == {"owner": "alice"}
    assert (await alice.responses.retrieve(response.id)).id == response.id


async def test_an_idempotency_key_gives_the_first_response(server: Server) -> None:
    client = await sdk(server)
    headers = {"Idempotency-Key": "order-42"}
    first = await client.responses.create(model="general", input="just once", extra_headers=headers)
    again = await client.responses.create(model="general", input="just once", extra_headers=headers)
    assert again.id == first.id
    assert again.output_text == "just once"
    with pytest.raises(openai.UnprocessableEntityError, match="Idempotency-Key"):
        await client.responses.create(model="general", input="something else", extra_headers=headers)
    assert len(await threads_of(server)) == 1


async def test_store_false_leaves_nothing_behind(server: Server) -> None:
    client = await sdk(server)
    response = await client.responses.create(model="general", input="forget me", store=False)
    assert (response.output_text, response.store) == ("forget me", False)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)
    events = await collect(
        await client.responses.create(model="general", input="me too", store=False, stream=True)
    )
    assert events[-1].type == "response.completed"
    assert await threads_of(server) == []
    with pytest.raises(openai.BadRequestError, match="store"):
        await client.responses.create(model="general", input="x", store=False, background=True)
    # Going on from a stored response without storing: the chain is left as it was.
    kept = await client.responses.create(model="general", input="keep me")
    unstored = await client.responses.create(
        model="general", input="and forget this", previous_response_id=kept.id, store=False
    )
    assert unstored.output_text == "and forget this"
    assert [t["title"] for t in await threads_of(server)] == ["keep me"]
    items = await client.responses.input_items.list(kept.id)
    assert [i.content[0].text for i in items.data] == ["keep me"]  # type: ignore[union-attr]


async def test_sampling_format_and_length_reach_the_provider(settings_for: Callable[..., Settings]) -> None:
    provider = ScriptedProvider(turns=[[TextDelta('{"ok": tr'), Finish("length")]])
    async with scripted(settings_for, provider) as server:
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
        response = await (await sdk(server)).responses.create(
            model="general",
            input="ok?",
            max_output_tokens=7,
            temperature=0.1,
            text={"format": {"type": "json_schema", "name": "ok", "schema": schema}},
            metadata={"ticket": "T-1"},
        )
        sent = provider.requests[-1]
        assert (sent.max_tokens, sent.temperature, sent.response_schema) == (7, 0.1, schema)
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.output_text == '{"ok": tr'
        assert response.metadata == {"ticket": "T-1"}
        assert response.text is not None
        assert response.text.format.type == "json_schema"


async def test_a_failed_run_is_a_failed_response(settings_for: Callable[..., Settings]) -> None:
    provider = ScriptedProvider(turns=[[ProviderError("the model refused", status=400)]])
    async with scripted(settings_for, provider) as server:
        client = await sdk(server)
        response = await client.responses.create(model="general", input="x")
        assert response.status == "failed"
        assert response.error is not None
        assert response.error.code == "server_error"
        assert response.error.message  # the friendly fallback; Parley's own error beside it:
        detail = (response.model_extra or {})["parley"]["error"]
        assert detail["providers"][0]["message"] == "the model refused"
        events = await collect(await client.responses.create(model="general", input="y", stream=True))
        assert events[-1].type == "response.failed"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"input": []}, openai.UnprocessableEntityError),
        ({"input": [{"role": "assistant", "content": "I speak last"}]}, openai.UnprocessableEntityError),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}
                ]
            },
            openai.UnprocessableEntityError,
        ),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, openai.UnprocessableEntityError),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, openai.UnprocessableEntityError),
        ({"input": "hi", "conversation": "thr_x", "previous_response_id": "run_x"}, openai.BadRequestError),
        ({"input": "hi", "metadata": {f"k{i}": "v" for i in range(17)}}, openai.UnprocessableEntityError),
        ({"input": "hi", "model": "gpt-5"}, openai.NotFoundError),
        ({"input": "hi", "previous_response_id": "run_unknown"}, openai.NotFoundError),
    ],
    ids=[
        "empty",
        "assistant-last",
        "image",
        "hosted-tool",
        "item-reference",
        "conversation-and-previous",
        "metadata-too-big",
        "unknown-model",
        "unknown-previous",
    ],
)
async def test_bad_requests_are_refused_and_store_nothing(
    server: Server, body: dict[str, Any], error: type[Exception]
) -> None:
    client = await sdk(server)
    with pytest.raises(error):
        await client.responses.create(**{"model": "general", **body})
    assert await threads_of(server) == []


async def test_a_failover_mid_stream_is_one_answer_with_the_switch_in_parley_extras(
    settings_for: Callable[..., Settings],
) -> None:
    async with FakeOpenAI() as primary, FakeAnthropic() as backup:
        primary.enqueue(Reply("The quick brown fox", fault=Fault("drop", after=2)))
        backup.enqueue(Reply(" brown fox jumps over the dog."))
        route = (
            f"openai:gpt-4o-mini?base_url={primary.url}/v1,anthropic:claude-3-5-haiku?base_url={backup.url}"
        )
        async with serve(settings_for(model=route, provider_attempts=1)) as server:
            client = await sdk(server)
            events = await collect(
                await client.responses.create(model="general", input="The fox?", stream=True)
            )
            final = events[-1]
            assert final.type == "response.completed"
            deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
            assert deltas == final.response.output_text == "The quick brown fox jumps over the dog."
            extras = (final.response.model_extra or {})["parley"]
            [switch] = extras["fallbacks"]
            assert switch["from"].startswith("openai:gpt-4o-mini")
            assert switch["to"].startswith("anthropic:claude-3-5-haiku")
            assert extras["cost_usd"] > 0  # the backup's price


async def test_the_assistants_own_tools_stay_in_parley_extras(settings_for: Callable[..., Settings]) -> None:
    def call(name: str, arguments: dict[str, Any], ident: str) -> ToolCallDelta:
        return ToolCallDelta(0, ident, name, json.dumps(arguments))

    provider = ScriptedProvider(
        turns=[
            [call("search_products", {"query": "mechanical keyboard"}, "c1")],
            [call("add_to_cart", {"product_id": "KB-9999"}, "c2")],  # never shown: refused
            [TextDelta("Here are some keyboards.")],
        ]
    )
    async with serve(settings_for(model="scripted:shop"), providers={"scripted:shop": provider}) as server:
        client = await sdk(server)
        events = await collect(
            await client.responses.create(model="shop", input="show me mechanical keyboards", stream=True)
        )
        final = events[-1]
        assert final.type == "response.completed"
        # The server ran its tools: no function_call items for the client to answer.
        assert [item.type for item in final.response.output] == ["message"]
        assert "function_call" not in {e.type.split(".")[1] for e in events}
        extras = (final.response.model_extra or {})["parley"]
        assert [c["name"] for c in extras["tool_calls"]] == ["search_products", "add_to_cart"]
        [rejection] = extras["tool_rejections"]
        assert "KB-9999" in rejection["reason"]
        assert extras["tool_results"][0]["id"] == "c1"


async def test_an_input_file_part_attaches_an_uploaded_file(server: Server) -> None:
    async with client_as(server, "sdk-user") as raw:
        uploaded = await raw.post("/v1/files", files={"file": ("heron-notes.txt", NOTES.encode())})
        file_id = uploaded.json()["id"]
    client = await sdk(server)
    question = {"type": "input_text", "text": "tl;dr"}
    response = await client.responses.create(
        model="general",
        input=[{"role": "user", "content": [question, {"type": "input_file", "file_id": file_id}]}],
    )
    # The default echo model answers from the attached file, and cites it by name.
    assert "Dana Okafor" in response.output_text
    assert "heron-notes.txt" in response.output_text
    async with client_as(server, "bob") as raw:
        bobs = (await raw.post("/v1/files", files={"file": ("b.txt", b"Bob's words.")})).json()["id"]
    for other in (bobs, "file_unknown"):
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(
                model="general",
                input=[{"role": "user", "content": [question, {"type": "input_file", "file_id": other}]}],
            )
    assert len(await threads_of(server)) == 1


def plain(value: Any) -> Any:
    """A dumped response less what the SDK's helper adds (``parsed``...) and Parley's extras."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k not in ("parsed", "parsed_arguments", "parley")}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


async def test_the_sdks_stream_helper_assembles_the_same_response(
    settings_for: Callable[..., Settings],
) -> None:
    provider = ScriptedProvider(
        turns=[
            [
                TextDelta("Let me"),
                TextDelta(" look."),
                ToolCallDelta(0, "call_3", "get_weather", '{"city": "Oslo"}'),
            ]
        ]
    )
    async with scripted(settings_for, provider) as server:
        client = await sdk(server)
        async with client.responses.stream(model="general", input="Oslo?", tools=[WEATHER]) as stream:  # type: ignore[list-item]
            texts = [event.delta async for event in stream if event.type == "response.output_text.delta"]
            assembled = await stream.get_final_response()
        stored = await client.responses.retrieve(assembled.id)
        # What the SDK built from the events is what the server says the response is.
        assert plain(assembled.model_dump()) == plain(stored.model_dump())
        assert "".join(texts) == assembled.output_text == "Let me look."
        call = assembled.output[1]
        assert call.type == "function_call"
        assert (call.name, call.arguments) == ("get_weather", '{"city": "Oslo"}')
