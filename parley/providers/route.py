"""A route: an ordered chain of providers with retries, cooldowns and failover.

For each provider in order, a retryable error is retried after an exponential backoff with
full jitter (AWS's "full jitter": uniform between 0 and ``base * 2**n``, capped), or after the
provider's ``Retry-After`` when it sent one. A provider that keeps failing cools down: the
``Health`` breaker, shared by every route of the app, keeps runs away from it until its
cooldown (or its ``Retry-After``) has passed. When a provider is out of tries, the next one
takes over: before the first token it simply answers; after it, it is asked to continue the
text already streamed (``request.prefix``), so the client sees one coherent reply. Each switch
is reported as a ``Fallback`` delta. Tool-call fragments are held back until their provider
finished its turn, so a failed attempt never leaves half a tool call behind. A continuation
that starts the reply over has its repeat dropped (``_Continuation``): the user sees each part
of the reply once.

A remote provider's ``timeouts`` bound the wait for its first token and between two tokens; a
provider that hits one fails like any retryable error, and is not retried when a backup is
left. Every attempt's usage is accounted, failed ones included (counted with the provider's
tokenizer when it reported none), and priced at its own provider's model (``spend``).

Retries are written out here rather than with a retry library because they interleave with
streaming and failover: an attempt that already streamed text is continued, not repeated.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import structlog

from parley import text
from parley.pricing import PriceTable
from parley.providers.base import (
    Delta,
    Fallback,
    Finish,
    Provider,
    ProviderError,
    ProviderRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
    continuation,
)

log = structlog.get_logger(__name__)
#: Its own state: drawing from the global generator would disturb whoever else uses it (and
#: trips hypothesis's check on it when a test serves the app in its own process).
_jitter = random.Random()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3
    backoff: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 30.0
    cooldown_failures: int = 3
    cooldown: float = 30.0

    def backoff_delay(self, retry: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**retry)]."""
        return _jitter.uniform(0.0, min(self.backoff_max, self.backoff * 2**retry))


class Health:
    """A circuit breaker per provider, shared by the routes of one app.

    Two reasons keep a provider away: its own ``Retry-After`` (a run may wait for it) and an
    open breaker after repeated failures (runs go elsewhere, or fail fast).
    """

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._open_until: dict[str, float] = {}

    def retry_wait(self, name: str) -> float:
        """Seconds until ``name``'s last Retry-After has passed."""
        return max(0.0, self._retry_at.get(name, 0.0) - self._clock())

    def open_for(self, name: str) -> float:
        """Seconds the breaker of ``name`` stays open (0: closed or half-open)."""
        return max(0.0, self._open_until.get(name, 0.0) - self._clock())

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)
        self._retry_at.pop(name, None)
        self._open_until.pop(name, None)

    def failed(self, name: str, retry_after: float | None = None) -> None:
        failures = self._failures.get(name, 0) + 1
        self._failures[name] = failures
        if retry_after is not None:
            self._retry_at[name] = self._clock() + retry_after
        if failures >= self.policy.cooldown_failures:
            self._open_until[name] = self._clock() + self.policy.cooldown
            log.warning("provider_cooling_down", provider=name, failures=failures)


class AllProvidersFailed(ProviderError):
    """Every provider of a route failed; ``message`` is the friendly text for the user."""

    def __init__(self, message: str, failures: list[dict[str, str]]) -> None:
        super().__init__(message, code="all_providers_failed")
        self.failures = failures


