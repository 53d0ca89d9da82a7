"""A provider's first request in a fresh process: what it costs to build the provider (done by
``Providers.prepare`` at start, off the event loop) and what its first and second streams
take (on the event loop, in a run). An SDK that imports modules on first use shows up in the
first stream, where it stalls every other stream of the server.

Each provider runs in its own fresh interpreter (cold imports) against its fake server on
loopback. ``--baseline DIR`` runs the same from another checkout of Parley, interleaved.

    python -m bench.first_request [--repeats 3] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench._util import machine

PROBE = """
import asyncio, json, sys, time
from parley.config import Settings
from parley.providers import anthropic, gemini, openai
from parley.providers.base import ChatMessage, ProviderRequest
from parley.providers.fakes import FakeAnthropic, FakeGemini, FakeOpenAI, Reply

KINDS = {
    "openai": (FakeOpenAI, openai, "gpt-4o-mini?base_url={url}/v1"),
    "anthropic": (FakeAnthropic, anthropic, "claude-3-5-haiku?base_url={url}"),
    "gemini": (FakeGemini, gemini, "gemini-2.0-flash?base_url={url}"),
}


async def main(kind):
    fake, module, spec = KINDS[kind]
    request = ProviderRequest([ChatMessage("user", "hello")])
    async with fake() as server:
        started = time.perf_counter()
        provider = await asyncio.to_thread(module.create, spec.format(url=server.url), Settings())
        figures = {"build": time.perf_counter() - started}
        for name in ("first", "second"):
            server.enqueue(Reply("one two three"))
            started = time.perf_counter()
            async for _ in provider.stream(request):
                pass
            figures[name] = time.perf_counter() - started
        await provider.aclose()
    print(json.dumps(figures))


asyncio.run(main(sys.argv[1]))
"""


def probe(root: Path, kind: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, kind], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout of Parley, run interleaved")
    args = parser.parse_args()
    print(machine())
    sides = {"this": Path(__file__).resolve().parents[1]}
    if args.baseline is not None:
        sides["baseline"] = args.baseline.resolve()
    for kind in ("openai", "anthropic", "gemini"):
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for _ in range(args.repeats):
            for side, root in sides.items():
                runs[side].append(probe(root, kind))
        for side, figures in runs.items():
            medians = {
                k: statistics.median(f[k] * 1000 for f in figures) for k in ("build", "first", "second")
            }
            print(
                f"{kind:9} {side:8} build {medians['build']:7.1f} ms   first stream {medians['first']:7.1f} ms"
                f"   second stream {medians['second']:6.1f} ms   (medians of {len(figures)} fresh processes)"
            )


if __name__ == "__main__":
    main()
