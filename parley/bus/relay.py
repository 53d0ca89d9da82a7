"""A bus that relays wake-ups between processes: local subscribers are woken at once, and the
channels published here go out in batches over one connection per process (``Relay``);
channels published by other processes come back over one listening connection and wake the
local subscribers. A process ignores its own messages (it has woken its subscribers already).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from abc import abstractmethod

import structlog

from parley.bus import LocalBus

log = structlog.get_logger(__name__)

#: PostgreSQL's NOTIFY payload limit is 8000 bytes; Redis has none, but batches stay small.
MAX_PAYLOAD = 7500
RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


class RelayBus(LocalBus):
    """``LocalBus`` plus a relay. Subclasses connect, send a payload and deliver what arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._outbox: dict[str, None] = {}
        self._send_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        #: Messages from other processes delivered here, and messages this process sent over
        #: its own connection (wake-ups that rode a commit are in neither: for tests).
        self.received = 0
        self.sent = 0

    async def start(self) -> None:
        await self.connect()
        self._tasks.append(asyncio.create_task(self._send_loop(), name="parley-bus-send"))

    async def publish(self, channel: str) -> None:
        await super().publish(channel)
        self._outbox[channel] = None
        self._send_wake.set()

    async def wake_here(self, channel: str) -> None:
        await LocalBus.publish(self, channel)

    def deliver(self, payload: str) -> None:
        """A message from the relay: wake this process's subscribers of its channels."""
        origin, _, channels = payload.partition(" ")
        if origin == self.origin:
            return
        self.received += 1
        for channel in channels.split(" "):
            for subscription in self._subscribers.get(channel, ()):
                subscription.wake()

    def wake_all(self) -> None:
        """After the relay reconnects: wake-ups may have been lost, so every subscriber re-reads."""
        for subscriptions in list(self._subscribers.values()):
            for subscription in subscriptions:
                subscription.wake()

    async def _send_loop(self) -> None:
        while not self._closing:
            await self._send_wake.wait()
            self._send_wake.clear()
            channels, self._outbox = list(self._outbox), {}
            for payload in payloads(self.origin, channels):
                try:
                    await self.send(payload)
                    self.sent += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the log stays the truth: readers fall back to polling
                    log.warning("bus_send_failed", error=str(exc))

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.disconnect()

    @abstractmethod
    async def connect(self) -> None:
        """Open the connections and start delivering what other processes publish."""

    @abstractmethod
    async def send(self, payload: str) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...


def payloads(origin: str, channels: list[str]) -> list[str]:
    """``channels`` as messages of ``origin``, each within the NOTIFY payload limit."""
    out, current = [], origin
    for channel in channels:
        if len(current) + 1 + len(channel) > MAX_PAYLOAD and current != origin:
            out.append(current)
            current = origin
        current += " " + channel
    if current != origin:
        out.append(current)
    return out
