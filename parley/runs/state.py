"""What a run has produced so far, as its worker and the agent see it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from parley.assistants import Assistant
from parley.providers.route import Route
from parley.store.schema import Run

if TYPE_CHECKING:
    from parley.answers.compose import SentenceGate


@dataclass
class RunState:
    run: Run
    #: None only when the run failed before its assistant or route could be resolved.
    assistant: Assistant | None
    route: Route | None
    model: str = ""
    text: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    usage_reported: bool = False
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    finish_reason: str | None = None
    fallbacks: int = 0
    sources: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    message_data: dict[str, Any] = field(default_factory=dict)
    #: Checks a model's grounded answer sentence by sentence (``parley.answers.compose``).
    gate: SentenceGate | None = None

    def usage(self) -> dict[str, Any]:
        end = time.perf_counter()
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": None
            if self.route is None
            else self.route.cost_usd(self.input_tokens, self.output_tokens),
            "latency_ms": round((end - self.started) * 1000, 2),
            "ttft_ms": None
            if self.first_token is None
            else round((self.first_token - self.started) * 1000, 2),
        }
