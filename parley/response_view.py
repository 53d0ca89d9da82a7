"""A run's event log seen as an OpenAI Responses object and its stream events.

``ResponseView`` reads a run's events in log order and says what a Responses client sees: the
stream events each one makes (``response.created`` first, before any event of the log; then
``response.in_progress`` for ``run.started``, the output items, their parts and deltas, and
one of ``response.completed`` / ``response.incomplete`` / ``response.failed`` for the terminal
event) and the response object so far (``snapshot``). It is a pure function of the run's row and
its log: the same log gives the same events with the same ``sequence_number`` (0, 1, 2... in
order) on any process, at any time. That is what makes ``starting_after=N`` exact: a resumed
stream replays the log through a fresh view and sends only the events numbered after ``N``.

Output items: the reply's text is one ``message`` item (``msg_<run>_<index>``), opened by its
first delta and closed by the next tool call or the end; each tool call of the client's
(``tools=`` on the request, ``parley.passthrough``) is a ``function_call`` item
(``fc_<run>_<index>``). What only Parley has (sources, provider fallbacks, its own tools'
calls, results and rejections, cost and latency) goes in the response's ``parley`` field,
which the SDK keeps as an extra and never parses.

A cancelled run ends with ``response.incomplete`` whose response has status ``cancelled`` (the
SDK has no ``response.cancelled`` stream event). Error codes outside the SDK's list are
``server_error`` (``rate_limit_exceeded`` for rate limits), Parley's own code in
``parley.error``.
"""

from __future__ import annotations

from typing import Any

import orjson

from parley import events as ev
from parley import passthrough
from parley.events import RunEvent
from parley.store.schema import Run

#: Where a response keeps what it was asked (``run.options``).
KEY = "response"
_RATE_LIMIT_CODES = frozenset({"rate_limited", "rate_limit", "rate_limit_exceeded", "budget_exceeded"})


def spec_of(run: Run) -> dict[str, Any]:
    spec: dict[str, Any] = (run.options or {}).get(KEY) or {}
    return spec


def is_response(run: Run) -> bool:
    return KEY in (run.options or {})


