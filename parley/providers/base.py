"""The provider interface: one abstract streaming method, and the types it speaks.

A provider turns a ``ProviderRequest`` into an async stream of deltas: text, tool-call
fragments, usage and the finish reason. Closing the stream (``aclose``, or cancelling
the task iterating it) must close the upstream connection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(slots=True)
class ChatMessage:
    role: Role
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object


@dataclass(slots=True)
class ProviderRequest:
    messages: list[ChatMessage]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str | None = None  # None = provider default; "none", "auto", "required" or a tool name
    max_tokens: int | None = None
    temperature: float | None = None
    # A JSON schema the output must follow (constrained decoding where the provider supports it).
    response_schema: dict[str, Any] | None = None
    # Continue an answer another provider started (mid-stream failover): text already sent.
    prefix: str = ""
    # Lets a provider keep per-conversation state, such as a local model's prompt cache.
    thread_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class TextDelta:
    text: str


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    """A fragment of a tool call; fragments with the same ``index`` form one call."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True, frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(slots=True, frozen=True)
class Finish:
    reason: str  # "stop", "length", "tool_calls", ...


@dataclass(slots=True, frozen=True)
class Fallback:
    """Emitted by a route (not a provider) when it switches providers."""

    from_: str
    to: str
    reason: str


Delta = TextDelta | ToolCallDelta | Usage | Finish | Fallback


class ProviderError(Exception):
    """A provider failed. ``retryable`` errors may be retried or failed over."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
        code: str = "provider_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.code = code


@dataclass(slots=True, frozen=True)
class StreamTimeouts:
    """How long a route waits on a remote provider (seconds): for the connection, for the first
    delta (headers included) and between two deltas. Hitting one is a retryable failure."""

    connect: float = 5.0
    first_token: float = 20.0
    idle: float = 30.0


class Provider(ABC):
    """A model backend. ``name`` is its route entry, e.g. ``openai:gpt-4o-mini``."""

    name: str
    model: str
    #: Enforced by the route; ``None`` (local and scripted providers): no time limit.
    timeouts: StreamTimeouts | None = None
    #: Small models cannot choose tools themselves; the server chooses for them.
    chooses_tools: bool = True

    @abstractmethod
    def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        """Stream the reply to ``request``."""

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` for this model; a documented estimate unless overridden.

        The estimate is ~4 characters per token (OpenAI's rule of thumb for English),
        never less than the number of words.
        """
        return max(len(text.split()), (len(text) + 3) // 4)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients or model memory."""


def split_options(spec: str) -> tuple[str, dict[str, str]]:
    """``model?key=value&...`` (the part of a route entry after ``kind:``) -> model and options."""
    model, _, query = spec.partition("?")
    return model, dict(parse_qsl(query, keep_blank_values=True))


CONTINUE_INSTRUCTION = (
    "Your previous reply was cut off after the text above. Continue it from exactly where it "
    "stops: do not repeat any of it, do not comment on the interruption."
)


def continuation(request: ProviderRequest) -> list[ChatMessage]:
    """The messages for a provider that cannot prefill its reply: continue ``request.prefix``."""
    if not request.prefix:
        return list(request.messages)
    return [
        *request.messages,
        ChatMessage("assistant", request.prefix),
        ChatMessage("user", CONTINUE_INSTRUCTION),
    ]
