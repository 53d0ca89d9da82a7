"""Failing upstreams seen through the server: timeouts fail over fast, a failover never repeats
text, and usage counts every provider's tokens at its own price."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from parley.config import Settings
from parley.pricing import Price, PriceTable
from parley.providers.base import ChatMessage, ProviderError, ProviderRequest, TextDelta, Usage
from parley.providers.fakes import FakeAnthropic, FakeOpenAI, Fault, Reply, words
from parley.providers.route import Health, RetryPolicy, Route
from parley.providers.scripted import ScriptedProvider
from tests.conftest import serve
from tests.sse import Frame, new_thread, read_events, start_run

MINI = (0.15, 0.60)  # shipped prices, USD per 1M tokens: openai:gpt-4o-mini
HAIKU = (0.80, 4.00)  # anthropic:claude-3-5-haiku


def route(openai: FakeOpenAI, anthropic: FakeAnthropic, *, timeouts: str = "") -> str:
    return (
        f"openai:gpt-4o-mini?base_url={openai.url}/v1{timeouts},"
        f"anthropic:claude-3-5-haiku?base_url={anthropic.url}"
    )


async def run_once(settings: Settings, text: str = "count to five") -> tuple[list[Frame], dict[str, Any]]:
    async with serve(settings) as server:
        thread = await new_thread(server.client)
        run = await start_run(server.client, thread, text)
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
        stored = (await server.client.get(f"/v1/runs/{run['id']}")).json()
        messages = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"]
        assert messages[-1]["content"] == stored["output"]
        return frames, stored


def shown(frames: list[Frame]) -> str:
    return "".join(f.json["text"] for f in frames if f.event == "message.delta")


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault("hang"), "sent no first token within 0.5s"),
        (Fault("hang", after=1), "sent no token for 0.5s"),
        (Fault("drip", after=1, interval=0.05), "sent no token for 0.5s"),
        (Fault("drip", after=0, interval=0.05), "sent no first token within 0.5s"),
    ],
    ids=["hang-before-headers", "hang-after-first-token", "slow-drip", "drip-before-first-token"],
)
async def test_a_stalled_upstream_fails_over_at_its_timeout_not_after_retries(
    settings_for: Callable[..., Settings], fault: Fault, reason: str
) -> None:
    async with FakeOpenAI() as primary, FakeAnthropic() as backup:
        primary.default = Reply("one two three four five", fault=fault)
        backup.default = Reply(" two three four five" if fault.after else "one two three four five")
        settings = settings_for(
            model=route(primary, backup),
            provider_first_token_timeout_seconds=0.5,
            provider_timeout_seconds=0.5,
        )  # provider_attempts keeps its default (3): a timeout is not retried while a backup is left
        frames, stored = await run_once(settings)
    fallbacks = [f.json for f in frames if f.event == "provider.fallback"]
    assert len(fallbacks) == 1
    assert fallbacks[0]["reason"].endswith(reason), fallbacks[0]["reason"]
    assert frames[-1].event == "run.completed"
    assert shown(frames) == stored["output"] == "one two three four five"
    assert len(primary.requests) == 1
    assert stored["usage"]["latency_ms"] < 2500  # one timeout (0.5 s), not three


async def test_the_defaults_wait_at_most_twenty_seconds_for_a_first_token() -> None:
    settings = Settings()
    assert settings.provider_first_token_timeout_seconds <= 20
    assert settings.provider_timeout_seconds <= 30
    assert settings.provider_connect_timeout_seconds <= 10


async def test_route_options_override_the_timeouts(settings_for: Callable[..., Settings]) -> None:
    async with FakeOpenAI() as primary, FakeAnthropic() as backup:
        primary.default = Reply("late", fault=Fault("hang"))
        settings = settings_for(
            model=route(primary, backup, timeouts="&first_token_timeout=0.3"),
            provider_first_token_timeout_seconds=60,
        )
        frames, stored = await run_once(settings)
    assert stored["usage"]["latency_ms"] < 2500
    assert next(f.json["reason"] for f in frames if f.event == "provider.fallback").endswith(
        "sent no first token within 0.3s"
    )


@pytest.mark.parametrize(
    "fault",
    [Fault("drop", after=3), Fault("hang", after=3), Fault("malformed", after=3)],
    ids=["drop", "hang", "malformed"],
)
@pytest.mark.parametrize("backup_restarts", [False, True], ids=["continues", "restarts"])
async def test_a_mid_stream_failover_shows_each_word_once_and_bills_both_providers(
    settings_for: Callable[..., Settings], fault: Fault, backup_restarts: bool
) -> None:
    async with FakeOpenAI() as primary, FakeAnthropic() as backup:
        # The primary fails the same way on each of its 3 tries, each time starting the reply over.
        primary.default = Reply("one two three four five", fault=fault)
        backup.default = Reply("one two three four five" if backup_restarts else " four five")
        settings = settings_for(
            model=route(primary, backup),
            provider_backoff_seconds=0.01,
            provider_timeout_seconds=0.3,
        )
        frames, stored = await run_once(settings)
    # Retried after a drop or a malformed chunk; a timeout (the hang) fails over at once.
    assert len(primary.requests) == (1 if fault.kind == "hang" else 3)
    assert shown(frames) == "one two three four five"
    done = frames[-1].json
    assert done["text"] == stored["output"] == "one two three four five"
    usage = done["usage"]
    assert stored["usage"] == usage
    # The primary's attempts (each read the prompt and wrote three words) and the backup's turn.
    assert usage["input_tokens"] > 0
    assert usage["output_tokens"] >= 3 * len(primary.requests) + 2
    at_mini = (usage["input_tokens"] * MINI[0] + usage["output_tokens"] * MINI[1]) / 1e6
    at_haiku = (usage["input_tokens"] * HAIKU[0] + usage["output_tokens"] * HAIKU[1]) / 1e6
    assert at_mini < usage["cost_usd"] < at_haiku  # each provider's tokens at its own price


async def test_usage_is_never_negative_when_a_continuation_has_nothing_left_to_say() -> None:
    """The echo provider asked to continue a prefix longer than its answer (the issue's -4 tokens)."""
    echo = ScriptedProvider("echo", name="scripted:echo")
    request = ProviderRequest(
        [ChatMessage("user", "one two three")], prefix="one two threeone two threeone two three"
    )
    deltas = [d async for d in Route([echo]).stream(request)]
    assert [d for d in deltas if isinstance(d, TextDelta)] == []
    (usage,) = [d for d in deltas if isinstance(d, Usage)]
    assert usage.input_tokens > 0
    assert usage.output_tokens == 0


async def test_a_failed_attempt_that_reported_no_usage_is_still_counted() -> None:
    prices = PriceTable({"p": Price(1.0, 2.0), "b": Price(10.0, 20.0)})
    primary = ScriptedProvider(
        turns=[[TextDelta("one two three"), ProviderError("cut", retryable=True)]], name="p"
    )
    backup = ScriptedProvider(turns=[[TextDelta(" four"), Usage(50, 1)]], name="b")
    route_ = Route([primary, backup], health=Health(RetryPolicy(attempts=1)), prices=prices)
    request = ProviderRequest([ChatMessage("user", "count to four please")])
    deltas = [d async for d in route_.stream(request)]
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == "one two three four"
    # The primary said nothing about usage: its prompt and its three words are counted.
    assert route_.spend["p"].input_tokens == primary.count_tokens("count to four please")
    assert route_.spend["p"].output_tokens == primary.count_tokens("one two three")
    assert (route_.spend["b"].input_tokens, route_.spend["b"].output_tokens) == (50, 1)
    assert (
        sum(u.output_tokens for u in deltas if isinstance(u, Usage))
        == primary.count_tokens("one two three") + 1
    )
    spent = route_.spend["p"]
    assert route_.cost_usd() == pytest.approx(
        (spent.input_tokens * 1 + spent.output_tokens * 2 + 50 * 10 + 1 * 20) / 1e6
    )


@pytest.mark.parametrize(
    ("prefix", "continued", "shown_after"),
    [
        ("The quick brown", " fox jumps.", " fox jumps."),  # a true continuation
        ("The quick brown", "The quick brown fox jumps.", " fox jumps."),  # starts over
        ("The quick brown", " The quick brown fox", " fox"),  # starts over after a space
        ("The quick brown", "The quick", ""),  # starts over, then breaks again
        ("The", " Thebes is old.", " Thebes is old."),  # one word: no cut inside a word
        ("The", "The cat.", " cat."),
        ("one two three", "one two four", "one two four"),  # diverges: kept whole
    ],
)
async def test_a_continuation_that_starts_over_is_shown_once(
    prefix: str, continued: str, shown_after: str
) -> None:
    backup = ScriptedProvider(turns=[[TextDelta(word) for word in words(continued)]], name="b")
    request = ProviderRequest([ChatMessage("user", "go on")], prefix=prefix)
    deltas = [d async for d in Route([backup]).stream(request)]
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == shown_after