def usage_of(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    prompt, completion = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def error_of(error: dict[str, Any]) -> dict[str, Any]:
    code = str(error.get("code") or "server_error")
    return {
        "code": "rate_limit_exceeded" if code in _RATE_LIMIT_CODES else "server_error",
        "message": str(error.get("message") or "the response failed"),
    }


class ResponseView:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.spec = spec_of(run)
        self._stem = run.id.removeprefix("run_")
        self._client_tools = passthrough.client_tools(run.options)
        self.sequence = 0
        self.status = "queued" if self.spec.get("background") else "in_progress"
        self.output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the message item being written
        self._pieces: list[str] = []
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.incomplete: dict[str, Any] | None = None
        self.completed_at: float | None = None
        self.extras: dict[str, Any] = {"run_id": run.id, "thread_id": run.thread_id}
        self.done = False

    # -- stream events ---------------------------------------------------------------

    def _event(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type_, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        """The events before the log's first: ``response.created``."""
        return [self._event("response.created", response=self.snapshot())]

    def feed(self, event: RunEvent) -> list[dict[str, Any]]:
        """The stream events one log event makes (none for most of Parley's own)."""
        kind = event.type
        if kind == ev.MESSAGE_DELTA:
            text = str(event.payload()["text"])
            out = [] if self._open is not None else self._open_message()
            assert self._open is not None
            self._pieces.append(text)
            out.append(
                self._event(
                    "response.output_text.delta",
                    item_id=self._open["id"],
                    output_index=len(self.output) - 1,
                    content_index=0,
                    delta=text,
                    logprobs=[],
                )
            )
            return out
        if kind == ev.RUN_STARTED:
            self.status = "in_progress"
            data = event.payload()
            self.extras["provider"] = data.get("model")
            if data.get("variant"):
                self.extras["variant"] = data["variant"]
            return [self._event("response.in_progress", response=self.snapshot())]
        if kind == ev.TOOL_CALL and self._client_tools:
            return self._function_call(event.payload())
        if event.terminal:
            return self._finish(event)
        self._extra(kind, event.payload())
        return []

    def _open_message(self) -> list[dict[str, Any]]:
        index = len(self.output)
        item = {
            "id": f"msg_{self._stem}_{index}",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        self.output.append(item)
        self._open, self._pieces = item, []
        return [
            self._event("response.output_item.added", output_index=index, item=dict(item, content=[])),
            self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=_part(""),
            ),
        ]

    def _close_message(self, status: str) -> list[dict[str, Any]]:
        item = self._open
        if item is None:
            return []
        self._open = None
        index = self.output.index(item)
        text = "".join(self._pieces)
        item["content"], item["status"] = [_part(text)], status
        return [
            self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self._event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=_part(text),
            ),
            self._event("response.output_item.done", output_index=index, item=_copy(item)),
        ]

    def _function_call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._close_message("completed")
        index = len(self.output)
        arguments = str(call.get("arguments") or "")
        item = {
            "id": f"fc_{self._stem}_{index}",
            "type": "function_call",
            "call_id": call["id"],
            "name": call["name"],
            "arguments": "",
            "status": "in_progress",
        }
        self.output.append(item)
        out.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
        out.append(
            self._event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=arguments,
            )
        )
        out.append(
            self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=call["name"],
                arguments=arguments,
            )
        )
        item["arguments"], item["status"] = arguments, "completed"
        out.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        return out

    def _finish(self, event: RunEvent) -> list[dict[str, Any]]:
        data = event.payload()
        self.done = True
        self.completed_at = event.created_at
        if event.type == ev.RUN_COMPLETED:
            cut = data.get("finish_reason") == "length"
            out = self._close_message("incomplete" if cut else "completed")
            self.usage = usage_of(data.get("usage"))
            self.extras.update(
                {
                    k: v
                    for k, v in (data.get("usage") or {}).items()
                    if k not in ("input_tokens", "output_tokens")
                }
            )
            self.extras["message_id"] = data.get("message_id")
            if data.get("sources"):
                self.extras["sources"] = data["sources"]
            if cut:
                self.status, self.incomplete = "incomplete", {"reason": "max_output_tokens"}
                out.append(self._event("response.incomplete", response=self.snapshot()))
            else:
                self.status = "completed"
                out.append(self._event("response.completed", response=self.snapshot()))
            return out
        out = self._close_message("incomplete")
        if event.type == ev.RUN_FAILED:
            error = data.get("error") or {}
            self.status, self.error = "failed", error_of(error)
            self.extras["error"] = error
            out.append(self._event("response.failed", response=self.snapshot()))
        else:
            self.status = "cancelled"
            if data.get("reason"):
                self.extras["cancelled"] = data["reason"]
            out.append(self._event("response.incomplete", response=self.snapshot()))
        return out

    def _extra(self, kind: str, data: dict[str, Any]) -> None:
        if kind == ev.PROVIDER_FALLBACK:
            self.extras.setdefault("fallbacks", []).append(data)
        elif kind == ev.RETRIEVAL:
            self.extras["sources"] = data.get("sources", [])
        elif kind == ev.TOOL_CALL:
            self.extras.setdefault("tool_calls", []).append(data)
        elif kind == ev.TOOL_RESULT:
            self.extras.setdefault("tool_results", []).append({k: data.get(k) for k in ("id", "output")})
        elif kind == ev.TOOL_REJECTED:
            self.extras.setdefault("tool_rejections", []).append(data)

    # -- the response object -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        spec, output = self.spec, [_copy(item) for item in self.output]
        if self._open is not None:
            open_index = self.output.index(self._open)
            output[open_index]["content"] = [_part("".join(self._pieces))]
        conversation = spec.get("conversation")
        return {
            "id": self.run.id,
            "object": "response",
            "created_at": self.run.created_at,
            "status": self.status,
            "background": bool(spec.get("background")),
            "model": spec.get("model") or self.run.assistant,
            "output": output,
            "instructions": spec.get("instructions"),
            "metadata": spec.get("metadata") or {},
            "previous_response_id": spec.get("previous_response_id"),
            "conversation": {"id": conversation} if conversation else None,
            "store": spec.get("store", True),
            "tools": spec.get("tools") or [],
            "tool_choice": spec.get("tool_choice") or "auto",
            "parallel_tool_calls": True,
            "temperature": spec.get("temperature"),
            "top_p": None,
            "max_output_tokens": spec.get("max_output_tokens"),
            "text": {"format": spec.get("format") or {"type": "text"}},
            "truncation": "disabled",
            "usage": self.usage,
            "error": self.error,
            "incomplete_details": self.incomplete,
            "completed_at": self.completed_at if self.status == "completed" else None,
            "parley": dict(self.extras),
        }


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    copied = dict(item)
    if "content" in copied:
        copied["content"] = [dict(part) for part in copied["content"]]
    return copied


def frame(event: dict[str, Any]) -> bytes:
    """One stream event as an SSE frame: ``id`` is its sequence number (``Last-Event-ID`` resumes)."""
    head = f"event: {event['type']}\nid: {event['sequence_number']}\ndata: ".encode()
    return head + orjson.dumps(event, default=str) + b"\n\n"