@dataclass(slots=True)
class Spend:
    """What one provider of a route consumed during a run."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(slots=True)
class _Attempt:
    text: str = ""
    tools: list[ToolCallDelta] = field(default_factory=list)
    finish: Finish | None = None
    usage: Usage | None = None

    def add(self, usage: Usage) -> None:
        if self.usage is not None:
            usage = Usage(
                self.usage.input_tokens + usage.input_tokens, self.usage.output_tokens + usage.output_tokens
            )
        self.usage = usage


class _Continuation:
    """Drops a continuation's restart: a provider asked to go on from ``prefix`` that starts the
    reply over (a retry of the same model, a backup ignoring the instruction) would show the
    user the same text twice. Its text is held while it still repeats ``prefix``; a repeat of
    all of it is dropped, anything else is passed on unchanged.

    A one-word prefix only counts as repeated when the repeat ends at a word boundary, so that
    "The" continued with "Thebes" is not cut.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.lstrip()
        self.held = ""
        self.deciding = bool(self.prefix)

    def feed(self, text: str) -> str:
        if not self.deciding:
            return text
        self.held += text
        candidate = self.held.lstrip()
        if len(candidate) <= len(self.prefix):
            if self.prefix.startswith(candidate):
                return ""  # still repeating (or too short to tell)
            return self._release(self.held)
        if candidate.startswith(self.prefix) and self._at_boundary(candidate[len(self.prefix)]):
            return self._release(candidate[len(self.prefix) :])
        return self._release(self.held)

    def flush(self) -> str:
        """At the end of the attempt: text that only ever repeated (part of) the prefix is
        dropped. (A failed attempt's held text is dropped without a flush.)"""
        if not self.deciding:
            return ""
        return self._release("" if self.prefix.startswith(self.held.lstrip()) else self.held)

    def _at_boundary(self, following: str) -> bool:
        return any(ch.isspace() for ch in self.prefix) or not (
            following.isalnum() and self.prefix[-1:].isalnum()
        )

    def _release(self, text: str) -> str:
        self.deciding = False
        self.held = ""
        return text


def _non_negative(usage: Usage) -> Usage:
    return Usage(max(0, usage.input_tokens), max(0, usage.output_tokens))


async def _timed(deltas: AsyncIterator[Delta], provider: Provider) -> AsyncIterator[Delta]:
    """``deltas`` within the provider's first-token and between-tokens timeouts (if it has them)."""
    limits = provider.timeouts
    if limits is None:
        async for delta in deltas:
            yield delta
        return
    limit, what = limits.first_token, "sent no first token within"
    while True:
        try:
            async with asyncio.timeout(limit):
                delta = await anext(deltas)
        except StopAsyncIteration:
            return
        except TimeoutError:
            label = provider.name.partition("?")[0]
            raise ProviderError(
                f"{label}: {what} {limit:g}s", retryable=True, code="provider_timeout"
            ) from None
        yield delta
        limit, what = limits.idle, "sent no token for"


