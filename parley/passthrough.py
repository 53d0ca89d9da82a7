"""Runs whose tools and sampling the API client chose (the OpenAI-compatible endpoint).

The client's tools, tool choice, token limit, temperature and response schema travel in the
run's options (``options["client"]``) and replace the assistant's own for that run. Tool calls
to the client's tools are the client's to execute: they are reported as ``tool.call`` events
and stored on the assistant message, never run here.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from parley.providers.base import ProviderRequest, ToolCallDelta, ToolSpec

if TYPE_CHECKING:
    from parley.runs.state import RunState

KEY = "client"


def options(
    *,
    tools: list[ToolSpec],
    tool_choice: str | None,
    max_tokens: int | None,
    temperature: float | None,
    response_schema: dict[str, Any] | None,
) -> dict[str, Any]:
    """What to store under ``run.options["client"]`` (JSON)."""
    values = {
        "tools": [asdict(t) for t in tools],
        "tool_choice": tool_choice,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "response_schema": response_schema,
    }
    return {k: v for k, v in values.items() if v not in (None, [])}


def client_tools(run_options: dict[str, Any] | None) -> bool:
    return bool(((run_options or {}).get(KEY) or {}).get("tools"))


def apply(request: ProviderRequest, run_options: dict[str, Any] | None) -> ProviderRequest:
    client: dict[str, Any] = (run_options or {}).get(KEY) or {}
    if not client:
        return request
    changes: dict[str, Any] = {
        k: client[k] for k in ("max_tokens", "temperature", "response_schema") if k in client
    }
    if client.get("tools"):
        changes["tools"] = [ToolSpec(**t) for t in client["tools"]]
        changes["tool_choice"] = client.get("tool_choice")
    elif client.get("tool_choice") == "none":
        changes["tool_choice"] = "none"
    return replace(request, **changes)


def assemble(fragments: list[ToolCallDelta]) -> list[dict[str, str]]:
    """Tool-call fragments (by ``index``) as whole calls: ``{"id", "name", "arguments"}``."""
    calls: dict[int, dict[str, str]] = {}
    for fragment in fragments:
        call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
        if fragment.id:
            call["id"] = fragment.id
        if fragment.name:
            call["name"] = fragment.name
        call["arguments"] += fragment.arguments
    return [calls[i] for i in sorted(calls)]


def report(state: RunState, fragments: list[ToolCallDelta]) -> list[dict[str, str]]:
    """The model's tool calls for the client, kept on the assistant message's data; the caller
    reports each as a ``tool.call`` event."""
    calls = assemble(fragments)
    if calls:
        state.tool_calls.extend(calls)
        state.message_data["tool_calls"] = calls
    return calls
