"""A small HTTP client of a Parley server, for the terminal commands (``parley chat``, ``ask``).

The commands always speak HTTP, to the server at ``--url`` (or ``PARLEY_URL``, or the
configured host and port). When none answers there and no URL was given, they start a server
in-process, on a free loopback port in a background thread, with the same settings and data
directory as ``parley serve``: one code path, and ``parley ask`` works on a fresh machine.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from parley.config import Settings


class ClientError(Exception):
    pass


@dataclass(slots=True)
class Answer:
    """What one run produced, gathered from its events as they stream."""

    run_id: str = ""
    text: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    cancelled: bool = False
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    #: The sources of a grounded answer, numbered as it cites them.
    sources: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class Event:
    type: str
    data: dict[str, Any]


class Client:
    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)
        self.run_id: str | None = None  # the run being streamed, for cancel

    async def aclose(self) -> None:
        await self.http.aclose()

    async def reachable(self) -> bool:
        try:
            response = await self.http.get("/healthz", timeout=2.0)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def new_thread(self, assistant: str) -> str:
        response = await self.http.post("/v1/threads", json={"assistant": assistant})
        return str(_json(response)["id"])

    async def stream(self, thread_id: str, text: str) -> AsyncIterator[Event]:
        """Start a run and stream its events (the SSE stream of ``"stream": true``)."""
        body = {"input": text, "stream": True}
        async with aconnect_sse(
            self.http,
            "POST",
            f"/v1/threads/{thread_id}/runs",
            json=body,
            timeout=httpx.Timeout(30.0, read=None),
        ) as source:
            if source.response.status_code >= 400:
                await source.response.aread()
                _json(source.response)
            self.run_id = source.response.headers.get("x-run-id")
            async for sse in source.aiter_sse():
                yield Event(sse.event, sse.json() if sse.data else {})
        self.run_id = None

    async def cancel(self, run_id: str) -> None:
        response = await self.http.post(f"/v1/runs/{run_id}/cancel")
        _json(response)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise ClientError(error.get("message") or f"the server answered {response.status_code}")
    return body


@contextmanager
def background_server(settings: Settings) -> Iterator[str]:
    """A Parley server on a free loopback port, in a thread of this process; yields its URL."""
    import uvicorn

    from parley.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="parley-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ClientError("the in-process server did not start; see the log above")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    # Answers need the knowledge in place (a first start loads the embedding model meanwhile).
    first_start = app.state.parley.first_start
    if not first_start.done:
        print("(preparing the knowledge bases: a first start takes up to a minute)", file=sys.stderr)
    while not first_start.done and thread.is_alive() and time.monotonic() < deadline + 600:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
