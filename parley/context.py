"""The context builder: what the model sees for a run.

Instructions first, then the thread's history in order, ending with the user's latest
message. (Token budgets, summaries, memory and retrieval plug in here.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from parley.assistants import Assistant
from parley.providers.base import ChatMessage, ProviderRequest, ToolCall
from parley.store.schema import Message


def to_chat_message(message: Message) -> ChatMessage:
    data = message.data or {}
    role = message.role if message.role in ("system", "user", "assistant", "tool") else "user"
    return ChatMessage(
        role=role,  # type: ignore[arg-type]
        content=message.content,
        tool_call_id=data.get("tool_call_id"),
        name=data.get("name"),
    )


def to_chat_messages(message: Message) -> list[ChatMessage]:
    """A stored message as the model saw it: an assistant turn that used tools becomes, per
    round, the assistant's calls followed by their results, then the answer."""
    records = (message.data or {}).get("tool_calls") or []
    if message.role != "assistant" or not records:
        return [to_chat_message(message)]
    expanded: list[ChatMessage] = []
    for step in sorted({r.get("step", 1) for r in records}):
        batch = [r for r in records if r.get("step", 1) == step]
        calls = [ToolCall(r["id"], r["name"], r["arguments"]) for r in batch]
        expanded.append(ChatMessage("assistant", "", tool_calls=calls))
        expanded.extend(
            ChatMessage(
                "tool", json.dumps(r.get("output"), default=str), tool_call_id=r["id"], name=r["name"]
            )
            for r in batch
        )
    if message.content:
        expanded.append(ChatMessage("assistant", message.content))
    return expanded


def build_request(assistant: Assistant, history: Sequence[Message], *, thread_id: str) -> ProviderRequest:
    messages = [ChatMessage("system", assistant.instructions)] if assistant.instructions else []
    for message in history:
        messages.extend(to_chat_messages(message))
    return ProviderRequest(messages=messages, thread_id=thread_id)
