"""Google's Gemini API through the official ``google-genai`` SDK.

Route entries: ``gemini:gemini-2.0-flash`` (key from ``GEMINI_API_KEY``), with options
``base_url``, ``key_env=VAR`` and the timeouts ``connect_timeout``, ``first_token_timeout`` and
``timeout`` (see ``openai``). (Gemini's OpenAI-compatible endpoint also works through
``openai:...?base_url=https://generativelanguage.googleapis.com/v1beta/openai/``.)
Gemini cannot prefill a reply, so a continued reply asks the model to go on from the text so far.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from google import genai
from google.genai import errors, types

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
    Usage,
    continuation,
    split_options,
)
from parley.providers.http import (
    TIMEOUT_ERRORS,
    TRANSPORT_ERRORS,
    api_key,
    broken_stream,
    status_error,
    timeouts_option,
    unreachable,
)

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
}


class GeminiProvider(Provider):
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
        # The SDK does not close a stream's HTTP response when its iterator is closed early;
        # remembering each response (per task) lets ``stream`` close it, and with it the upstream.
        self._responses: dict[asyncio.Task[Any] | None, list[Any]] = {}
        self.client = genai.Client(
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=base_url,
                timeout=int((max(self.timeouts.first_token, self.timeouts.idle) + 1.0) * 1000),
                async_client_args={"event_hooks": {"response": [self._opened]}},
            ),
        )

    async def _opened(self, response: Any) -> None:
        self._responses.setdefault(asyncio.current_task(), []).append(response)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        calls = 0
        finish: str | None = None
        usage: Usage | None = None
        chunks: AsyncIterator[types.GenerateContentResponse] | None = None
        task = asyncio.current_task()
        try:
            chunks = await self.client.aio.models.generate_content_stream(
                model=self.model, contents=_contents(continuation(request)), config=self.config(request)
            )
            async for chunk in chunks:
                if chunk.usage_metadata is not None:
                    meta = chunk.usage_metadata
                    usage = Usage(meta.prompt_token_count or 0, meta.candidates_token_count or 0)
                for candidate in (chunk.candidates or [])[:1]:
                    for part in candidate.content.parts or [] if candidate.content else []:
                        if part.text and not part.thought:
                            yield TextDelta(part.text)
                        elif part.function_call is not None:
                            call = part.function_call
                            yield ToolCallDelta(
                                calls,
                                id=call.id or f"call_{uuid.uuid4().hex[:12]}",
                                name=call.name,
                                arguments=json.dumps(call.args or {}),
                            )
                            calls += 1
                    if candidate.finish_reason is not None:
                        reason = str(candidate.finish_reason.value)
                        finish = _FINISH.get(reason, reason.lower())
        except errors.APIError as exc:
            raise self._error(exc) from exc
        except TIMEOUT_ERRORS as exc:
            raise unreachable(self.label, "timed out") from exc
        except TRANSPORT_ERRORS as exc:
            raise broken_stream(self.label, f"the stream broke off ({type(exc).__name__})") from exc
        except ValueError as exc:
            raise broken_stream(self.label, f"sent a malformed chunk ({exc})") from exc
        finally:
            for response in self._responses.pop(task, []):
                await response.aclose()
        if finish is None:
            raise broken_stream(self.label, "the stream ended before the reply was finished")
        if usage is not None:
            yield Usage(usage.input_tokens, usage.output_tokens)
        yield Finish("tool_calls" if calls and finish == "stop" else finish)

    def config(self, request: ProviderRequest) -> types.GenerateContentConfig:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system" and m.content)
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=request.temperature,
            max_output_tokens=request.max_tokens,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        if request.response_schema is not None:
            config.response_mime_type = "application/json"
            config.response_json_schema = request.response_schema
        if request.tools:
            config.tools = [
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name=t.name, description=t.description, parameters_json_schema=t.parameters
                        )
                        for t in request.tools
                    ]
                )
            ]
            if request.tool_choice is not None:
                config.tool_config = _tool_config(request.tool_choice)
        return config

    def _error(self, exc: errors.APIError) -> ProviderError:
        headers = getattr(getattr(exc, "response", None), "headers", None)
        detail = exc.message or exc.status or "error"
        return status_error(self.label, exc.code, str(detail), dict(headers) if headers else None)


def _contents(messages: list[ChatMessage]) -> list[types.Content]:
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    contents: list[types.Content] = []
    for message in messages:
        if message.role == "system":
            continue
        parts: list[types.Part] = []
        if message.role == "tool":
            name = message.name or names.get(message.tool_call_id or "", "tool")
            parts.append(
                types.Part(
                    function_response=types.FunctionResponse(
                        id=message.tool_call_id, name=name, response={"result": message.content}
                    )
                )
            )
        else:
            if message.content:
                parts.append(types.Part(text=message.content))
            for call in message.tool_calls:
                parts.append(
                    types.Part(
                        function_call=types.FunctionCall(
                            id=call.id, name=call.name, args=_json(call.arguments)
                        )
                    )
                )
        if not parts:
            continue
        role = "model" if message.role == "assistant" else "user"
        if contents and contents[-1].role == role and contents[-1].parts is not None:
            contents[-1].parts.extend(parts)
        else:
            contents.append(types.Content(role=role, parts=parts))
    return contents


def _json(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {"value": value}


def _tool_config(choice: str) -> types.ToolConfig:
    modes = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
    if choice in modes:
        calling = types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode(modes[choice]))
    else:
        calling = types.FunctionCallingConfig(
            mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=[choice]
        )
    return types.ToolConfig(function_calling_config=calling)


def create(spec: str, settings: Settings) -> GeminiProvider:
    model, options = split_options(spec)
    name = f"gemini:{spec}"
    base_url = options.get("base_url") or None
    return GeminiProvider(
        model,
        name=name,
        api_key=api_key(options, "GEMINI_API_KEY", required=base_url is None, name=name),
        base_url=base_url,
        timeouts=timeouts_option(options, settings),
    )
