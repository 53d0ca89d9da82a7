"""Rate limits per API key (or client IP when anonymous) and endpoint class.

Sliding windows from the ``limits`` library (a window's count plus the previous window's,
weighted by how much of it still overlaps), counted in memory or in Redis
(``PARLEY_REDIS_URL``, shared by every process). Not ``limits``' moving windows: in memory,
those keep every request's timestamp, and after each request a clean-up task walks every
key, holding the key's lock across a hand-off to a worker thread; at 100 open streams a
request waited 3.5 ms (p50) to 10 ms (p90) for that lock (docs/BENCHMARKS.md).

``PARLEY_RATE_LIMIT`` is the limit of every class; the config file may set other limits
per class::

    [rate_limits]
    runs = "20/minute"
    uploads = "10/minute;100/day"

An endpoint declares its class with ``@rate_class("runs")``; the rest are ``default``.
Answers carry ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset``; a
refusal is a 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog
from fastapi import Request
from limits import RateLimitItem, WindowStats, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley.breaker import Breaker, Unavailable
from parley.config import Settings
from parley.errors import ApiError
from parley.metrics import Metrics
from parley.users import Principal

log = structlog.get_logger(__name__)

DEFAULT_CLASS = "default"
#: Failed authentications per client address and per credential prefix; over it, failures are 429s.
AUTH_FAILURES = "auth_failures"
DEFAULT_AUTH_FAILURES = "30/minute"
#: Knowledge uploads: a script loading a corpus sends thousands (or one batch); see docs/SECURITY.md.
INGEST = "ingest"
DEFAULT_INGEST = "6000/minute"
_ATTRIBUTE = "__parley_rate_class__"
_STATE_KEY = "rate_limit"

F = TypeVar("F", bound=Callable[..., Any])


def rate_class(name: str) -> Callable[[F], F]:
    """Put an endpoint in a rate-limit class (its own counter and limit)."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _ATTRIBUTE, name)
        return endpoint

    return mark


def class_of(request: Request) -> str:
    return str(getattr(request.scope.get("endpoint"), _ATTRIBUTE, DEFAULT_CLASS))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    window_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
            "RateLimit-Policy": f"{self.limit};w={self.window_seconds}",
        }


