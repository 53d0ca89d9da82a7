"""Any OpenAI-compatible chat-completions endpoint, through the official ``openai`` SDK.

Route entries:

- ``openai:gpt-4o-mini`` — OpenAI itself (key from ``OPENAI_API_KEY``);
- ``openai:MODEL?base_url=URL&key_env=VAR`` — any compatible server (vLLM, llama.cpp server,
  Gemini's OpenAI endpoint, a proxy), its key read from the environment variable ``VAR``;
- ``ollama:llama3.2`` — Ollama at ``OLLAMA_HOST`` (default ``http://localhost:11434``).

Options ``connect_timeout=``, ``first_token_timeout=`` and ``timeout=`` (between tokens), in seconds,
override ``PARLEY_PROVIDER_CONNECT_TIMEOUT_SECONDS``, ``..._FIRST_TOKEN_TIMEOUT_SECONDS`` and
``PARLEY_PROVIDER_TIMEOUT_SECONDS``; the route enforces them and fails over when one is hit.
The SDK's own retries are off: the route retries, with failover.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import openai

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
    continuation,
    split_options,
)
from parley.providers.http import (
    TRANSPORT_ERRORS,
    api_key,
    broken_stream,
    detail_of,
    sdk_timeout,
    status_error,
    timeouts_option,
    unreachable,
)


class OpenAIProvider(Provider):
    def __init__(
        self,
        model: str,
        *,
        name: str,
        api_key: str,
        base_url: str | None = None,
        timeouts: StreamTimeouts | None = None,
    ) -> None:
        self.model = model
        self.timeouts = timeouts or StreamTimeouts()
        self.name = name
        self.label = name.partition("?")[0]
        self.base_url = base_url
        self.client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=sdk_timeout(self.timeouts),
        )
        # The SDK imports its resources (~0.7 s of modules) on the first ``client.chat``: here,
        # where ``Providers.prepare`` builds the provider off the event loop, not in a first run.
        self._completions = self.client.chat.completions

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        try:
            stream = await self._completions.create(**self.params(request))
        except openai.APIError as exc:
            raise self._error(exc) from exc
        finish: str | None = None
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    yield Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices[:1]:
                    delta = choice.delta
                    if delta.content:
                        yield TextDelta(delta.content)
                    for call in delta.tool_calls or []:
                        function = call.function
                        yield ToolCallDelta(
                            index=call.index,
                            id=call.id,
                            name=function.name if function else None,
                            arguments=(function.arguments or "") if function else "",
                        )
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except openai.APIError as exc:
            raise self._error(exc) from exc
        except TRANSPORT_ERRORS as exc:
            raise broken_stream(self.label, f"the stream broke off ({type(exc).__name__})") from exc
        except ValueError as exc:
            raise broken_stream(self.label, f"sent a malformed chunk ({exc})") from exc
        finally:
            await stream.close()
        if finish is None:
            raise broken_stream(self.label, "the stream ended before the reply was finished")
        yield Finish(finish)

    def params(self, request: ProviderRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [_message(m) for m in continuation(request)],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = [_tool(t) for t in request.tools]
            if request.tool_choice is not None:
                params["tool_choice"] = _tool_choice(request.tool_choice)
        if request.max_tokens is not None:
            # OpenAI's reasoning models only take the new name; other servers know the old one.
            key = "max_tokens" if self.base_url else "max_completion_tokens"
            params[key] = request.max_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.response_schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": request.response_schema},
            }
        return params

    def _error(self, exc: openai.APIError) -> ProviderError:
        if isinstance(exc, openai.APIStatusError):
            return status_error(
                self.label, exc.status_code, detail_of(exc.body, exc.message), exc.response.headers
            )
        if isinstance(exc, openai.APITimeoutError):
            return unreachable(self.label, "timed out")
        if isinstance(exc, openai.APIConnectionError):
            return unreachable(self.label, f"could not connect ({exc.__cause__ or exc})")
        return broken_stream(self.label, exc.message)

    async def aclose(self) -> None:
        await self.client.close()


def _message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    return out


def _tool(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def _tool_choice(choice: str) -> str | dict[str, Any]:
    if choice in ("none", "auto", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def create(spec: str, settings: Settings) -> OpenAIProvider:
    model, options = split_options(spec)
    name = f"openai:{spec}"
    base_url = options.get("base_url") or None
    return OpenAIProvider(
        model,
        name=name,
        api_key=api_key(options, "OPENAI_API_KEY", required=base_url is None, name=name),
        base_url=base_url,
        timeouts=timeouts_option(options, settings),
    )


def create_ollama(spec: str, settings: Settings) -> OpenAIProvider:
    model, options = split_options(spec)
    host = options.get("base_url") or os.environ.get("OLLAMA_HOST") or "http://localhost:11434"
    if "://" not in host:
        host = f"http://{host}"
    base_url = host.rstrip("/") + ("" if host.rstrip("/").endswith("/v1") else "/v1")
    return OpenAIProvider(
        model,
        name=f"ollama:{spec}",
        api_key=api_key(options, "OLLAMA_API_KEY", required=False, name=f"ollama:{spec}"),
        base_url=base_url,
        timeouts=timeouts_option(options, settings),
    )
