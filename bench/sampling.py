"""Sampling settings for the embedded model (``local:smollm2``), chosen by measurement (issue #18).

Runs the general assistant's prompts through Parley's ``local`` provider under a few candidate
settings (temperature, top-p, min-p, repeat penalty), each reply streamed through the chat guard
(``parley.answers.guards``) as a user would see it. Per setting: the share of replies the guard
stops for repetition, distinct-2 (distinct word bigrams / bigrams, over the model's raw replies),
the share cut by the length limit, mean output tokens and tokens/s. One prompt set chooses the
setting (fewest repetition stops, then the highest distinct-2, then the fewest length cuts); a
second set, not looked at when choosing, reports it. Every reply has a fixed seed, so a run
repeats.

    python -m bench.sampling [--tokens 128] [--threads 2] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass

from parley.answers.guards import Guard, scaffolding
from parley.assistants import BUILTIN
from parley.config import Settings
from parley.logs import configure
from parley.providers.base import ChatMessage, Finish, ProviderRequest, TextDelta, Usage
from parley.providers.local import LocalProvider, Sampling, create

from ._util import machine

SYSTEM = BUILTIN["general"].instructions

CHOOSE = [
    "Give me three names for a golden retriever puppy.",
    "List four fruits that are high in vitamin C.",
    "What is photosynthesis? Explain in two sentences.",
    "Rewrite this more politely: Send me the report now.",
    "Suggest three titles for a blog post about baking bread.",
    "Why is the sky blue? Keep it short.",
    "Name five countries in South America.",
    "Rewrite in simple words: The meeting has been postponed indefinitely.",
    "Give me three tips for sleeping better.",
    "Explain what a database index is in one paragraph.",
    "List three things to pack for a day at the beach.",
    "Write a short thank-you note to a neighbour who watered my plants.",
]
REPORT = [
    "Give me three names for a black cat.",
    "List four vegetables that grow well in spring.",
    "What is gravity? Explain in two sentences.",
    "Rewrite this more politely: Fix this bug today.",
    "Suggest three names for a coffee shop.",
    "Why do leaves change colour in autumn? Keep it short.",
    "Name five animals that live in the ocean.",
    "Rewrite in simple words: The results were inconclusive.",
    "Give me three tips for learning a new language.",
    "Explain what a password manager is in one paragraph.",
    "List three ideas for a rainy-day activity with kids.",
    "Write a short message inviting a friend to dinner on Friday.",
]

CANDIDATES = {
    "t0.2 p0.9 rp1.1 (before)": Sampling(temperature=0.2, top_p=0.9, min_p=0.05, repeat_penalty=1.1),
    "t0 greedy rp1.1": Sampling(temperature=0.0, top_p=1.0, min_p=0.0, repeat_penalty=1.1),
    "t0.2 p0.9 rp1.2": Sampling(temperature=0.2, top_p=0.9, min_p=0.05, repeat_penalty=1.2),
    "t0.4 p0.9 rp1.15": Sampling(temperature=0.4, top_p=0.9, min_p=0.05, repeat_penalty=1.15),
    "t0.3 minp0.1 rp1.3": Sampling(temperature=0.3, top_p=1.0, min_p=0.1, repeat_penalty=1.3),
}


@dataclass
class Reply:
    text: str
    stopped: str | None
    finish: str
    tokens: int
    seconds: float  # first token to the last


@dataclass
class Figures:
    repetition: float
    echo: float
    distinct2: float
    length: float
    tokens: float
    tokens_per_s: float

    def row(self, name: str) -> str:
        return (
            f"| {name} | {self.repetition:.0%} | {self.echo:.0%} | {self.distinct2:.2f} | {self.length:.0%} "
            f"| {self.tokens:.0f} | {self.tokens_per_s:.1f} |"
        )


HEADER = "| setting | stopped for repetition | stopped/dropped for echo | distinct-2 | cut by length | mean tokens | tokens/s |\n|---|---|---|---|---|---|---|"


async def reply(provider: LocalProvider, prompt: str, max_tokens: int) -> Reply:
    request = ProviderRequest(
        messages=[ChatMessage("system", SYSTEM), ChatMessage("user", prompt)], max_tokens=max_tokens
    )
    guard = Guard(scaffolding(SYSTEM))
    text, finish, tokens = "", "stop", 0
    first: float | None = None
    last = time.perf_counter()
    async for delta in provider.stream(request):
        if isinstance(delta, TextDelta):
            first = first or time.perf_counter()
            last = time.perf_counter()
            text += delta.text
            guard.feed(
                delta.text
            )  # the raw reply goes on: the figures are the model's, the stops the guard's
        elif isinstance(delta, Usage):
            tokens = delta.output_tokens
        elif isinstance(delta, Finish):
            finish = delta.reason
    guard.flush()
    stopped = guard.stopped or ("echo" if guard.dropped else None)
    return Reply(text, stopped, finish, tokens, last - (first or last))


def distinct2(texts: list[str]) -> float:
    bigrams = [
        pair for text in texts for pair in zip(text.lower().split(), text.lower().split()[1:], strict=False)
    ]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def figures(replies: list[Reply]) -> Figures:
    n = len(replies)
    rates = [(r.tokens - 1) / r.seconds for r in replies if r.tokens > 1 and r.seconds > 0]
    return Figures(
        repetition=sum(r.stopped == "repetition" for r in replies) / n,
        echo=sum(r.stopped == "echo" for r in replies) / n,
        distinct2=statistics.fmean(distinct2([r.text]) for r in replies),
        length=sum(r.finish == "length" for r in replies) / n,
        tokens=statistics.fmean(r.tokens for r in replies),
        tokens_per_s=statistics.fmean(rates) if rates else float("nan"),
    )


async def measure(
    provider: LocalProvider, sampling: Sampling, prompts: list[str], max_tokens: int
) -> list[Reply]:
    replies = []
    for index, prompt in enumerate(prompts):
        provider.local.sampling = Sampling(
            sampling.temperature, sampling.top_p, sampling.min_p, sampling.repeat_penalty, seed=1000 + index
        )
        replies.append(await reply(provider, prompt, max_tokens))
    return replies


async def main(args: argparse.Namespace) -> None:
    configure(json_logs=False, level="WARNING")
    provider = create(f"smollm2?threads={args.threads}", Settings(local_threads=args.threads))
    candidates = {k: v for k, v in CANDIDATES.items() if not args.only or k in args.only}
    print(f"python -m bench.sampling {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"{len(CHOOSE)} prompts to choose on, {len(REPORT)} to report on, max_tokens {args.tokens}\n")
    await reply(provider, "Hello.", 8)  # loads the model
    started = time.perf_counter()
    chosen: dict[str, Figures] = {}
    samples: dict[str, list[Reply]] = {}
    print("Choosing set:\n" + HEADER, flush=True)
    for name, sampling in candidates.items():
        chosen[name] = figures(await measure(provider, sampling, CHOOSE, args.tokens))
        print(chosen[name].row(name), flush=True)
    best = min(chosen, key=lambda k: (chosen[k].repetition, -chosen[k].distinct2, chosen[k].length))
    print(f"chosen: {best} = {candidates[best]}")
    print("\nReport set (not used to choose):\n" + HEADER, flush=True)
    for name, sampling in candidates.items():
        samples[name] = await measure(provider, sampling, REPORT, args.tokens)
        print(figures(samples[name]).row(name + (" **chosen**" if name == best else "")), flush=True)
    print(f"{time.perf_counter() - started:.0f} s; load average after: {os.getloadavg()[0]:.2f}")
    if args.show:
        for name in (best, *(k for k in candidates if k != best)):
            print(f"\n== {name}: the first report replies")
            for prompt, r in zip(REPORT[:4], samples[name][:4], strict=True):
                print(f"-- {prompt} [{r.finish}, guard: {r.stopped}]\n{r.text.strip()}")
    await provider.aclose()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=128, help="max_tokens of each reply")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--only", nargs="*", default=[], help="measure only these settings (by name)")
    parser.add_argument("--show", action="store_true", help="print some replies of each setting")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
