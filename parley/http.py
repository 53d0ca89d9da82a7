"""ASGI middlewares (pure ASGI, so SSE streams pass through untouched)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Collection, MutableMapping
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley import text
from parley.metrics import Metrics
from parley.uploads import UPLOAD_PATHS

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


#: Paths whose successful requests are not logged: the web page's files, one line each otherwise.
QUIET_PREFIXES = ("/static/", "/favicon")


class RequestContext:
    """Request id (``X-Request-ID`` accepted and returned), access log and HTTP metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.log = structlog.get_logger("parley.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
                route = _route(scope)
                self.metrics.request_seconds.labels(scope["method"], route).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = _route(scope)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            if status >= 400 or not scope["path"].startswith(QUIET_PREFIXES):
                self.log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    ms=round((time.perf_counter() - started) * 1000, 2),
                )
            structlog.contextvars.unbind_contextvars("request_id")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _route(scope: MutableMapping[str, Any]) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, before the app reads past it.

    Whatever the Content-Type: a declared ``Content-Length`` over the limit is refused before a
    byte is read; a body without one (chunked) is read here, at most ``limit`` bytes, and
    replayed to the app. Only the multipart uploads of the routes in ``uploads`` pass through
    untouched: their reader (``parley.uploads.receive``) streams them to disk within the
    larger upload limit, refusing them as soon as they pass it.
    """

    def __init__(self, app: ASGIApp, limit: int, uploads: re.Pattern[str] = UPLOAD_PATHS) -> None:
        self.app = app
        self.limit = limit
        self.uploads = uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_upload(scope):
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _too_large(send, self.limit)
            return
        if length is not None:
            await self.app(scope, receive, send)
            return
        # No length given (chunked): read it here, within the limit, then replay it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await _too_large(send, self.limit)
                return
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _is_upload(self, scope: Scope) -> bool:
        content_type = (_header(scope, b"content-type") or "").lower()
        return content_type.startswith("multipart/form-data") and bool(self.uploads.match(scope["path"]))


_ESCAPED_UNSTORABLE = re.compile(rb"\\u(0000|[dD][89a-fA-F])")


class TextGuard:
    """Refuses text no database can store (``parley.text``) before a route sees it: in the
    path or the query (400) and in a JSON body (422, naming the field). Multipart uploads are
    checked by their reader."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if not text.storable(scope["path"]) or b"\x00" in query or b"%00" in query:
            await _refuse(send, 400, "invalid_characters", f"the URL is refused: {text.REASON}")
            return
        content_type = (_header(scope, b"content-type") or "").lower()
        if scope["method"] in SAFE_METHODS or (content_type and "json" not in content_type):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        where = _unstorable_in(body)
        if where is not None:
            await _refuse(send, 422, "invalid_characters", f"{where}: {text.REASON}")
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _unstorable_in(body: bytes) -> str | None:
    # A fast scan of the raw bytes first: only a body with such an escape is parsed here.
    if not _ESCAPED_UNSTORABLE.search(body):
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None  # the route answers invalid JSON itself
    return text.first_unstorable(value)


#: Methods a browser may send cross-site without asking (and that change nothing here).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class OriginGuard:
    """Refuses (403) state-changing requests that a browser sent from a page of another origin.

    A web page can make its visitor's browser POST a form or a ``text/plain`` body to any
    address without a CORS preflight, and the answer's unreadability does not matter when
    the request itself does the harm (starting a job as the loopback administrator). So
    any method but GET/HEAD/OPTIONS carrying an ``Origin`` must come from this server's own
    origin (the ``Host`` it was sent to) or one listed in ``PARLEY_CORS_ORIGINS``; without
    an ``Origin``, a ``Sec-Fetch-Site`` of ``cross-site`` or ``same-site`` is refused too.
    Clients that are not browsers send neither header and pass.
    """

    def __init__(self, app: ASGIApp, allowed_origins: Collection[str]) -> None:
        self.app = app
        self.allowed = frozenset(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS and not self.allows(scope):
            await _refuse(
                send,
                403,
                "cross_origin_refused",
                "this request came from a web page of another origin; only this server's own pages "
                "and the origins in PARLEY_CORS_ORIGINS may change anything",
            )
            return
        await self.app(scope, receive, send)

    def allows(self, scope: Scope) -> bool:
        origin = _header(scope, b"origin")
        if origin is None:
            return _header(scope, b"sec-fetch-site") not in ("cross-site", "same-site")
        origin = origin.strip().lower()
        if origin in self.allowed:
            return True
        scheme, sep, netloc = origin.partition("://")
        host = (_header(scope, b"host") or "").strip().lower()
        return bool(sep) and scheme in ("http", "https") and bool(host) and netloc == host


def host_name(scope: Scope) -> str:
    """The name the client addressed (the ``Host`` header without its port), lower case."""
    host = (_header(scope, b"host") or "").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _too_large(send: Send, limit: int) -> None:
    await _refuse(send, 413, "too_large", f"request body is larger than {limit} bytes")


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
