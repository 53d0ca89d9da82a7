"""Wake-ups over Redis pub/sub, when ``PARLEY_REDIS_URL`` is set: one subscribing connection
per process, and a pooled one to publish, behind a circuit breaker: while Redis hangs or is
down, batches are dropped at once (counted in ``/metrics``) instead of each waiting for its time
limit, and readers in other processes fall back to polling the event log."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from parley.breaker import Breaker, Unavailable
from parley.bus.relay import RECONNECT_SECONDS, RelayBus

log = structlog.get_logger(__name__)

CHANNEL = "parley:wake"
#: Longest a batch of wake-ups waits for Redis before it counts as a failure.
SEND_TIMEOUT = 0.5


class RedisBus(RelayBus):
    def __init__(self, url: str, *, timeout: float = SEND_TIMEOUT, breaker: Breaker | None = None) -> None:
        super().__init__()
        self._url = url
        self._timeout = timeout
        self._redis: Any = None
        self._listener: Any = None
        self.breaker = breaker or Breaker("bus", timeout=timeout)
        self.breaker.probe = self._ping

    async def connect(self) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(
            self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout
        )
        self._listener = Redis.from_url(
            self._url, socket_connect_timeout=self._timeout, health_check_interval=10
        )
        # Subscribes in the background: a Redis that is down at start costs wake-ups (readers
        # fall back to polling the log), never the start of the server.
        self._tasks.append(asyncio.create_task(self._listen(), name="parley-bus-listen"))

    async def _subscribe_once(self) -> Any:
        pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(CHANNEL)
        return pubsub

    async def _listen(self) -> None:
        pubsub: Any = None
        failures = 0
        while not self._closing:
            try:
                if pubsub is None:
                    pubsub = await self._subscribe_once()
                    if failures:
                        log.info("bus_reconnected")
                        self.wake_all()
                    failures = 0
                message = await pubsub.get_message(timeout=5.0)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    self.deliver(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                    pubsub = None
                log.warning("bus_connection_lost", error=str(exc))
                await asyncio.sleep(RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)])
                failures += 1

    async def send(self, payload: str) -> None:
        try:
            await self.breaker.call(lambda: self._redis.publish(CHANNEL, payload))
        except Unavailable as exc:
            if exc.reason != "circuit open":  # while open, dropped quietly (and counted)
                raise

    async def _ping(self) -> None:
        await self._redis.ping()

    async def disconnect(self) -> None:
        await self.breaker.aclose()
        for client in (self._redis, self._listener):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
