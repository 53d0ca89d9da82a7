"""Wake-ups over PostgreSQL ``LISTEN/NOTIFY``: the default bus of a cluster on PostgreSQL, so
Redis stays optional. One connection per process both listens and notifies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import structlog
from sqlalchemy.engine import make_url

from parley.bus.relay import RECONNECT_SECONDS, RelayBus, payloads

log = structlog.get_logger(__name__)

#: The one channel every process listens on; the payload names the origin and the wake-ups.
CHANNEL = "parley_wake"


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+asyncpg://…``) as the DSN asyncpg itself takes."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresBus(RelayBus):
    def __init__(self, url: str) -> None:
        super().__init__()
        self._dsn = asyncpg_dsn(url)
        self._conn: Any = None
        self._lost = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self._open()
        self._keeper = asyncio.create_task(self._keep_connected(), name="parley-bus-listen")
        self._tasks.append(self._keeper)

    async def _open(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._dsn, timeout=10)
        self._lost.clear()
        conn.add_termination_listener(lambda _conn: self._lost.set())
        await conn.add_listener(CHANNEL, self._on_notify)
        self._conn = conn

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.deliver(payload)

    async def _keep_connected(self) -> None:
        while not self._closing:
            await self._lost.wait()
            log.warning("bus_connection_lost")
            for delay in _forever(RECONNECT_SECONDS):
                await asyncio.sleep(delay)
                try:
                    await self._open()
                except Exception as exc:
                    log.warning("bus_reconnect_failed", error=str(exc))
                    continue
                log.info("bus_reconnected")
                self.wake_all()
                break

    def commit_notice(self, channels: Iterable[str]) -> str | None:
        batches = payloads(self.origin, list(channels))
        return batches[0] if len(batches) == 1 else None

    async def send(self, payload: str) -> None:
        if self._conn is None or self._conn.is_closed():
            raise ConnectionError("the bus connection is down")
        await self._conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)

    async def disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)


def _forever(delays: tuple[float, ...]) -> Any:
    yield from delays
    while True:
        yield delays[-1]
