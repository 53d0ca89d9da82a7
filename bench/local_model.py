"""The embedded local model: Parley's overhead over llama.cpp, and time to first token over a thread.

Part 1 runs the same questions (greedy, same prompt, same threads) three ways, interleaved:
llama.cpp called directly (``xllamacpp``, the runtime the provider uses), Parley's ``local`` provider, and a Parley server streaming
``POST /v1/chat/completions`` over loopback HTTP (run, event log, SSE); the order rotates
each round. Generation speed is ``(output tokens - 1) / (last token - first token)`` where the
tokens are produced (for the server, its own first-token and end times: events reach the
client in group-committed batches); time to first token is measured by the client, from the
request. Target: Parley / direct >= 0.95 for tokens/s.

Part 2 holds conversations through the server's native API and reports the median time to
first token at turn 1 and turn 10 (target: turn 10 <= 1.5x turn 1): in one thread, in two threads that
take turns on the one model (each switch restores the other thread's cached prompt), and,
side by side, the turn-10 prompt evaluated cold by llama.cpp (``cache_prompt`` off: what it would
cost without the cache).

    python -m bench.local_model [--repeats 8] [--tokens 96] [--turns 10] [--conversations 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from parley.assistants import BUILTIN
from parley.client import background_server
from parley.config import Settings
from parley.logs import configure
from parley.providers.base import ChatMessage, ProviderRequest, TextDelta, Usage
from parley.providers.local import _REPEAT_PENALTY, _TOP_P, create, model_path

SYSTEM = BUILTIN["general"].instructions
TOPICS = [
    "foxes",
    "the moon",
    "bread",
    "rivers",
    "owls",
    "glass",
    "chess",
    "tea",
    "volcanoes",
    "bees",
    "maps",
    "salt",
]


@dataclass
class Sample:
    ttft: float
    tokens: int
    first: float
    last: float

    @property
    def tokens_per_s(self) -> float:
        return (
            (self.tokens - 1) / (self.last - self.first)
            if self.tokens > 1 and self.last > self.first
            else 0.0
        )


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(s, attribute) for s in self.samples)


def question(i: int) -> str:
    return f"Write a short paragraph about {TOPICS[i % len(TOPICS)]}."


class Direct:
    """llama.cpp on its own (``xllamacpp``, the runtime Parley's provider uses): the same GGUF,
    chat template, sampling and threads, without Parley's worker thread, queue or context fitting."""

    def __init__(self, path: Path, threads: int) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = 4096
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.warmup = False
        params.verbosity = -1
        self.server: Any = xllamacpp.Server(params)

    def generate(self, messages: list[dict[str, str]], max_tokens: int, *, cold: bool = False) -> Sample:
        started = time.perf_counter()
        first = last = 0.0
        produced = 0

        def on_chunk(chunk: dict[str, Any]) -> bool:
            nonlocal first, last, produced
            for choice in chunk.get("choices") or ():
                if (choice.get("delta") or {}).get("content"):
                    last = time.perf_counter()
                    first = first or last
            if chunk.get("usage"):
                produced = chunk["usage"]["completion_tokens"]
            return False

        self.server.handle_chat_completions(
            {
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "top_p": _TOP_P,
                "repeat_penalty": _REPEAT_PENALTY,
                "cache_prompt": not cold,  # cold: the whole prompt evaluated, as without a cache
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            on_chunk,
        )
        return Sample(first - started, produced, first, last)

    def close(self) -> None:
        del self.server


async def through_provider(messages: list[ChatMessage], max_tokens: int, provider: Any) -> Sample:
    request = ProviderRequest(
        messages, max_tokens=max_tokens, temperature=0.0, thread_id=f"bench-{time.time()}"
    )
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async for delta in provider.stream(request):
        if isinstance(delta, TextDelta) and delta.text:
            last = time.perf_counter()
            first = first or last
        elif isinstance(delta, Usage):
            tokens = delta.output_tokens
    return Sample(first - started, tokens, first, last)


async def through_server(client: httpx.AsyncClient, text: str, max_tokens: int) -> Sample:
    body = {
        "model": "general",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    usage: dict[str, Any] = {}
    async with aconnect_sse(client, "POST", "/v1/chat/completions", json=body) as source:
        async for sse in source.aiter_sse():
            if sse.data == "[DONE]":
                break
            chunk = json.loads(sse.data)
            usage = chunk.get("parley") or usage
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    first = first or time.perf_counter()
    generating = (usage["latency_ms"] - usage["ttft_ms"]) / 1000
    return Sample(first - started, usage["output_tokens"], 0.0, generating)


async def turn(client: httpx.AsyncClient, thread: str, text: str) -> tuple[float, float, str]:
    """One run in a thread: (client-side TTFT, server-side TTFT, reply)."""
    started = time.perf_counter()
    first = 0.0
    reply = ""
    server_ttft = 0.0
    body = {"input": text, "stream": True}
    async with aconnect_sse(client, "POST", f"/v1/threads/{thread}/runs", json=body) as source:
        async for sse in source.aiter_sse():
            if sse.event == "message.delta":
                first = first or time.perf_counter()
                reply += json.loads(sse.data)["text"]
            elif sse.event == "run.completed":
                server_ttft = (json.loads(sse.data)["usage"]["ttft_ms"] or 0) / 1000
            elif sse.event == "run.failed":
                raise RuntimeError(sse.data)
    return first - started, server_ttft, reply


async def conversation(
    client: httpx.AsyncClient, threads: int, turns: int, *, start: int
) -> list[list[float]]:
    """TTFT per turn for ``threads`` threads taking turns; returns [thread][turn]."""
    ids = []
    for _ in range(threads):
        response = await client.post("/v1/threads", json={"assistant": "general"})
        ids.append(response.json()["id"])
    ttfts: list[list[float]] = [[] for _ in ids]
    for n in range(turns):
        for index, thread in enumerate(ids):
            topic = TOPICS[(start + n + index * 5) % len(TOPICS)]
            # Starts with the topic: no accidental shared prefix with another thread's question.
            ttft, _, _ = await turn(client, thread, f"{topic.capitalize()}: tell me one fact about it.")
            ttfts[index].append(ttft)
    return ttfts


def row(name: str, series: Series, reference: Series | None = None) -> str:
    tps, ttft = series.median("tokens_per_s"), series.median("ttft")
    line = f"  {name:34} {tps:7.1f} tok/s   TTFT {ttft * 1000:7.1f} ms"
    if reference is not None:
        line += f"   ratio tok/s {tps / reference.median('tokens_per_s'):.3f}, TTFT {ttft / reference.median('ttft'):.2f}x"
    return line


async def run(repeats: int, tokens: int, turns: int, conversations: int) -> None:
    configure("WARNING", json_logs=False)
    path = model_path("smollm2")
    settings_threads = Settings().local_threads
    load = os.getloadavg()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.1f}; "
        f"model {path.name}; {settings_threads} llama.cpp thread(s); {tokens} tokens per answer"
    )
    direct = Direct(path, settings_threads)
    provider = create(f"smollm2?threads={settings_threads}", Settings())
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(
            data_dir=Path(data),
            model=f"local:smollm2?threads={settings_threads}&max_tokens=48",
            log_level="WARNING",
            knowledge={},
        )
        with background_server(settings) as url:
            async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120.0)) as client:
                # Warm up each path once (model load, first prompt).
                direct.generate([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}], 4)
                await through_provider(
                    [ChatMessage("system", SYSTEM), ChatMessage("user", "Hi")], 4, provider
                )
                await through_server(client, "Hi", 4)

                print("\nPart 1: generation through Parley vs llama.cpp directly (medians)")
                series = {"direct": Series(), "provider": Series(), "server": Series()}
                for i in range(repeats):
                    text = question(i)
                    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
                    chat = [ChatMessage("system", SYSTEM), ChatMessage("user", text)]
                    for name in [*series][i % 3 :] + [*series][: i % 3]:
                        if name == "direct":
                            sample = direct.generate(messages, tokens)
                        elif name == "provider":
                            sample = await through_provider(chat, tokens, provider)
                        else:
                            sample = await through_server(client, text, tokens)
                        series[name].samples.append(sample)
                print(row("llama.cpp directly", series["direct"]))
                print(row("Parley local provider", series["provider"], series["direct"]))
                print(row("Parley server (HTTP, SSE, event log)", series["server"], series["direct"]))

                print(
                    f"\nPart 2: time to first token over a conversation "
                    f"({turns} turns, 32-token answers, median of {conversations})"
                )
                single: list[list[float]] = []
                pairs: list[list[float]] = []
                for c in range(conversations):
                    single.extend(await conversation(client, 1, turns, start=c * 3))
                    pairs.extend(await conversation(client, 2, turns, start=c * 3 + 1))
                for name, runs in (("one thread", single), ("two threads in turn", pairs)):
                    first = statistics.median(r[0] for r in runs)
                    last = statistics.median(r[-1] for r in runs)
                    print(
                        f"  {name:22} turn 1 {first * 1000:7.1f} ms, turn {turns} {last * 1000:7.1f} ms"
                        f"   ratio {last / first:.2f}x"
                    )
                history = await client.get("/v1/threads", params={"limit": 1})
                last_thread = history.json()["data"][0]["id"]
                messages_page = await client.get(f"/v1/threads/{last_thread}/messages", params={"limit": 200})
                transcript = [{"role": "system", "content": SYSTEM}] + [
                    {"role": m["role"], "content": m["content"]} for m in messages_page.json()["data"][:-1]
                ]
                cold = statistics.median(direct.generate(transcript, 1, cold=True).ttft for _ in range(3))
                fresh = statistics.median(
                    direct.generate(transcript[:2], 1, cold=True).ttft for _ in range(3)
                )
                print(
                    f"  {'without the cache':22} turn 1 {fresh * 1000:7.1f} ms, turn {turns} {cold * 1000:7.1f} ms"
                    f"   ratio {cold / fresh:.2f}x  (llama.cpp evaluating the whole prompt)"
                )
    await provider.aclose()
    direct.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--conversations", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.repeats, args.tokens, args.turns, args.conversations))


if __name__ == "__main__":
    main()