def parse_limits(value: str, where: str) -> list[RateLimitItem]:
    try:
        items = parse_many(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {value!r} is not a rate limit like '120/minute' ({exc})") from None
    if not items:
        raise ValueError(f"{where}: {value!r} is not a rate limit like '120/minute'")
    return items


def load_class_limits(config_file: Path | None) -> dict[str, str]:
    if config_file is None:
        return {}
    section = tomllib.loads(config_file.read_text()).get("rate_limits", {})
    if not isinstance(section, dict) or not all(isinstance(v, str) for v in section.values()):
        raise ValueError(f'{config_file}: [rate_limits] maps class names to limits like "20/minute"')
    return dict(section)


class RateLimiter:
    def __init__(
        self,
        storage: Storage,
        default: str,
        classes: dict[str, str] | None = None,
        *,
        breaker: Breaker | None = None,
    ) -> None:
        self.storage = storage
        # Counters are a guard, not a dependency: when their storage fails, times out or its
        # breaker is open, the request passes unchecked (and ``/metrics`` counts it).
        self.breaker = breaker or Breaker("ratelimit", timeout=0.2)
        self._strategy = SlidingWindowCounterRateLimiter(storage)
        self._default = parse_limits(default, "PARLEY_RATE_LIMIT")
        self._classes = {
            name: parse_limits(value, f"[rate_limits] {name}") for name, value in (classes or {}).items()
        }
        self._classes.setdefault(AUTH_FAILURES, parse_limits(DEFAULT_AUTH_FAILURES, AUTH_FAILURES))
        self._classes.setdefault(INGEST, parse_limits(DEFAULT_INGEST, INGEST))

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> RateLimiter:
        storage: Storage
        if settings.redis_url:
            try:
                import redis  # noqa: F401
            except ImportError:
                raise RuntimeError(
                    "PARLEY_REDIS_URL needs the [redis] extra: pip install 'parley[redis]'"
                ) from None
            # The breaker's time limit bounds each check; the socket's are a backstop.
            storage = RedisStorage(
                settings.redis_url,
                implementation="redispy",
                key_prefix=f"{settings.rate_limit_prefix}:rl",
                socket_connect_timeout=max(0.25, settings.redis_timeout_seconds),
                socket_timeout=max(0.25, settings.redis_timeout_seconds),
            )
        else:
            storage = MemoryStorage()

        async def ping() -> None:
            if not await storage.check():
                raise ConnectionError("the rate-limit storage did not answer its check")

        breaker = Breaker(
            "ratelimit",
            timeout=settings.redis_timeout_seconds,
            cooldown=settings.redis_cooldown_seconds,
            on_change=metrics.breaker_changed if metrics is not None else None,
            on_refused=metrics.breaker_refused if metrics is not None else None,
            probe=ping,
        )
        return cls(storage, settings.rate_limit, load_class_limits(settings.config_file), breaker=breaker)

    def limits_of(self, rate_class_: str) -> list[RateLimitItem]:
        return self._classes.get(rate_class_, self._classes.get(DEFAULT_CLASS, self._default))

    async def authenticate(
        self,
        request: Request,
        attempt: Callable[[], Awaitable[Principal]],
        *,
        credential_prefix: str | None = None,
    ) -> Principal:
        """Run ``attempt``; its 401s are counted per client address and per presented credential
        prefix, and a failure over either count is answered 429 instead of 401.

        The key is always looked up first: one indexed match, the cost of any request. So a valid
        key is never refused because others failed from its address (every user behind one proxy
        shares it) or with a look-alike prefix; only its own rate limits apply to it.
        """
        try:
            return await attempt()
        except ApiError as exc:
            if exc.status != 401:
                raise
            refusal = await self._count_failure(request, credential_prefix)
            if refusal is None:
                raise
            raise refusal from None

    async def _count_failure(self, request: Request, credential_prefix: str | None) -> ApiError | None:
        buckets = [f"ip:{_client_ip(request)}"]
        if credential_prefix:
            buckets.append(f"credential:{credential_prefix}")

        async def count() -> WindowStats | None:
            over = [
                (item, bucket)
                for bucket in buckets
                for item in self.limits_of(AUTH_FAILURES)
                if not await self._strategy.hit(item, AUTH_FAILURES, bucket)
            ]
            if not over:
                return None
            return await self._strategy.get_window_stats(over[0][0], AUTH_FAILURES, over[0][1])

        try:
            stats = await self.breaker.call(count)
        except Unavailable:
            return None
        if stats is None:
            return None
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        return ApiError(
            429,
            "too_many_auth_failures",
            f"too many failed authentications from this address or with this key; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )

    async def hit(self, identity: str, rate_class_: str) -> Decision:
        """Count one request; the tightest limit decides (the first one that refuses, if any)."""
        tightest: Decision | None = None
        for item in self.limits_of(rate_class_):
            allowed = await self._strategy.hit(item, rate_class_, identity)
            stats = await self._strategy.get_window_stats(item, rate_class_, identity)
            decision = Decision(
                allowed=allowed,
                limit=item.amount,
                remaining=max(0, stats.remaining),
                reset_seconds=max(1, math.ceil(stats.reset_time - time.time())),
                window_seconds=item.get_expiry(),
            )
            if not allowed:
                return decision
            if tightest is None or decision.remaining < tightest.remaining:
                tightest = decision
        assert tightest is not None
        return tightest

    async def admit(self, request: Request, principal: Principal) -> None:
        """Count the request against its caller; a 429 when over the limit."""
        identity = f"key:{principal.key_id}" if principal.key_id else f"ip:{_client_ip(request)}"
        rate_class_ = class_of(request)
        try:
            decision = await self.breaker.call(lambda: self.hit(identity, rate_class_))
        except Unavailable:
            return
        request.state.rate_limit = decision
        if not decision.allowed:
            raise ApiError(
                429,
                "rate_limited",
                f"too many requests: the limit is {decision.limit} per {decision.window_seconds} s "
                f"for {rate_class_!r} requests; retry in {decision.reset_seconds} s",
                headers={"Retry-After": str(decision.reset_seconds), **decision.headers()},
            )

    async def aclose(self) -> None:
        await self.breaker.aclose()
        client = getattr(self.storage, "storage", None)
        close = getattr(client, "aclose", None)
        if close is not None:
            await close()


def _client_ip(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


class RateLimitHeaders:
    """Adds the ``RateLimit-*`` headers of the request's decision to its answer (SSE included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision = scope.get("state", {}).get(_STATE_KEY)
                if isinstance(decision, Decision):
                    headers = list(message.get("headers", []))
                    present = {name.lower() for name, _ in headers}
                    for name, value in decision.headers().items():
                        if name.lower().encode() not in present:
                            headers.append((name.lower().encode(), value.encode()))
                    message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
