"""A circuit breaker for an optional backing service (Redis for rate limits, a Redis bus).

Each call gets a short time limit. After ``failures`` failed calls in a row the breaker opens:
for ``cooldown`` seconds no call is made and ``call`` raises ``Unavailable`` at once, so a
hung or dead service costs callers nothing. Then it is half-open: one probe at a time checks
the service: the ``probe`` given (a ping, in a background task, so that no caller waits for
it) or else the next call itself; the other calls still get ``Unavailable``. A success closes
the breaker, a failure opens it again. Callers decide what ``Unavailable`` means (the rate
limiter lets the request through).

    breaker = Breaker("ratelimit", timeout=0.2, probe=redis.ping, on_change=metrics.breaker_changed)
    try:
        count = await breaker.call(lambda: redis.incr(key))
    except Unavailable:
        ...  # fail open
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")
State = Literal["closed", "open", "half_open"]


class Unavailable(Exception):
    """The service failed, timed out, or its breaker is open: the call was not (fully) made."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class Breaker:
    def __init__(
        self,
        name: str,
        *,
        timeout: float,
        failures: int = 3,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, State], None] | None = None,
        on_refused: Callable[[str, str], None] | None = None,
        probe: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._on_refused = on_refused
        self._failed = 0
        self._open_until = 0.0
        self._state: State = "closed"
        self._probing = False
        self.probe = probe
        self._probe_task: asyncio.Task[None] | None = None

    @property
    def state(self) -> State:
        if self._state == "open" and self._clock() >= self._open_until:
            return "half_open"
        return self._state

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation()`` within ``timeout``; ``Unavailable`` when it fails, times out or the
        breaker is open (``on_refused(name, reason)`` is told each time)."""
        state = self.state
        if state == "half_open" and self.probe is not None:
            if self._probe_task is None or self._probe_task.done():
                self._probe_task = asyncio.create_task(self._check(self.probe), name=f"{self.name}-probe")
            state = "open"  # this call does not wait for the probe
        if state == "open" or (state == "half_open" and self._probing):
            self._refused("open")
            raise Unavailable(self.name, "circuit open")
        probing = state == "half_open"
        self._probing = self._probing or probing
        try:
            async with asyncio.timeout(self.timeout):
                result = await operation()
        except TimeoutError:
            self._failure(probing)
            self._refused("timeout")
            raise Unavailable(self.name, f"no answer within {self.timeout * 1000:g} ms") from None
        except Exception as exc:
            self._failure(probing)
            self._refused("error")
            raise Unavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        finally:
            if probing:
                self._probing = False
        self._success()
        return result

    async def _check(self, probe: Callable[[], Awaitable[object]]) -> None:
        self._probing = True
        try:
            async with asyncio.timeout(self.timeout):
                await probe()
        except Exception:
            self._failure(True)
        else:
            self._success()
        finally:
            self._probing = False

    async def aclose(self) -> None:
        """Stop a probe still running."""
        if self._probe_task is not None and not self._probe_task.done():
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)

    def _success(self) -> None:
        self._failed = 0
        if self._state != "closed":
            log.info("breaker_closed", breaker=self.name)
            self._set("closed")

    def _failure(self, probing: bool) -> None:
        self._failed += 1
        if probing or self._failed >= self.failures:
            self._open_until = self._clock() + self.cooldown
            if self._state != "open":
                log.warning("breaker_open", breaker=self.name, failures=self._failed, cooldown=self.cooldown)
            self._set("open")

    def _set(self, state: State) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(self.name, state)

    def _refused(self, reason: str) -> None:
        if self._on_refused is not None:
            self._on_refused(self.name, reason)
