"""Anthropic's Messages API through the official ``anthropic`` SDK.

Route entries: ``anthropic:claude-3-5-haiku-latest`` (key from ``ANTHROPIC_API_KEY``), with
options ``base_url``, ``key_env=VAR``, ``max_tokens=N`` (the API needs a limit; default 1024)
and the timeouts ``connect_timeout``, ``first_token_timeout`` and ``timeout`` (see ``openai``). A continued reply (``request.prefix``) uses Anthropic's native prefill:
the reply so far is the final assistant turn. A ``response_schema`` becomes a forced tool whose
input is the answer, streamed as text.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic

from parley.config import Settings
from parley.providers.base import (
    ChatMessage,
    Delta,
    Finish,
    Provider,
    ProviderError,
    ProviderRequest,
    StreamTimeouts,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
    split_options,
)
from parley.providers.http import (
    TRANSPORT_ERRORS,
    api_key,
    broken_stream,
    detail_of,
    status_error,
    timeouts_option,
    unreachable,
)

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_ANSWER_TOOL = "respond"


class AnthropicProvider(Provider):
    def __init__(
        self,
        model: str,
        *,
        name: str,
        api_key: str,
        base_url: str | None = None,
        timeouts: StreamTimeouts | None = None,
        max_tokens: int = 1024,
    ) -> None:
        self.model = model
        self.timeouts = timeouts or StreamTimeouts()
        self.name = name
        self.label = name.partition("?")[0]
        self.max_tokens = max_tokens
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=anthropic.Timeout(
                max(self.timeouts.first_token, self.timeouts.idle) + 1.0, connect=self.timeouts.connect
            ),
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        try:
            stream = await self.client.messages.create(**self.params(request))
        except anthropic.APIError as exc:
            raise self._error(exc) from exc
        answer_as_text = request.response_schema is not None
        # Prefill ends without trailing whitespace (the API refuses it); drop the model's
        # leading whitespace instead, so the joined reply reads as one.
        strip_lead = request.prefix != request.prefix.rstrip()
        tool_index: dict[int, int] = {}
        input_tokens = output_tokens = 0
        finish: str | None = None
        try:
            async for event in stream:
                if event.type == "message_start":
                    usage = event.message.usage
                    input_tokens = (
                        usage.input_tokens
                        + (usage.cache_read_input_tokens or 0)
                        + (usage.cache_creation_input_tokens or 0)
                    )
                    output_tokens = usage.output_tokens
                elif event.type == "content_block_start":
                    block = event.content_block
                    if block.type == "text" and block.text:
                        yield TextDelta(block.text)
                    elif block.type == "tool_use" and not answer_as_text:
                        tool_index[event.index] = len(tool_index)
                        yield ToolCallDelta(tool_index[event.index], id=block.id, name=block.name)
                elif event.type == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta" and delta.text:
                        text = delta.text.lstrip() if strip_lead else delta.text
                        strip_lead = strip_lead and not text
                        if text:
                            yield TextDelta(text)
                    elif delta.type == "input_json_delta" and delta.partial_json:
                        if answer_as_text:
                            yield TextDelta(delta.partial_json)
                        elif event.index in tool_index:
                            yield ToolCallDelta(tool_index[event.index], arguments=delta.partial_json)
                elif event.type == "message_delta":
                    output_tokens = event.usage.output_tokens
                    if event.delta.stop_reason:
                        finish = _STOP_REASONS.get(event.delta.stop_reason, event.delta.stop_reason)
                        if answer_as_text and finish == "tool_calls":
                            finish = "stop"
        except anthropic.APIConnectionError as exc:  # newer SDKs wrap a dropped stream in this
            raise broken_stream(
                self.label, f"the stream broke off ({type(exc.__cause__ or exc).__name__})"
            ) from exc
        except anthropic.APIError as exc:
            raise self._error(exc) from exc
        except TRANSPORT_ERRORS as exc:
            raise broken_stream(self.label, f"the stream broke off ({type(exc).__name__})") from exc
        except ValueError as exc:
            raise broken_stream(self.label, f"sent a malformed event ({exc})") from exc
        finally:
            await stream.close()
        if finish is None:
            raise broken_stream(self.label, "the stream ended before the reply was finished")
        yield Usage(input_tokens, output_tokens)
        yield Finish(finish)

    def params(self, request: ProviderRequest) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system" and m.content)
        messages = _messages([m for m in request.messages if m.role != "system"])
        if request.prefix.rstrip():
            messages.append({"role": "assistant", "content": request.prefix.rstrip()})
        params: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens or self.max_tokens,
            "stream": True,
        }
        if system:
            params["system"] = system
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.response_schema is not None:
            params["tools"] = [
                {
                    "name": _ANSWER_TOOL,
                    "description": "Give the answer in the required structure.",
                    "input_schema": request.response_schema,
                }
            ]
            params["tool_choice"] = {"type": "tool", "name": _ANSWER_TOOL}
        elif request.tools:
            params["tools"] = [_tool(t) for t in request.tools]
            if request.tool_choice is not None:
                params["tool_choice"] = _tool_choice(request.tool_choice)
        return params

    def _error(self, exc: anthropic.APIError) -> ProviderError:
        if isinstance(exc, anthropic.APIStatusError):
            return status_error(
                self.label, exc.status_code, detail_of(exc.body, exc.message), exc.response.headers
            )
        if isinstance(exc, anthropic.APITimeoutError):
            return unreachable(self.label, "timed out")
        if isinstance(exc, anthropic.APIConnectionError):
            return unreachable(self.label, f"could not connect ({exc.__cause__ or exc})")
        return broken_stream(self.label, exc.message)

    async def aclose(self) -> None:
        await self.client.close()


def _messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Chat messages as Anthropic turns: tool results are user turns; same-role turns merge."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks: list[dict[str, Any]] = []
        if message.role == "tool":
            blocks.append(
                {"type": "tool_result", "tool_use_id": message.tool_call_id or "", "content": message.content}
            )
        else:
            if message.content:
                blocks.append({"type": "text", "text": message.content})
            for call in message.tool_calls:
                blocks.append(
                    {"type": "tool_use", "id": call.id, "name": call.name, "input": _json(call.arguments)}
                )
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _json(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {}


def _tool(tool: ToolSpec) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}


def _tool_choice(choice: str) -> dict[str, Any]:
    if choice in ("none", "auto"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": choice}


def create(spec: str, settings: Settings) -> AnthropicProvider:
    model, options = split_options(spec)
    name = f"anthropic:{spec}"
    base_url = options.get("base_url") or None
    try:
        max_tokens = int(options.get("max_tokens", 1024))
    except ValueError:
        raise ProviderError(f"{name}: max_tokens must be a whole number") from None
    return AnthropicProvider(
        model,
        name=name,
        api_key=api_key(options, "ANTHROPIC_API_KEY", required=base_url is None, name=name),
        base_url=base_url,
        timeouts=timeouts_option(options, settings),
        max_tokens=max_tokens,
    )
