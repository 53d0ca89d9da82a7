"""Connection hygiene for ``parley serve``: what uvicorn's own settings do not cover.

uvicorn closes a connection idle between two requests after ``timeout_keep_alive``, but it
waits for ever for the headers of a request, and any one client may open as many connections
as the process has file descriptors (1,000 slowloris connections stayed open a minute, then
``/healthz`` failed with the rest). ``guarded_http`` is uvicorn's httptools protocol with

- a header timeout: a connection whose request headers are not complete within
  ``header_timeout`` seconds of its opening (or of its previous response) is closed;
- a bound on the connections open at once from one client address: one more is answered
  ``429`` and closed.

``check_fd_limit`` raises the process's soft limit on open files to its hard limit and warns
when that is still low. docs/SECURITY.md ("Connections") says what to set in front of Parley.
"""

from __future__ import annotations

import asyncio
import resource
from collections import Counter

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger(__name__)

#: Below this many open files a busy server runs out (each stream holds one).
LOW_FD_LIMIT = 4096

_REFUSAL = (
    b'{"error": {"code": "too_many_connections", "message": "too many open connections from this address"}}'
)
_TOO_MANY = (
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"retry-after: 1\r\ncontent-length: " + str(len(_REFUSAL)).encode() + b"\r\n\r\n" + _REFUSAL
)


def guarded_http(*, header_timeout: float, per_client: int) -> type[HttpToolsProtocol]:
    """A uvicorn ``http`` protocol class with these limits (and its own count of connections)."""
    open_per_client: Counter[str] = Counter()

    class GuardedHttp(HttpToolsProtocol):
        _host: str | None = None
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._host = self.client[0] if self.client else "unknown"
            open_per_client[self._host] += 1
            if open_per_client[self._host] > per_client:
                log.warning("too_many_connections", client=self._host, limit=per_client)
                transport.write(_TOO_MANY)
                transport.close()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._host is not None:
                open_per_client[self._host] -= 1
                if open_per_client[self._host] <= 0:
                    del open_per_client[self._host]
                self._host = None
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same time

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedHttp


def check_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; warn when it stays low. Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < LOW_FD_LIMIT:
        log.warning(
            "fd_limit_low",
            limit=soft,
            advice=f"each open connection or stream holds a file descriptor; raise the limit to at least "
            f"{LOW_FD_LIMIT} (ulimit -n, or LimitNOFILE= in a systemd unit)",
        )
    return soft
