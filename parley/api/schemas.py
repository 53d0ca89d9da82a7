"""Request bodies and the JSON shapes of threads, messages and runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from parley.store.schema import Message, Run, Thread


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThreadCreate(Body):
    assistant: str = Field(default="general", min_length=1, max_length=100)
    title: str | None = Field(default=None, max_length=300)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ThreadUpdate(Body):
    title: str | None = Field(default=None, max_length=300)
    metadata: dict[str, Any] | None = None


class RunCreate(Body):
    input: str = Field(min_length=1, description="The user's message.")
    stream: StrictBool = Field(default=False, description="Answer with the run's SSE stream instead of JSON.")
    multitask: Literal["reject", "enqueue", "interrupt"] = Field(
        default="reject", description="What to do when the thread already has an active run."
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def thread_json(thread: Thread) -> dict[str, Any]:
    return {
        "id": thread.id,
        "object": "thread",
        "assistant": thread.assistant,
        "title": thread.title,
        "metadata": thread.metadata_,
        "created_at": iso(thread.created_at),
        "updated_at": iso(thread.updated_at),
    }


def message_json(message: Message, feedback: int | None = None) -> dict[str, Any]:
    data = message.data or {}
    return {
        "id": message.id,
        "object": "message",
        "thread_id": message.thread_id,
        "role": message.role,
        "content": message.content,
        "run_id": message.run_id,
        "sources": data.get("sources", []),
        "tool_calls": data.get("tool_calls", []),
        "usage": data.get("usage"),
        "finish_reason": data.get("finish_reason"),
        "feedback": feedback,
        "created_at": iso(message.created_at),
    }


def run_json(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "object": "run",
        "thread_id": run.thread_id,
        "assistant": run.assistant,
        "status": run.status,
        "attempt": run.attempt,
        "input": run.input,
        "output": run.output,
        "output_message_id": run.output_message_id,
        "error": run.error,
        "usage": run.usage,
        "model": run.model,
        "finish_reason": run.finish_reason,
        "variant": run.variant,
        "multitask": run.multitask,
        "metadata": (run.options or {}).get("metadata", {}),
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
    }
