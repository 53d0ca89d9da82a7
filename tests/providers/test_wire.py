"""The OpenAI, Anthropic and Gemini providers: official SDKs against fake servers on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from parley.config import Settings
from parley.providers import anthropic, gemini, openai
from parley.providers.base import (
    ChatMessage,
    Delta,
    Finish,
    Provider,
    ProviderError,
    ProviderRequest,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from parley.providers.fakes import FakeAnthropic, FakeGemini, FakeOpenAI, FakeServer, Fault, Reply

SEARCH = ToolSpec(
    "search", "Search the catalog.", {"type": "object", "properties": {"q": {"type": "string"}}}
)
REQUEST = ProviderRequest(
    [ChatMessage("system", "Be brief."), ChatMessage("user", "Find shoes")], tools=[SEARCH], max_tokens=50
)


@dataclass
class Dialect:
    name: str
    server: type[FakeServer]
    make: Callable[[str], Provider]


def _settings() -> Settings:
    return Settings(provider_timeout_seconds=0.5, provider_first_token_timeout_seconds=0.5)


DIALECTS = [
    Dialect("openai", FakeOpenAI, lambda url: openai.create(f"gpt-4o-mini?base_url={url}/v1", _settings())),
    Dialect(
        "anthropic",
        FakeAnthropic,
        lambda url: anthropic.create(f"claude-3-5-haiku?base_url={url}", _settings()),
    ),
    Dialect("gemini", FakeGemini, lambda url: gemini.create(f"gemini-2.0-flash?base_url={url}", _settings())),
]


@pytest.fixture(params=DIALECTS, ids=lambda d: d.name)
async def wire(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeServer, Provider]]:
    dialect: Dialect = request.param
    async with dialect.server() as server:
        provider = dialect.make(server.url)
        try:
            yield server, provider
        finally:
            await provider.aclose()


async def collect(provider: Provider, request: ProviderRequest = REQUEST) -> list[Delta]:
    return [delta async for delta in provider.stream(request)]


async def test_text_tool_calls_usage_and_finish(wire: tuple[FakeServer, Provider]) -> None:
    server, provider = wire
    server.enqueue(Reply("Let me look that up.", tool_calls=[("search", {"q": "running shoes"})]))
    deltas = await collect(provider)
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == "Let me look that up."
    fragments = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert {f.index for f in fragments} == {0}
    assert [f.name for f in fragments if f.name] == ["search"]
    assert fragments[0].id
    assert json.loads("".join(f.arguments for f in fragments)) == {"q": "running shoes"}
    usage = [d for d in deltas if isinstance(d, Usage)]
    assert len(usage) == 1
    assert usage[0].input_tokens > 0
    assert usage[0].output_tokens == 6
    assert deltas[-1] == Finish("tool_calls")


async def test_a_plain_answer_finishes_with_stop(wire: tuple[FakeServer, Provider]) -> None:
    server, provider = wire
    server.enqueue(Reply("Hello there"))
    deltas = await collect(provider)
    assert [d.text for d in deltas if isinstance(d, TextDelta)] == ["Hello", " there"]
    assert deltas[-1] == Finish("stop")


async def test_the_request_carries_system_tools_and_limits(wire: tuple[FakeServer, Provider]) -> None:
    server, provider = wire
    await collect(provider)
    sent = json.dumps(server.requests[-1].body)
    assert "Be brief." in sent
    assert "Find shoes" in sent
    assert "search" in sent
    assert "Search the catalog." in sent
    assert "50" in sent


async def test_tool_results_go_back_in_the_dialect(wire: tuple[FakeServer, Provider]) -> None:
    server, provider = wire
    request = ProviderRequest(
        [
            ChatMessage("user", "Find shoes"),
            ChatMessage("assistant", "", tool_calls=[ToolCall("call_1", "search", '{"q": "shoes"}')]),
            ChatMessage(
                "tool", '[{"id": "p1", "name": "Trail runner"}]', tool_call_id="call_1", name="search"
            ),
        ],
        tools=[SEARCH],
    )
    await collect(provider, request)
    sent = json.dumps(server.requests[-1].body)
    assert "Trail runner" in sent
    assert "call_1" in sent or server.__class__ is FakeGemini  # Gemini matches results by name


async def test_a_continued_reply_sends_the_text_so_far(wire: tuple[FakeServer, Provider]) -> None:
    server, provider = wire
    server.enqueue(Reply(" fox jumps."))
    request = ProviderRequest([ChatMessage("user", "Finish the sentence")], prefix="The quick brown")
    deltas = await collect(provider, request)
    assert "The quick brown" in json.dumps(server.requests[-1].body)
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == " fox jumps."


@pytest.mark.parametrize(
    ("fault", "code", "retry_after"),
    [
        (Fault("rate_limit", retry_after=7), "rate_limited", 7.0),
        (Fault("server_error"), "provider_unavailable", None),
        (Fault("server_error", status=503), "provider_unavailable", None),
        (Fault("hang"), "provider_unreachable", None),
        (Fault("hang", after=1), None, None),
        (Fault("drop", after=1), "provider_stream_broken", None),
        (Fault("malformed", after=1), "provider_stream_broken", None),
    ],
    ids=["429", "500", "503", "hang", "hang-mid-stream", "drop", "malformed"],
)
async def test_faults_are_retryable_provider_errors(
    wire: tuple[FakeServer, Provider], fault: Fault, code: str | None, retry_after: float | None
) -> None:
    server, provider = wire
    server.enqueue(Reply("one two three", fault=fault))
    streamed: list[Delta] = []
    started = time.monotonic()

    async def consume() -> None:
        async for delta in provider.stream(REQUEST):
            streamed.append(delta)

    with pytest.raises(ProviderError) as caught:
        await consume()
    assert caught.value.retryable
    assert caught.value.retry_after == retry_after
    if code is not None:
        assert caught.value.code == code
    assert time.monotonic() - started < 3  # a hang ends at the provider timeout (0.5 s)
    assert streamed == ([TextDelta("one")] if fault.after else [])


async def test_a_client_error_is_not_retryable(wire: tuple[FakeServer, Provider]) -> None:
    server, provider = wire
    server.enqueue(Reply(fault=Fault("server_error", status=400)))
    with pytest.raises(ProviderError) as caught:
        await collect(provider)
    assert not caught.value.retryable
    assert caught.value.status == 400


async def test_closing_the_stream_closes_the_upstream_connection(wire: tuple[FakeServer, Provider]) -> None:
    server, provider = wire
    server.enqueue(Reply("a b c d e f g h", delay=0.2))
    stream = provider.stream(REQUEST)
    assert await anext(stream) == TextDelta("a")
    assert server.open_connections == 1
    closed_at = time.monotonic()
    await stream.aclose()  # type: ignore[attr-defined]
    connection = await server.wait_closed(1.0)
    assert connection.closed_at is not None
    assert connection.closed_at - closed_at < 0.5


def test_a_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ProviderError, match="OPENAI_API_KEY"):
        openai.create("gpt-4o-mini", Settings())
    monkeypatch.setenv("MY_KEY", "sk-test")
    assert openai.create("gpt-4o-mini?key_env=MY_KEY", Settings()).client.api_key == "sk-test"


def test_ollama_is_an_openai_compatible_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:11434")
    provider = openai.create_ollama("llama3.2", Settings())
    assert str(provider.client.base_url) == "http://127.0.0.1:11434/v1/"
    assert provider.name == "ollama:llama3.2"