class Route:
    def __init__(
        self,
        providers: list[Provider],
        *,
        health: Health | None = None,
        prices: PriceTable | None = None,
        fallback_message: str = "every provider of this assistant failed",
    ) -> None:
        if not providers:
            raise ValueError("a route needs at least one provider")
        self.providers = providers
        self.health = health or Health(RetryPolicy())
        self.prices = prices or PriceTable({})
        self.fallback_message = fallback_message
        #: Tokens per provider over every turn streamed through this route.
        self.spend: dict[str, Spend] = {}

    @property
    def name(self) -> str:
        return ",".join(p.name for p in self.providers)

    @property
    def primary(self) -> Provider:
        return self.providers[0]

    @property
    def policy(self) -> RetryPolicy:
        return self.health.policy

    def cost_usd(self, input_tokens: int = 0, output_tokens: int = 0) -> float | None:
        """The cost of what this route streamed; counts are charged to the primary if no
        provider reported usage. ``None`` when a provider used has no known price."""
        if not self.spend:
            return self.prices.cost(self.primary.name, input_tokens, output_tokens)
        total = 0.0
        for name, spent in self.spend.items():
            cost = self.prices.cost(name, spent.input_tokens, spent.output_tokens)
            if cost is None:
                return None
            total += cost
        return round(total, 8)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        produced = request.prefix
        failures: list[dict[str, str]] = []
        previous: tuple[str, str] | None = None  # (provider, why it was left)
        for index, provider in enumerate(self.providers):
            others_left = index + 1 < len(self.providers)
            skip = self._skip_reason(provider.name, others_left)
            if skip is not None:
                failures.append({"provider": provider.name, "code": "cooling_down", "message": skip})
                previous = previous or (provider.name, skip)
                continue
            if previous is not None:
                yield Fallback(previous[0], provider.name, previous[1])
            for retry in range(self.policy.attempts):
                attempt = _Attempt()
                continued = _Continuation(produced)
                sent = replace(request, prefix=produced)
                try:
                    wait = self.health.retry_wait(provider.name)
                    if wait > 0:  # sleep(0) would still hand the loop over before every first token
                        await asyncio.sleep(wait)
                    async with _closing(provider.stream(sent)) as deltas:
                        async for delta in _timed(deltas, provider):
                            if isinstance(delta, TextDelta):
                                attempt.text += delta.text
                                shown = continued.feed(text.clean(delta.text))
                                if shown:
                                    produced += shown
                                    yield TextDelta(shown)
                            elif isinstance(delta, ToolCallDelta):
                                attempt.tools.append(replace(delta, arguments=text.clean(delta.arguments)))
                            elif isinstance(delta, Finish):
                                attempt.finish = delta
                            elif isinstance(delta, Usage):
                                attempt.add(_non_negative(delta))
                            else:
                                yield delta
                    if rest := continued.flush():
                        produced += rest
                        yield TextDelta(rest)
                except Exception as raised:
                    exc = _as_provider_error(provider.name, raised)
                    failures.append({"provider": provider.name, "code": exc.code, "message": exc.message})
                    previous = (provider.name, exc.message)
                    # A failed attempt was billed too: what it reported, else our own count.
                    yield self._account(provider, sent, attempt)
                    if exc.retryable:
                        self.health.failed(provider.name, exc.retry_after)
                    delay = self._retry_delay(provider.name, exc, retry, others_left)
                    if delay is None:
                        log.warning("provider_failed", provider=provider.name, error=exc.message)
                        break
                    log.info(
                        "provider_retry",
                        provider=provider.name,
                        error=exc.message,
                        delay=round(delay, 3),
                        streamed=len(attempt.text),
                    )
                    await asyncio.sleep(delay)
                    continue
                self.health.succeeded(provider.name)
                yield self._account(provider, sent, attempt)
                for tool in attempt.tools:
                    yield tool
                if attempt.finish is not None:
                    yield attempt.finish
                return
        raise AllProvidersFailed(self.fallback_message, failures)

    def _account(self, provider: Provider, request: ProviderRequest, attempt: _Attempt) -> Usage:
        """One attempt's usage, added to its provider's spend: as the provider reported it, or
        counted with its tokenizer (the prompt it was sent, the text it wrote) when it did not."""
        usage = attempt.usage
        if usage is None:
            count = provider.count_tokens
            prompt = sum(count(m.content) for m in continuation(request))
            written = count(attempt.text) if attempt.text else 0
            usage = Usage(prompt, written + len(attempt.tools))
        self._spent(provider.name, usage)
        return usage

    def _skip_reason(self, name: str, others_left: bool) -> str | None:
        """Why ``name`` is not tried for this run (``None``: try it)."""
        open_for = self.health.open_for(name)
        if open_for > 0:
            return f"cooling down for {open_for:.0f}s after repeated failures"
        retry_wait = self.health.retry_wait(name)
        if retry_wait > 0 and (others_left or retry_wait > self.policy.retry_after_max):
            return f"rate limited for another {retry_wait:.1f}s"
        return None

    def _retry_delay(self, name: str, exc: ProviderError, retry: int, others_left: bool) -> float | None:
        """How long to wait before retrying ``name``, or ``None`` to give up on it."""
        if not exc.retryable or retry + 1 >= self.policy.attempts or self.health.open_for(name) > 0:
            return None
        if exc.code == "provider_timeout" and others_left:
            return None  # a provider that kept the user waiting once is not waited for again
        if exc.retry_after is not None:
            # Told when to come back: a backup answers sooner, and a long wait is not worth it.
            if others_left or exc.retry_after > self.policy.retry_after_max:
                return None
            return 0.0  # the attempt itself waits for ``Health.retry_wait``
        return self.policy.backoff_delay(retry)

    def _spent(self, name: str, usage: Usage) -> None:
        spent = self.spend.setdefault(name, Spend())
        spent.input_tokens += usage.input_tokens
        spent.output_tokens += usage.output_tokens


@asynccontextmanager
async def _closing(stream: AsyncIterator[Delta]) -> AsyncIterator[AsyncIterator[Delta]]:
    """Close a provider's stream (and its upstream connection) however the attempt ends."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


def _as_provider_error(name: str, exc: Exception) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    # A bug or an unmapped library error in a provider: fail over rather than crash the run.
    log.error("provider_crashed", provider=name, error=repr(exc), exc_info=exc)
    return ProviderError(f"{type(exc).__name__}: {exc}", code="provider_crashed")
