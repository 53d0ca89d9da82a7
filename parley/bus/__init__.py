"""Wake-ups between processes and tasks: new events of a run (for its readers), a queued run
(for idle workers), a cancel request (for the run's worker).

The bus never carries events, only "something new on this channel": a reader that wakes up
reads the log (or the runs table). So a lost or duplicated wake-up costs a read, never an
event. ``LocalBus`` serves one process; ``parley.bus.postgres`` (LISTEN/NOTIFY) and
``parley.bus.redis`` (pub/sub) relay the same wake-ups between processes.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager


class Subscription(ABC):
    @abstractmethod
    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for a wake-up; True if one came, False on timeout."""


class Bus(ABC):
    @abstractmethod
    async def publish(self, channel: str) -> None: ...

    @abstractmethod
    def subscribe(self, channel: str) -> AbstractAsyncContextManager[Subscription]:
        """An async context manager: subscribed before it yields, so no wake-up is missed."""

    def commit_notice(self, channels: Iterable[str]) -> str | None:
        """The payload with which a PostgreSQL transaction relays wake-ups of ``channels`` to the
        other processes as it commits (``pg_notify(parley.bus.postgres.CHANNEL, payload)``), for a
        bus that listens there; None for any other bus (``publish`` after the commit).

        A notification sent by the commit reaches the other processes as the data does, with no
        round trip or pass through this process's event loop in between; the committer then
        wakes its own subscribers with ``wake_here``."""
        return None

    async def wake_here(self, channel: str) -> None:
        """Wake this process's subscribers of ``channel`` only (the other processes were told
        by the commit: ``commit_notice``)."""
        await self.publish(channel)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect (a remote bus): called once, before the first publish."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


class _LocalSubscription(Subscription):
    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout):  # no extra task, unlike wait_for
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


class LocalBus(Bus):
    """In-process bus: the default for a single Parley process."""

    def __init__(self) -> None:
        self._subscribers: defaultdict[str, set[_LocalSubscription]] = defaultdict(set)

    async def publish(self, channel: str) -> None:
        for subscription in self._subscribers.get(channel, ()):
            subscription.wake()

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        subscription = _LocalSubscription()
        self._subscribers[channel].add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscribers.get(channel)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[channel]

    def subscriber_count(self, channel: str) -> int:
        return len(self._subscribers.get(channel, ()))
