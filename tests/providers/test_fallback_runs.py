"""Routes seen through the server: fallback events, one coherent reply, friendly failure, cancel, cost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from parley.config import Settings
from parley.providers.fakes import FakeAnthropic, FakeOpenAI, Fault, Reply
from tests.conftest import serve
from tests.sse import assert_contiguous, kinds, new_thread, read_events, start_run

HAIKU = (0.80, 4.00)  # the shipped price of anthropic:claude-3-5-haiku, USD per 1M tokens
MINI = (0.15, 0.60)  # openai:gpt-4o-mini


def route(openai: FakeOpenAI, anthropic: FakeAnthropic) -> str:
    return f"openai:gpt-4o-mini?base_url={openai.url}/v1,anthropic:claude-3-5-haiku?base_url={anthropic.url}"


async def test_a_mid_stream_failure_is_continued_by_the_backup(settings_for: Callable[..., Settings]) -> None:
    async with FakeOpenAI() as primary, FakeAnthropic() as backup:
        primary.enqueue(Reply("The quick brown fox", fault=Fault("drop", after=2)))
        backup.enqueue(Reply(" brown fox jumps over the dog."))
        settings = settings_for(model=route(primary, backup), provider_attempts=1)
        async with serve(settings) as server:
            thread = await new_thread(server.client)
            run = await start_run(server.client, thread, "Tell me about the fox")
            frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
            assert_contiguous(frames)
            assert kinds(frames) == [
                "run.started",
                "message.delta",
                "provider.fallback",
                "message.delta",
                "run.completed",
            ]
            at = next(i for i, f in enumerate(frames) if f.event == "provider.fallback")
            assert "".join(f.json["text"] for f in frames[1:at]) == "The quick"
            fallback = frames[at].json
            assert fallback["from"].startswith("openai:gpt-4o-mini")
            assert fallback["to"].startswith("anthropic:claude-3-5-haiku")
            assert "broke off" in fallback["reason"]
            text = "".join(f.json["text"] for f in frames if f.event == "message.delta")
            assert text == "The quick brown fox jumps over the dog."
            done = frames[-1].json
            assert done["text"] == text
            # The backup was asked to continue, with the reply so far as its own turn.
            assert backup.requests[0].body["messages"][-1] == {"role": "assistant", "content": "The quick"}

            usage = done["usage"]
            # The primary's tokens (it read the prompt and wrote "The quick") are billed at its
            # own, lower price: the total lies between all at gpt-4o-mini and all at haiku.
            at_mini = (usage["input_tokens"] * MINI[0] + usage["output_tokens"] * MINI[1]) / 1e6
            at_haiku = (usage["input_tokens"] * HAIKU[0] + usage["output_tokens"] * HAIKU[1]) / 1e6
            assert at_mini < usage["cost_usd"] < at_haiku
            assert usage["ttft_ms"] <= usage["latency_ms"]
            stored = (await server.client.get(f"/v1/runs/{run['id']}")).json()
            assert stored["usage"] == usage
            messages = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"]
            assert messages[-1]["content"] == text
            assert messages[-1]["usage"]["cost_usd"] == usage["cost_usd"]


async def test_when_every_provider_fails_the_user_gets_the_friendly_message(
    settings_for: Callable[..., Settings],
) -> None:
    async with FakeOpenAI() as primary, FakeAnthropic() as backup:
        primary.default = Reply(fault=Fault("server_error", status=503))
        backup.default = Reply(fault=Fault("server_error", status=529))
        settings = settings_for(
            model=route(primary, backup),
            provider_attempts=2,
            provider_backoff_seconds=0.01,
            fallback_message="Our assistants are resting. Please come back in a minute.",
        )
        async with serve(settings) as server:
            thread = await new_thread(server.client)
            run = await start_run(server.client, thread, "hello?")
            frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
            assert [f.event for f in frames] == ["run.started", "provider.fallback", "run.failed"]
            error = frames[-1].json["error"]
            assert error["code"] == "all_providers_failed"
            assert error["message"] == "Our assistants are resting. Please come back in a minute."
            assert [(p["provider"].split("?")[0], p["code"]) for p in error["providers"]] == [
                ("openai:gpt-4o-mini", "provider_unavailable"),
                ("openai:gpt-4o-mini", "provider_unavailable"),
                ("anthropic:claude-3-5-haiku", "provider_unavailable"),
                ("anthropic:claude-3-5-haiku", "provider_unavailable"),
            ]
            assert len(primary.requests) == len(backup.requests) == 2
            final = (await server.client.get(f"/v1/runs/{run['id']}")).json()
            assert final["status"] == "failed"
            assert final["error"]["message"] == error["message"]


async def test_retry_after_from_the_upstream_is_waited_for(settings_for: Callable[..., Settings]) -> None:
    async with FakeOpenAI() as upstream:
        upstream.enqueue(Reply(fault=Fault("rate_limit", retry_after=0.5)), Reply("worth the wait"))
        settings = settings_for(model=f"openai:gpt-4o-mini?base_url={upstream.url}/v1")
        async with serve(settings) as server:
            thread = await new_thread(server.client)
            run = await start_run(server.client, thread, "hi")
            frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
            assert frames[-1].json["text"] == "worth the wait"
            first, second = upstream.requests
            assert second.at - first.at >= 0.5


async def test_cancel_closes_the_upstream_connection_within_a_second(
    settings_for: Callable[..., Settings],
) -> None:
    """Invariant 3, with a real HTTP upstream: the provider's TCP connection is closed."""
    async with FakeOpenAI() as upstream:
        upstream.enqueue(Reply(" ".join(f"word{i}" for i in range(100)), delay=0.2))
        settings = settings_for(model=f"openai:gpt-4o-mini?base_url={upstream.url}/v1")
        async with serve(settings) as server:
            thread = await new_thread(server.client)
            run = await start_run(server.client, thread, "talk for a long time")
            first = await read_events(server.client, f"/v1/runs/{run['id']}/events", limit=2)
            assert first[1].event == "message.delta"
            assert upstream.open_connections == 1
            cancelled_at = time.monotonic()
            response = await server.client.post(f"/v1/runs/{run['id']}/cancel")
            assert response.json()["status"] == "cancelled"
            connection = await upstream.wait_closed(1.0)
            assert connection.closed_at is not None, "the upstream connection is still open"
            assert connection.closed_at - cancelled_at < 1.0
            await asyncio.sleep(0.3)
            assert len(upstream.requests) == 1  # not retried after the cancel
