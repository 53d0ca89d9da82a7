"""The scripted provider: replays deltas. Shipped for tests, demos and benchmarks.

Route forms:

- ``scripted:echo`` echoes the user's last message word by word
  (``?delay_ms=N`` sleeps between words).
- ``scripted:bench?tokens=500&delay_ms=0`` streams a fixed number of tokens.
- ``scripted:script?path=FILE.json`` replays a JSON script: a list of turns, each a list of
  steps ``{"text": ...}``, ``{"tool_call": {"name", "arguments", "id"?}}``, ``{"delay_ms": N}``,
  ``{"error": {"message", "retryable"?, "status"?}}``, ``{"hang": true}``. Each call plays the
  next turn; the last turn repeats.
- In code: ``ScriptedProvider(turns=[[TextDelta("hi")]])`` or ``.enqueue([...])``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from parley.providers.base import (
    Delta,
    Finish,
    Provider,
    ProviderError,
    ProviderRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
)


class Delay:
    """A pause inside a script."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Hang:
    """Never answer again (until cancelled)."""


Step = Delta | Delay | Hang | ProviderError


#: Requests a scripted provider built from a spec (``PARLEY_MODEL=scripted:…``) keeps.
SERVED_KEEPS = 100


class ScriptedProvider(Provider):
    def __init__(
        self,
        mode: str = "script",
        *,
        turns: Sequence[Sequence[Step]] = (),
        delay_ms: float = 0.0,
        tokens: int = 500,
        chooses_tools: bool = True,
        name: str | None = None,
        keep: int | None = None,
    ) -> None:
        self.mode = mode
        self.model = mode
        self.name = name or f"scripted:{mode}"
        self.delay = delay_ms / 1000.0
        self.tokens = tokens
        self.chooses_tools = chooses_tools
        self._turns: list[list[Step]] = [list(turn) for turn in turns]
        self._played = 0
        #: The requests received, for tests to read: the latest ``keep`` (all when ``None``).
        self.requests: list[ProviderRequest] = []
        self.keep = keep
        self.open_streams = 0

    @classmethod
    def from_spec(cls, spec: str) -> ScriptedProvider:
        """Build from the part after ``scripted:``, e.g. ``bench?tokens=500&delay_ms=0``. A server's
        provider keeps its latest ``SERVED_KEEPS`` requests: a 20-minute soak grew by every one."""
        provider = cls._from_spec(spec)
        provider.keep = SERVED_KEEPS
        return provider

    @classmethod
    def _from_spec(cls, spec: str) -> ScriptedProvider:
        mode, _, query = spec.partition("?")
        params = dict(parse_qsl(query))
        name = f"scripted:{spec}"
        delay = float(params.get("delay_ms", 0))
        if mode == "echo":
            return cls("echo", delay_ms=delay, name=name)
        if mode == "bench":
            return cls("bench", delay_ms=delay, tokens=int(params.get("tokens", 500)), name=name)
        if mode == "script":
            if "path" not in params:
                raise ValueError("scripted:script needs ?path=FILE.json")
            turns = load_script(Path(params["path"]))
            return cls("script", turns=turns, delay_ms=delay, name=name)
        raise ValueError(f"unknown scripted mode {mode!r}: use echo, bench or script")

    def enqueue(self, steps: Sequence[Step]) -> None:
        self._turns.append(list(steps))

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        self.requests.append(request)
        if self.keep is not None and len(self.requests) > self.keep:
            del self.requests[: len(self.requests) - self.keep]
        self.open_streams += 1
        try:
            async for delta in self._play(request):
                yield delta
        finally:
            self.open_streams -= 1

    async def _play(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        prompt_tokens = sum(self.count_tokens(m.content) for m in request.messages)
        if self.mode == "echo":
            words = _last_user_text(request).split()
            already = len(request.prefix.split())
            for i, word in enumerate(words[already:], start=already):
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield TextDelta(word if i == 0 else " " + word)
            yield Usage(prompt_tokens, len(words[already:]))
            yield Finish("stop")
            return
        if self.mode == "bench":
            for i in range(self.tokens):
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield TextDelta(f" tok{i}")
            yield Usage(prompt_tokens, self.tokens)
            yield Finish("stop")
            return
        if not self._turns:
            raise ProviderError("the scripted provider has no script left", code="script_exhausted")
        turn = self._turns[min(self._played, len(self._turns) - 1)]
        self._played += 1
        produced = 0
        saw_tool = False
        for step in turn:
            if self.delay:
                await asyncio.sleep(self.delay)
            if isinstance(step, Delay):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Hang):
                await asyncio.Event().wait()
            elif isinstance(step, ProviderError):
                raise step
            else:
                if isinstance(step, TextDelta):
                    produced += self.count_tokens(step.text)
                saw_tool = saw_tool or isinstance(step, ToolCallDelta)
                yield step
        if not any(isinstance(s, Usage) for s in turn):
            yield Usage(prompt_tokens, produced)
        if not any(isinstance(s, Finish) for s in turn):
            yield Finish("tool_calls" if saw_tool else "stop")


def _last_user_text(request: ProviderRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.content
    return ""


def load_script(path: Path) -> list[list[Step]]:
    raw = json.loads(path.read_text())
    if not isinstance(raw, list) or not all(isinstance(turn, list) for turn in raw):
        raise ValueError(f"{path}: a script is a JSON list of turns, each a list of steps")
    return [[_step(item) for item in turn] for turn in raw]


def _step(item: dict[str, Any]) -> Step:
    if "text" in item:
        return TextDelta(str(item["text"]))
    if "tool_call" in item:
        call = item["tool_call"]
        arguments = call.get("arguments", {})
        return ToolCallDelta(
            index=int(call.get("index", 0)),
            id=call.get("id"),
            name=call["name"],
            arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
        )
    if "delay_ms" in item:
        return Delay(float(item["delay_ms"]) / 1000.0)
    if item.get("hang"):
        return Hang()
    if "error" in item:
        err = item["error"]
        return ProviderError(
            err.get("message", "scripted failure"),
            retryable=bool(err.get("retryable", False)),
            status=err.get("status"),
        )
    raise ValueError(f"unknown script step: {item!r}")
