"""A test-side SSE reader (httpx-sse), and small API helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import aconnect_sse


@dataclass
class Frame:
    id: str
    event: str
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def seq(self) -> int:
        return int(self.id)


async def read_events(
    client: httpx.AsyncClient,
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    limit: int | None = None,
    **kwargs: Any,
) -> list[Frame]:
    """Read an SSE stream to its end (or ``limit`` frames, then drop the connection)."""
    frames: list[Frame] = []
    async with aconnect_sse(client, method, url, headers=dict(headers or {}), **kwargs) as source:
        assert source.response.status_code == 200, await source.response.aread()
        async for sse in source.aiter_sse():
            if sse.event == "message" and not sse.data:
                continue  # a keep-alive ping (httpx-sse repeats the last id on it)
            frames.append(Frame(sse.id, sse.event, sse.data))
            if limit is not None and len(frames) >= limit:
                break
    return frames


async def new_thread(client: httpx.AsyncClient, assistant: str = "general") -> str:
    response = await client.post("/v1/threads", json={"assistant": assistant})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def start_run(client: httpx.AsyncClient, thread_id: str, text: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/v1/threads/{thread_id}/runs", json={"input": text, **body})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def assert_contiguous(frames: list[Frame], start: int = 1) -> None:
    seqs = [f.seq for f in frames if f.id]
    assert seqs == list(range(start, start + len(seqs))), seqs


def kinds(frames: list[Frame]) -> list[str]:
    """Event types, each run of ``message.delta`` as one: deltas a fast producer wrote before
    their commit arrive merged (``EventLog.append_text``), so their number depends on timing."""
    out: list[str] = []
    for frame in frames:
        if not (frame.event == "message.delta" and out and out[-1] == "message.delta"):
            out.append(frame.event)
    return out
