"""The context builder: what the model sees for a run.

Instructions first, then the thread's history in order, ending with the user's latest
message; retrieved passages go into that last user turn. (Token budgets, summaries and
memory plug in here.)
"""

from __future__ import annotations

from collections.abc import Sequence

from parley.assistants import Assistant
from parley.knowledge.grounding import grounded_prompt
from parley.knowledge.search import Hit
from parley.providers.base import ChatMessage, ProviderRequest, ToolCall
from parley.store.schema import Message


def to_chat_message(message: Message) -> ChatMessage:
    data = message.data or {}
    calls = [ToolCall(c["id"], c["name"], c["arguments"]) for c in data.get("tool_calls", [])]
    role = message.role if message.role in ("system", "user", "assistant", "tool") else "user"
    return ChatMessage(
        role=role,  # type: ignore[arg-type]
        content=message.content,
        tool_calls=calls,
        tool_call_id=data.get("tool_call_id"),
        name=data.get("name"),
    )


def build_request(
    assistant: Assistant,
    history: Sequence[Message],
    *,
    thread_id: str,
    retrieved: Sequence[Hit] | None = None,
) -> ProviderRequest:
    messages = [ChatMessage("system", assistant.instructions)] if assistant.instructions else []
    messages.extend(to_chat_message(m) for m in history)
    if retrieved and messages and messages[-1].role == "user":
        messages[-1] = ChatMessage("user", grounded_prompt(messages[-1].content, retrieved))
    return ProviderRequest(messages=messages, thread_id=thread_id)
