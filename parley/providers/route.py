"""A route: an ordered chain of providers with retries, cooldowns and failover.

For each provider in order, a retryable error is retried after an exponential backoff with
full jitter (AWS's "full jitter": uniform between 0 and ``base * 2**n``, capped), or after the
provider's ``Retry-After`` when it sent one. A provider that keeps failing cools down: the
``Health`` breaker, shared by every route of the app, keeps runs away from it until its
cooldown (or its ``Retry-After``) has passed. When a provider is out of tries, the next one
takes over: before the first token it simply answers; after it, it is asked to continue the
text already streamed (``request.prefix``), so the client sees one coherent reply. Each switch
is reported as a ``Fallback`` delta. Tool-call fragments are held back until their provider
finished its turn, so a failed attempt never leaves half a tool call behind.

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
)

log = structlog.get_logger(__name__)


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
        return random.uniform(0.0, min(self.backoff_max, self.backoff * 2**retry))


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
                try:
                    wait = self.health.retry_wait(provider.name)
                    if wait > 0:  # sleep(0) would still hand the loop over before every first token
                        await asyncio.sleep(wait)
                    async with _closing(provider.stream(replace(request, prefix=produced))) as deltas:
                        async for delta in deltas:
                            if isinstance(delta, TextDelta):
                                attempt.text += delta.text
                                produced += delta.text
                                yield delta
                            elif isinstance(delta, ToolCallDelta):
                                attempt.tools.append(delta)
                            elif isinstance(delta, Finish):
                                attempt.finish = delta
                            else:
                                if isinstance(delta, Usage):
                                    self._spent(provider.name, delta)
                                yield delta
                except Exception as raised:
                    exc = _as_provider_error(provider.name, raised)
                    failures.append({"provider": provider.name, "code": exc.code, "message": exc.message})
                    previous = (provider.name, exc.message)
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
                for tool in attempt.tools:
                    yield tool
                if attempt.finish is not None:
                    yield attempt.finish
                return
        raise AllProvidersFailed(self.fallback_message, failures)

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
