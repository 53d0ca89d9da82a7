"""Routes: retries with backoff, Retry-After, cooldowns, failover before and during a stream."""

from __future__ import annotations

import time

import pytest

from parley.pricing import Price, PriceTable
from parley.providers.base import (
    ChatMessage,
    Delta,
    Fallback,
    Finish,
    ProviderError,
    ProviderRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from parley.providers.route import AllProvidersFailed, Health, RetryPolicy, Route
from parley.providers.scripted import Hang, ScriptedProvider

REQUEST = ProviderRequest([ChatMessage("user", "hello")])
FAST = RetryPolicy(
    attempts=3, backoff=0.01, backoff_max=0.02, retry_after_max=5, cooldown_failures=3, cooldown=30
)


def flaky(message: str = "upstream 503", *, retry_after: float | None = None) -> ProviderError:
    return ProviderError(message, retryable=True, retry_after=retry_after, status=503)


def provider(name: str, *turns: list) -> ScriptedProvider:
    return ScriptedProvider(turns=turns, name=name)


async def collect(route: Route, request: ProviderRequest = REQUEST) -> list[Delta]:
    """What the route streams, but the usage of each attempt (``test_failover`` checks it)."""
    return [delta async for delta in route.stream(request) if not isinstance(delta, Usage)]


def text(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas if isinstance(d, TextDelta))


async def test_a_retryable_error_is_retried_on_the_same_provider() -> None:
    primary = provider("p", [flaky()], [TextDelta("fine")])
    backup = provider("b", [TextDelta("backup")])
    deltas = await collect(Route([primary, backup], health=Health(FAST)))
    assert text(deltas) == "fine"
    assert len(primary.requests) == 2
    assert backup.requests == []
    assert not any(isinstance(d, Fallback) for d in deltas)


async def test_backoff_grows_exponentially_with_full_jitter() -> None:
    policy = RetryPolicy(backoff=0.5, backoff_max=3.0)
    for retry, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (6, 3.0)]:
        delays = [policy.backoff_delay(retry) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # spread over the whole range: jitter, not a fixed delay


async def test_retry_after_is_honoured_when_there_is_no_backup() -> None:
    only = provider("p", [flaky("429", retry_after=0.3)], [TextDelta("after the wait")])
    started = time.monotonic()
    deltas = await collect(Route([only], health=Health(FAST)))
    waited = time.monotonic() - started
    assert text(deltas) == "after the wait"
    assert waited >= 0.3


async def test_retry_after_fails_over_at_once_when_a_backup_exists() -> None:
    primary = provider("p", [flaky("429", retry_after=10)])
    backup = provider("b", [TextDelta("from the backup")])
    health = Health(FAST)
    started = time.monotonic()
    deltas = await collect(Route([primary, backup], health=health))
    assert time.monotonic() - started < 1
    assert text(deltas) == "from the backup"
    assert deltas[0] == Fallback("p", "b", "429")
    # The next run does not even try the rate-limited provider before its Retry-After.
    deltas = await collect(Route([primary, backup], health=health))
    assert len(primary.requests) == 1
    assert isinstance(deltas[0], Fallback)
    assert "rate limited" in deltas[0].reason


async def test_a_retry_after_beyond_the_limit_is_not_waited_for() -> None:
    only = provider("p", [flaky("429", retry_after=60)], [TextDelta("never")])
    started = time.monotonic()
    with pytest.raises(AllProvidersFailed):
        await collect(Route([only], health=Health(FAST)))
    assert time.monotonic() - started < 1
    assert len(only.requests) == 1


async def test_failover_before_the_first_token_after_the_retries() -> None:
    primary = provider("p", [flaky("boom")])
    backup = provider("b", [TextDelta("hello from b")])
    deltas = await collect(Route([primary, backup], health=Health(FAST)))
    assert len(primary.requests) == FAST.attempts
    assert deltas[0] == Fallback("p", "b", "boom")
    assert text(deltas) == "hello from b"


async def test_a_non_retryable_error_fails_over_without_retrying() -> None:
    primary = provider("p", [ProviderError("401 bad key", status=401)])
    backup = provider("b", [TextDelta("ok")])
    deltas = await collect(Route([primary, backup], health=Health(FAST)))
    assert len(primary.requests) == 1
    assert text(deltas) == "ok"


async def test_mid_stream_failover_continues_the_text_already_streamed() -> None:
    primary = provider(
        "p", [TextDelta("The quick"), TextDelta(" brown"), ProviderError("connection dropped")]
    )
    backup = provider("b", [TextDelta(" fox jumps.")])
    deltas = await collect(Route([primary, backup], health=Health(FAST)))
    assert text(deltas) == "The quick brown fox jumps."
    assert backup.requests[0].prefix == "The quick brown"
    assert [type(d).__name__ for d in deltas][:4] == ["TextDelta", "TextDelta", "Fallback", "TextDelta"]


async def test_a_mid_stream_retry_continues_rather_than_repeats() -> None:
    primary = provider("p", [TextDelta("one"), flaky("reset")], [TextDelta(" two")])
    deltas = await collect(Route([primary], health=Health(FAST)))
    assert text(deltas) == "one two"
    assert primary.requests[1].prefix == "one"


async def test_tool_calls_of_a_failed_attempt_are_dropped() -> None:
    primary = provider("p", [ToolCallDelta(0, "call_1", "search", '{"q": '), ProviderError("dropped")])
    backup = provider("b", [ToolCallDelta(0, "call_2", "search", '{"q": "shoes"}')])
    deltas = await collect(Route([primary, backup], health=Health(FAST)))
    calls = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert calls == [ToolCallDelta(0, "call_2", "search", '{"q": "shoes"}')]
    assert deltas[-1] == Finish("tool_calls")


async def test_a_provider_that_keeps_failing_cools_down_and_is_skipped() -> None:
    clock = [1000.0]
    health = Health(FAST, clock=lambda: clock[0])
    primary = provider("p", [flaky()])
    backup = provider("b", [TextDelta("b")])
    await collect(Route([primary, backup], health=health))
    assert len(primary.requests) == 3
    deltas = await collect(Route([primary, backup], health=health))
    assert len(primary.requests) == 3  # cooling down: not called
    assert isinstance(deltas[0], Fallback)
    assert "cooling down" in deltas[0].reason
    clock[0] += FAST.cooldown + 1
    primary.enqueue([TextDelta("p is back")])
    deltas = await collect(Route([primary, backup], health=health))
    assert text(deltas) == "p is back"  # half-open: tried again after the cooldown
    assert health.open_for("p") == 0


async def test_when_every_provider_fails_the_error_is_friendly_and_detailed() -> None:
    primary = provider("p", [flaky("p is down")])
    backup = provider("b", [ProviderError("b rejected the key", status=401)])
    route = Route([primary, backup], health=Health(FAST), fallback_message="Sorry, try again soon.")
    with pytest.raises(AllProvidersFailed) as caught:
        await collect(route)
    assert caught.value.message == "Sorry, try again soon."
    assert caught.value.code == "all_providers_failed"
    assert {f["provider"] for f in caught.value.failures} == {"p", "b"}
    assert "b rejected the key" in [f["message"] for f in caught.value.failures]


async def test_closing_the_route_closes_the_provider_stream() -> None:
    primary = provider("p", [TextDelta("partial"), Hang()])
    stream = Route([primary], health=Health(FAST)).stream(REQUEST)
    assert await anext(stream) == TextDelta("partial")
    assert primary.open_streams == 1
    await stream.aclose()
    assert primary.open_streams == 0


async def test_cost_is_charged_to_the_provider_that_produced_the_tokens() -> None:
    prices = PriceTable({"p": Price(1.0, 2.0), "b": Price(10.0, 20.0)})
    primary = provider("p", [TextDelta("a"), Usage(100, 10), flaky()])
    backup = provider("b", [TextDelta("b"), Usage(1000, 100)])
    route = Route([primary, backup], health=Health(RetryPolicy(attempts=1)), prices=prices)
    await collect(route)
    assert route.cost_usd() == pytest.approx((100 * 1 + 10 * 2 + 1000 * 10 + 100 * 20) / 1e6)


async def test_cost_is_unknown_when_a_provider_has_no_price() -> None:
    route = Route([provider("mystery:model", [TextDelta("x"), Usage(10, 10)])], prices=PriceTable({}))
    await collect(route)
    assert route.cost_usd() is None
