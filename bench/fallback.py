"""Failover speed: from a provider's failure to the first token from the backup.

The primary is the OpenAI provider against a fake chat-completions server that fails in one
of the issue's ways; the backup is the Anthropic provider against a fake messages server. Both
are real SDKs over loopback HTTP, through a ``Route`` with the server's default retry policy
(except where a row says otherwise). The clock starts when the fake server injects the fault
and stops at the first text delta from the backup; with retries, the clock starts at the first
failure. Side by side: the backup's own time to
first token when nothing failed, so the difference is what failing over costs.

    python -m bench.fallback [--repeats 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass

from parley.config import Settings
from parley.providers import anthropic, openai
from parley.providers.base import ChatMessage, Fallback, ProviderRequest, TextDelta
from parley.providers.fakes import FakeAnthropic, FakeOpenAI, Fault, Reply
from parley.providers.route import Health, RetryPolicy, Route

REQUEST = ProviderRequest([ChatMessage("user", "Tell me about foxes.")])
TIMEOUT = 1.0


@dataclass
class Case:
    name: str
    fault: Fault
    policy: RetryPolicy


def cases(settings: Settings) -> list[Case]:
    default = RetryPolicy(
        attempts=settings.provider_attempts,
        backoff=settings.provider_backoff_seconds,
        backoff_max=settings.provider_backoff_max_seconds,
        retry_after_max=settings.provider_retry_after_max_seconds,
    )
    once = RetryPolicy(attempts=1)
    return [
        Case("500 before the first token (no retry)", Fault("server_error"), once),
        Case("500 before the first token (3 tries, backoff)", Fault("server_error"), default),
        Case("429 with Retry-After: 30", Fault("rate_limit", retry_after=30), default),
        Case("connection dropped mid-stream", Fault("drop", after=3), once),
        Case("malformed chunk mid-stream", Fault("malformed", after=3), once),
        Case(f"hang mid-stream ({TIMEOUT:g}s provider timeout)", Fault("hang", after=3), once),
    ]


async def failover_once(primary: FakeOpenAI, backup: FakeAnthropic, case: Case, settings: Settings) -> float:
    first = openai.create(f"gpt-4o-mini?base_url={primary.url}/v1", settings)
    second = anthropic.create(f"claude-3-5-haiku?base_url={backup.url}", settings)
    primary.replies.clear()
    seen = len(primary.requests)
    for _ in range(case.policy.attempts):
        primary.enqueue(Reply("The quick brown fox jumps over the lazy dog", fault=case.fault))
    backup.enqueue(Reply(" and then over the sleepy cat."))
    route = Route([first, second], health=Health(case.policy))
    switched = False
    first_backup_token: float | None = None
    try:
        async for delta in route.stream(REQUEST):
            if isinstance(delta, Fallback):
                switched = True
            elif isinstance(delta, TextDelta) and switched and first_backup_token is None:
                first_backup_token = time.monotonic()
    finally:
        await first.aclose()
        await second.aclose()
    fault_at = primary.requests[seen].fault_at  # the first failure: retries count against failover
    assert fault_at is not None
    assert first_backup_token is not None
    return first_backup_token - fault_at


async def backup_alone(backup: FakeAnthropic, settings: Settings) -> float:
    provider = anthropic.create(f"claude-3-5-haiku?base_url={backup.url}", settings)
    backup.enqueue(Reply("Foxes are small omnivores."))
    started = time.monotonic()
    try:
        async for delta in provider.stream(REQUEST):
            if isinstance(delta, TextDelta):
                return time.monotonic() - started
    finally:
        await provider.aclose()
    raise RuntimeError("the backup sent no text")


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} ms (p90 {sorted(values)[int(len(values) * 0.9) - 1] * 1000:.1f})"


async def run(repeats: int) -> None:
    settings = Settings(provider_timeout_seconds=TIMEOUT)
    async with FakeOpenAI() as primary, FakeAnthropic() as backup:
        await backup_alone(backup, settings)  # warm up the SDKs and connections
        baseline = [await backup_alone(backup, settings) for _ in range(repeats)]
        print(f"{'backup answering alone (time to first token)':48} {ms(baseline)}")
        for case in cases(settings):
            times = [await failover_once(primary, backup, case, settings) for _ in range(repeats)]
            overhead = statistics.median(times) / statistics.median(baseline)
            print(f"{case.name:48} {ms(times)}  = {overhead:6.1f}x the backup alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    asyncio.run(run(parser.parse_args().repeats))


if __name__ == "__main__":
    main()
