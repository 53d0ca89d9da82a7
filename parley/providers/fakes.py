"""Fake model servers on loopback that speak the real wire protocols, with fault injection.

Shipped in the package (like ``scripted``) so tests, demos and benchmarks point the official
SDKs at them: ``FakeOpenAI`` (chat-completions streaming, tool-call deltas, usage chunk),
``FakeAnthropic`` (messages streaming) and ``FakeGemini`` (``streamGenerateContent?alt=sse``).

    async with FakeOpenAI() as server:
        server.enqueue(Reply("Hello there"), Reply(fault=Fault("rate_limit", retry_after=1)))
        provider = openai_provider(f"openai:gpt-4o-mini?base_url={server.url}/v1")

Each request takes the next queued ``Reply`` (then ``default``). Faults: ``rate_limit`` (429
with ``Retry-After``), ``server_error`` (500, or ``status``), ``hang`` (send nothing more after
``after`` chunks; 0: not even the headers), ``drop`` (close the connection after ``after``
chunks), ``malformed`` (a chunk that is not JSON after ``after`` chunks) and ``drip`` (after
``after`` chunks, an SSE comment every ``interval`` seconds and never a token: bytes keep
flowing, so only a timeout on tokens, not on reads, ends it). Every request body
and every TCP connection (when it opened, when the client closed it) is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit

import h11

FaultKind = Literal["rate_limit", "server_error", "hang", "drop", "malformed", "drip"]


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    after: int = 0
    retry_after: float | None = None
    status: int = 500
    interval: float = 0.1  # drip: seconds between two keep-alive comments


@dataclass(slots=True)
class Reply:
    text: str = "Hello from the fake server."
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fault: Fault | None = None
    delay: float = 0.0  # seconds before each chunk
    finish: str | None = None  # dialect's own stop reason; default: stop, or tool calls


@dataclass(slots=True)
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float  # wall-clock time the request arrived
    fault_at: float | None = None  # time.monotonic() when the fault struck


@dataclass(slots=True)
class Connection:
    opened_at: float
    closed_at: float | None = None  # when the client closed it (or the server dropped it)
    requests: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def close(self) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()
        self.closed.set()


class _Dropped(Exception):
    pass


def words(text: str) -> list[str]:
    """Text as streamed pieces: ``["Hello", " world"]``."""
    return re.findall(r"\s*\S+", text) or ([text] if text else [])


class FakeServer(ABC):
    """An HTTP/1.1 server (h11 over asyncio streams) on a free loopback port."""

    def __init__(self, replies: Iterable[Reply] = (), *, default: Reply | None = None) -> None:
        self.replies: deque[Reply] = deque(replies)
        self.default = default or Reply()
        self.requests: list[Received] = []
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def enqueue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self.connections if c.closed_at is None)

    async def wait_closed(self, timeout: float) -> Connection:
        """Wait until the most recent connection is closed; returns it."""
        connection = self.connections[-1]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connection.closed.wait(), timeout)
        return connection

    # -- the dialect -------------------------------------------------------------------

    @abstractmethod
    def accepts(self, method: str, path: str) -> bool: ...

    @abstractmethod
    def chunks(self, reply: Reply, request: Received) -> list[bytes]:
        """The SSE frames of a reply; the first ``len(words)`` carry its content."""

    @abstractmethod
    def error(self, status: int, message: str) -> dict[str, Any]: ...

    def malformed(self) -> bytes:
        return b'data: {"this is": not json\n\n'

    @staticmethod
    def sse(data: Any, event: str | None = None) -> bytes:
        head = f"event: {event}\n" if event else ""
        payload = data if isinstance(data, str) else json.dumps(data)
        return f"{head}data: {payload}\n\n".encode()

    # -- serving -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        connection = Connection(time.monotonic())
        self.connections.append(connection)
        conn = h11.Connection(h11.SERVER)
        watcher: asyncio.Task[bytes] | None = None
        try:
            while True:
                received = await self._read_request(reader, conn)
                if received is None:
                    break
                connection.requests += 1
                self.requests.append(received)
                # Reading on while answering notices at once when the client closes the connection.
                watcher = asyncio.create_task(reader.read(65536))
                responder = asyncio.create_task(self._respond(writer, conn, received))
                done, _ = await asyncio.wait({watcher, responder}, return_when=asyncio.FIRST_COMPLETED)
                if watcher in done and not watcher.result():
                    responder.cancel()
                    await asyncio.gather(responder, return_exceptions=True)
                    break
                await responder
                if conn.our_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
                if not watcher.done():
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)
                if not watcher.cancelled():
                    conn.receive_data(watcher.result())
                watcher = None
        except (_Dropped, ConnectionError, h11.ProtocolError, asyncio.CancelledError):
            pass
        finally:
            if watcher is not None:
                watcher.cancel()
            connection.close()
            writer.transport.abort()
            self._handlers.discard(task)

    async def _read_request(self, reader: asyncio.StreamReader, conn: h11.Connection) -> Received | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                return None
        assert request is not None
        parts = urlsplit(request.target.decode())
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode(errors="replace")
        return Received(
            request.method.decode(), parts.path, dict(parse_qsl(parts.query)), headers, parsed, time.time()
        )

    async def _respond(self, writer: asyncio.StreamWriter, conn: h11.Connection, request: Received) -> None:
        def send(event: Any) -> None:
            data = conn.send(event)
            if data:
                writer.write(data)

        if not self.accepts(request.method, request.path):
            return await self._json(send, writer, 404, self.error(404, f"no route for {request.path}"))
        reply = self.replies.popleft() if self.replies else self.default
        fault = reply.fault
        if fault is not None and (
            fault.kind in ("rate_limit", "server_error") or (fault.kind == "hang" and not fault.after)
        ):
            request.fault_at = time.monotonic()
        if fault is not None and fault.kind == "rate_limit":
            headers = {} if fault.retry_after is None else {"retry-after": f"{fault.retry_after:g}"}
            return await self._json(send, writer, 429, self.error(429, "rate limit exceeded"), headers)
        if fault is not None and fault.kind == "server_error":
            return await self._json(send, writer, fault.status, self.error(fault.status, "upstream failure"))
        if fault is not None and fault.kind == "hang" and fault.after == 0:
            await self._stopping.wait()
            raise _Dropped
        send(
            h11.Response(
                status_code=200,
                headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache")],
            )
        )
        await writer.drain()
        for index, chunk in enumerate(self.chunks(reply, request)):
            if fault is not None and index == fault.after:
                request.fault_at = time.monotonic()
                if fault.kind == "hang":
                    await self._stopping.wait()
                    raise _Dropped
                if fault.kind == "drop":
                    writer.transport.abort()
                    raise _Dropped
                if fault.kind == "malformed":
                    send(h11.Data(data=self.malformed()))
                    await writer.drain()
                if fault.kind == "drip":
                    while not self._stopping.is_set():
                        send(h11.Data(data=b": keep-alive\n\n"))
                        await writer.drain()
                        await asyncio.sleep(fault.interval)
                    raise _Dropped
            if reply.delay:
                await asyncio.sleep(reply.delay)
            send(h11.Data(data=chunk))
            await writer.drain()
        send(h11.EndOfMessage())
        await writer.drain()
        return None

    async def _json(
        self,
        send: Any,
        writer: asyncio.StreamWriter,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        payload = json.dumps(body).encode()
        send(
            h11.Response(
                status_code=status,
                headers=[
                    ("content-type", "application/json"),
                    ("content-length", str(len(payload))),
                    *(headers or {}).items(),
                ],
            )
        )
        send(h11.Data(data=payload))
        send(h11.EndOfMessage())
        await writer.drain()


def _prompt_tokens(body: Any) -> int:
    return len(json.dumps(body).split()) if body is not None else 0


class FakeOpenAI(FakeServer):
    """``POST .../chat/completions`` with ``stream: true``."""

    def accepts(self, method: str, path: str) -> bool:
        return method == "POST" and path.endswith("/chat/completions")

    def error(self, status: int, message: str) -> dict[str, Any]:
        kind = {429: "rate_limit_error", 404: "not_found_error"}.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "code": None, "param": None}}

    def chunks(self, reply: Reply, request: Received) -> list[bytes]:
        body = request.body or {}
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        model = body.get("model", "fake")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return self.sse(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                }
            )

        pieces = words(reply.text)
        frames = [
            chunk({"role": "assistant", "content": p} if i == 0 else {"content": p})
            for i, p in enumerate(pieces)
        ]
        for index, (name, arguments) in enumerate(reply.tool_calls):
            text = json.dumps(arguments)
            call = {"index": index, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "function"}
            frames.append(chunk({"tool_calls": [{**call, "function": {"name": name, "arguments": ""}}]}))
            for start in range(0, len(text), 8):
                fragment = {"index": index, "function": {"arguments": text[start : start + 8]}}
                frames.append(chunk({"tool_calls": [fragment]}))
        finish = reply.finish or ("tool_calls" if reply.tool_calls else "stop")
        frames.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "prompt_tokens": _prompt_tokens(body.get("messages")),
                "completion_tokens": len(pieces) + len(reply.tool_calls),
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            frames.append(
                self.sse(
                    {
                        "id": ident,
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        frames.append(self.sse("[DONE]"))
        return frames


class FakeAnthropic(FakeServer):
    """``POST /v1/messages`` with ``stream: true``."""

    def accepts(self, method: str, path: str) -> bool:
        return method == "POST" and path.endswith("/v1/messages")

    def malformed(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": not json\n\n'

    def error(self, status: int, message: str) -> dict[str, Any]:
        kind = {429: "rate_limit_error", 404: "not_found_error", 529: "overloaded_error"}.get(
            status, "api_error"
        )
        return {"type": "error", "error": {"type": kind, "message": message}}

    def chunks(self, reply: Reply, request: Received) -> list[bytes]:
        body = request.body or {}
        pieces = words(reply.text)
        message = {
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": _prompt_tokens(body.get("messages")), "output_tokens": 1},
        }
        frames: list[bytes] = []
        text_frames = [
            self.sse(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
                "content_block_delta",
            )
            for p in pieces
        ]
        # Content frames come first so ``Fault.after`` counts content, as for the other dialects.
        start = self.sse({"type": "message_start", "message": message}, "message_start")
        block = 0
        if pieces:
            opening = {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
            text_frames[0] = start + self.sse(opening, "content_block_start") + text_frames[0]
            frames.extend(text_frames)
            frames.append(self.sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
            block = 1
        else:
            frames.append(start)
        for offset, (name, arguments) in enumerate(reply.tool_calls):
            index = block + offset
            tool = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:8]}", "name": name, "input": {}}
            frames.append(
                self.sse(
                    {"type": "content_block_start", "index": index, "content_block": tool},
                    "content_block_start",
                )
            )
            text = json.dumps(arguments)
            for s in range(0, len(text), 8):
                delta = {"type": "input_json_delta", "partial_json": text[s : s + 8]}
                frames.append(
                    self.sse(
                        {"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta"
                    )
                )
            frames.append(self.sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        stop = reply.finish or ("tool_use" if reply.tool_calls else "end_turn")
        frames.append(
            self.sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": len(pieces) + len(reply.tool_calls)},
                },
                "message_delta",
            )
        )
        frames.append(self.sse({"type": "message_stop"}, "message_stop"))
        return frames


class FakeGemini(FakeServer):
    """``POST /v1beta/models/MODEL:streamGenerateContent?alt=sse``."""

    def accepts(self, method: str, path: str) -> bool:
        return method == "POST" and path.endswith(":streamGenerateContent")

    def error(self, status: int, message: str) -> dict[str, Any]:
        names = {429: "RESOURCE_EXHAUSTED", 404: "NOT_FOUND", 503: "UNAVAILABLE"}
        return {"error": {"code": status, "message": message, "status": names.get(status, "INTERNAL")}}

    def chunks(self, reply: Reply, request: Received) -> list[bytes]:
        body = request.body or {}
        pieces = words(reply.text)
        prompt = _prompt_tokens(body.get("contents"))

        def chunk(parts: list[dict[str, Any]], finish: str | None = None, produced: int = 0) -> bytes:
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            if finish:
                candidate["finishReason"] = finish
            usage = {
                "promptTokenCount": prompt,
                "candidatesTokenCount": produced,
                "totalTokenCount": prompt + produced,
            }
            return self.sse({"candidates": [candidate], "usageMetadata": usage, "modelVersion": "fake"})

        frames = [chunk([{"text": p}], produced=i + 1) for i, p in enumerate(pieces)]
        calls = [{"functionCall": {"name": name, "args": arguments}} for name, arguments in reply.tool_calls]
        produced = len(pieces) + len(calls)
        frames.append(chunk(calls or [{"text": ""}], reply.finish or "STOP", produced))
        return frames
