"""Redis trouble costs milliseconds: the circuit breakers (``parley.breaker``) of the rate
limiter and of the wake-up bus."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest

from parley.breaker import Breaker, State, Unavailable
from parley.config import Settings
from tests.conftest import REDIS_URL, serve
from tests.sse import new_thread, read_events, start_run

# -- the breaker itself ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def ok() -> str:
    return "ok"


async def boom() -> str:
    raise ConnectionError("refused")


async def hang() -> str:
    await asyncio.Event().wait()
    return "never"


async def test_the_breaker_opens_after_failures_refuses_at_once_then_probes_and_closes() -> None:
    clock = Clock()
    changes: list[tuple[str, State]] = []
    refused: list[str] = []
    breaker = Breaker(
        "redis",
        timeout=0.02,
        failures=3,
        cooldown=5,
        clock=clock,
        on_change=lambda name, state: changes.append((name, state)),
        on_refused=lambda _, reason: refused.append(reason),
    )
    assert await breaker.call(ok) == "ok"
    for operation in (boom, hang, boom):
        with pytest.raises(Unavailable):
            await breaker.call(operation)
    assert breaker.state == "open"
    assert changes == [("redis", "open")]
    calls = 0

    async def counted() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    with pytest.raises(Unavailable, match="circuit open"):
        await breaker.call(counted)
    assert calls == 0  # an open breaker makes no call at all
    clock.now += 5
    assert breaker.state == "half_open"
    with pytest.raises(Unavailable):
        await breaker.call(boom)  # the probe fails: open for another cooldown
    assert breaker.state == "open"
    clock.now += 5
    assert await breaker.call(counted) == "ok"
    assert breaker.state == "closed"
    assert changes[-1] == ("redis", "closed")
    assert refused == ["error", "timeout", "error", "open", "error"]


async def test_only_one_probe_at_a_time_while_half_open() -> None:
    clock = Clock()
    breaker = Breaker("redis", timeout=1, failures=1, cooldown=1, clock=clock)
    with pytest.raises(Unavailable):
        await breaker.call(boom)
    clock.now += 1
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "ok"

    probe = asyncio.create_task(breaker.call(slow))
    await asyncio.sleep(0)
    with pytest.raises(Unavailable, match="circuit open"):
        await breaker.call(ok)
    release.set()
    assert await probe == "ok"
    assert breaker.state == "closed"


async def test_with_a_probe_no_call_waits_while_the_service_is_checked() -> None:
    clock = Clock()
    pings = 0
    healthy = False

    async def ping() -> None:
        nonlocal pings
        pings += 1
        if not healthy:
            raise ConnectionError("still down")

    breaker = Breaker("redis", timeout=1, failures=1, cooldown=1, clock=clock, probe=ping)
    with pytest.raises(Unavailable):
        await breaker.call(boom)
    clock.now += 1
    with pytest.raises(Unavailable, match="circuit open"):
        await breaker.call(ok)  # starts the ping in the background and does not wait for it
    await asyncio.sleep(0.01)
    assert pings == 1
    assert breaker.state == "open"  # the ping failed: another cooldown
    healthy = True
    clock.now += 1
    with pytest.raises(Unavailable):
        await breaker.call(ok)
    await asyncio.sleep(0.01)
    assert pings == 2
    assert breaker.state == "closed"
    assert await breaker.call(ok) == "ok"
    await breaker.aclose()


# -- the rate limiter behind a hung Redis -----------------------------------------------------


class RedisProxy:
    """A loopback TCP proxy in front of Redis that can hang (swallow every byte, answer nothing),
    or, without an upstream, a Redis that accepts connections and never answers."""

    def __init__(self, upstream: str | None) -> None:
        self.upstream = urlsplit(upstream) if upstream else None
        self.hung = self.upstream is None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> RedisProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.upstream is None:
                while await reader.read(65536):
                    pass
                return
            up_reader, up_writer = await asyncio.open_connection(self.upstream.hostname, self.upstream.port)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.hung:
                    writer.write(data)
                    await writer.drain()
        finally:
            writer.close()


@asynccontextmanager
async def limited_server(
    settings_for: Callable[..., Settings], redis_url: str, *, bus: str = "local", **overrides: object
) -> AsyncIterator[object]:
    """A server whose limiter counts in ``redis_url``; its wake-up bus stays in process unless
    ``bus="redis"`` (then it goes over the same Redis)."""
    settings = settings_for(
        redis_url=redis_url, bus=bus, rate_limit_prefix=f"t{uuid.uuid4().hex[:8]}", **overrides
    )
    async with serve(settings) as server:
        yield server


def metric(text: str, name: str, **labels: str) -> float:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{re.escape(inner)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_hung_redis_costs_milliseconds_and_shows_in_metrics(
    settings_for: Callable[..., Settings],
) -> None:
    async with RedisProxy(None) as hung, limited_server(settings_for, hung.url) as server:
        client = server.client  # type: ignore[attr-defined]
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            response = await client.get("/v1/threads")
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200  # fail open: the API stays up
        # Before: two 2 s socket timeouts per request (80 s for these 20). Now the first three
        # wait for the 200 ms limit, then the breaker is open and no request waits for Redis.
        assert sum(timings) < 3.0
        assert max(timings[3:]) < 0.5
        metrics = (await client.get("/metrics")).text
        assert metric(metrics, "parley_breaker_open", breaker="ratelimit") == 1
        assert (
            metric(metrics, "parley_breaker_skipped_calls_total", breaker="ratelimit", reason="timeout") == 3
        )
        assert metric(metrics, "parley_breaker_skipped_calls_total", breaker="ratelimit", reason="open") >= 17


async def test_limits_come_back_by_themselves_when_redis_does(settings_for: Callable[..., Settings]) -> None:
    if not REDIS_URL:
        pytest.skip("Redis not available; `make test` starts one")
    async with (
        RedisProxy(REDIS_URL) as proxy,
        limited_server(settings_for, proxy.url, rate_limit="6/minute", redis_cooldown_seconds=0.3) as server,
    ):
        client = server.client  # type: ignore[attr-defined]
        assert (await client.get("/v1/threads")).status_code == 200  # counted in Redis: 1 of 6
        proxy.hung = True
        for _ in range(10):  # unchecked while Redis hangs: no 429 however many
            assert (await client.get("/v1/threads")).status_code == 200
        assert metric((await client.get("/metrics")).text, "parley_breaker_open", breaker="ratelimit") == 1
        proxy.hung = False
        await asyncio.sleep(0.35)  # the cooldown: the next request has Redis pinged
        statuses = []
        for _ in range(40):  # bounded: the ping and at most 6 counted requests, then 429
            statuses.append((await client.get("/v1/threads")).status_code)
            if statuses[-1] == 429:
                break
            await asyncio.sleep(0.05)
        assert statuses[-1] == 429, statuses  # counting again: the limit holds
        assert statuses.count(200) >= 5  # 1 counted before the hang, 5 more now
        assert metric((await client.get("/metrics")).text, "parley_breaker_open", breaker="ratelimit") == 0


# -- the wake-up bus behind a hung Redis ---------------------------------------------------------


async def answered(client: object) -> str:
    """A run's whole answer, read from its stream."""
    thread = await new_thread(client)  # type: ignore[arg-type]
    run = await start_run(client, thread, "hello there")  # type: ignore[arg-type]
    frames = await read_events(client, f"/v1/runs/{run['id']}/events")  # type: ignore[arg-type]
    assert frames[-1].event == "run.completed", frames[-1]
    return str(frames[-1].json["text"])


async def bus_breaker(client: object, reason: str | None = None) -> float:
    text = (await client.get("/metrics")).text  # type: ignore[attr-defined]
    if reason is None:
        return metric(text, "parley_breaker_open", breaker="bus")
    return metric(text, "parley_breaker_skipped_calls_total", breaker="bus", reason=reason)


async def test_a_hung_redis_bus_drops_wake_ups_at_once_and_shows_in_metrics(
    settings_for: Callable[..., Settings],
) -> None:
    """Sends are in the background, so no request waits for them; after three that time out the
    breaker opens, and the next batches are dropped at once instead of each waiting 0.5 s."""
    async with (
        RedisProxy(None) as hung,
        limited_server(settings_for, hung.url, bus="redis", redis_cooldown_seconds=60) as server,
    ):
        client = server.client  # type: ignore[attr-defined]
        for _ in range(100):  # bounded (~10 s): each run sends a batch, each waits 0.5 s in turn
            assert await answered(client) == "hello there"  # no request waits for the bus
            if await bus_breaker(client) == 1:
                break
            await asyncio.sleep(0.1)
        assert await bus_breaker(client) == 1
        assert await bus_breaker(client, "timeout") == 3
        assert await answered(client) == "hello there"
        for _ in range(40):  # the send loop runs in the background: give it its turn
            if await bus_breaker(client, "open") >= 1:
                break
            await asyncio.sleep(0.05)
        assert await bus_breaker(client, "open") >= 1  # dropped at once while open


async def test_the_bus_comes_back_by_itself_when_redis_does(settings_for: Callable[..., Settings]) -> None:
    if not REDIS_URL:
        pytest.skip("Redis not available; `make test` starts one")
    async with (
        RedisProxy(REDIS_URL) as proxy,
        limited_server(settings_for, proxy.url, bus="redis", redis_cooldown_seconds=0.3) as server,
    ):
        client = server.client  # type: ignore[attr-defined]
        assert await answered(client) == "hello there"
        proxy.hung = True
        for _ in range(100):  # bounded (~10 s)
            await answered(client)
            if await bus_breaker(client) == 1:
                break
            await asyncio.sleep(0.1)
        assert await bus_breaker(client) == 1
        proxy.hung = False
        await asyncio.sleep(0.35)  # the cooldown: the next batch has Redis pinged
        for _ in range(40):  # bounded
            await answered(client)
            if await bus_breaker(client) == 0:
                break
            await asyncio.sleep(0.05)
        assert await bus_breaker(client) == 0
