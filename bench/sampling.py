"""Sampling settings for the embedded model (``local:smollm2``), chosen by measurement (issue #18).

Runs the general assistant's prompts through Parley's ``local`` provider under a few candidate
settings (temperature, top-p, min-p, repeat penalty), each reply streamed through the chat guard
(``parley.answers.guards``) as a user would see it. Per setting: the share of replies the guard
stops for repetition, distinct-2 (distinct word bigrams / bigrams, over the model's raw replies),
the share cut by the length limit, mean output tokens and tokens/s; and the share of short
factual questions ("What is the capital of Japan?") answered right, each asked under
``--seeds`` seeds, since a server draws a new seed per request. One set of prompts and
questions chooses the setting (most factual answers right, then fewest repetition stops, then
the highest distinct-2, then the fewest length cuts); a second set, not looked at when
choosing, reports it. Every reply has a fixed seed, so a run repeats.

    python -m bench.sampling [--tokens 128] [--seeds 4] [--threads 2] [--instructions] [--only NAME ...]

``--instructions`` measures system prompts (``INSTRUCTIONS``) under the default sampling instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, replace

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

# Short factual questions and a pattern the right answer matches (lower-cased reply).
CHOOSE_FACTS = [
    ("What is the capital of Japan?", r"tokyo"),
    ("How many days are in a week?", r"\bseven\b|\b7\b"),
    ("Who wrote Romeo and Juliet?", r"shakespeare"),
    ("What is the largest planet in our solar system?", r"jupiter"),
    ("How many legs does a spider have?", r"\beight\b|\b8\b"),
    ("Which ocean is the largest?", r"pacific"),
    ("What is the chemical symbol for gold?", r"\bau\b"),
    ("In which country are the pyramids of Giza?", r"egypt"),
    ("What is the freezing point of water in Celsius?", r"\b0\b|zero"),
    ("How many continents are there?", r"\bseven\b|\b7\b"),
    ("What is the capital of Italy?", r"rome"),
    ("Which planet is known as the Red Planet?", r"mars"),
]
REPORT_FACTS = [
    ("What is the capital of France?", r"paris"),
    ("How many months are in a year?", r"\btwelve\b|\b12\b"),
    ("Who painted the Mona Lisa?", r"leonardo|da vinci"),
    ("What language is spoken in Brazil?", r"portuguese"),
    ("How many sides does a triangle have?", r"\bthree\b|\b3\b"),
    ("What gas do plants absorb from the air?", r"carbon dioxide|co2"),
    ("What is the boiling point of water in Celsius?", r"\b100\b"),
    ("What is the capital of Germany?", r"berlin"),
    ("Which animal is known as the king of the jungle?", r"lion"),
    ("What is the closest star to Earth?", r"\bsun\b"),
    ("How many hours are in a day?", r"\b24\b|twenty-four"),
    ("What is the largest mammal?", r"whale"),
]

CANDIDATES = {
    "t0.2 p0.9 rp1.2 (before)": Sampling(temperature=0.2, top_p=0.9, min_p=0.05, repeat_penalty=1.2),
    "t0.2 p0.9 rp1.1": Sampling(temperature=0.2, top_p=0.9, min_p=0.05, repeat_penalty=1.1),
    "t0.1 p0.9 rp1.1": Sampling(temperature=0.1, top_p=0.9, min_p=0.05, repeat_penalty=1.1),
    "t0.2 minp0.2 rp1.1": Sampling(temperature=0.2, top_p=1.0, min_p=0.2, repeat_penalty=1.1),
    "t0 greedy rp1.1": Sampling(temperature=0.0, top_p=1.0, min_p=0.0, repeat_penalty=1.1),
    "t0 greedy rp1.2": Sampling(temperature=0.0, top_p=1.0, min_p=0.0, repeat_penalty=1.2),
}

#: System prompts measured with ``--instructions`` (under the default sampling): the general
#: assistant's own, and the demo experiment's variants in examples/parley.toml, since a user of
#: ``make run`` gets one of those instead.
INSTRUCTIONS = {
    "named, clear (before)": "You are Parley, a helpful assistant. Answer clearly and concisely.",
    "named, detailed": "You are Parley, a helpful assistant. Provide detailed and informative responses.",
    "named, concise": "You are Parley, a helpful assistant. Be concise and to the point.",
    "clear": "You are a helpful assistant. Answer clearly and concisely.",
    "concise": "You are a helpful assistant. Be concise and to the point.",
    "short": "You are a helpful assistant. Answer in one or two sentences.",
    "detailed": "You are a helpful assistant. Provide detailed and informative responses.",
    "explained": "You are a helpful assistant. Answer clearly, then explain briefly.",
}


@dataclass
class Reply:
    text: str
    stopped: str | None
    finish: str
    tokens: int
    seconds: float  # first token to the last
    shown: str  # what the guard lets through: what a user reads


@dataclass
class Figures:
    right: float
    repetition: float
    echo: float
    distinct2: float
    length: float
    tokens: float
    tokens_per_s: float

    def row(self, name: str) -> str:
        return (
            f"| {name} | {self.right:.0%} | {self.repetition:.0%} | {self.echo:.0%} | {self.distinct2:.2f} | {self.length:.0%} "
            f"| {self.tokens:.0f} | {self.tokens_per_s:.1f} |"
        )


HEADER = (
    "| setting | factual answers right | stopped for repetition | stopped/dropped for echo | distinct-2 "
    "| cut by length | mean tokens | tokens/s |\n|---|---|---|---|---|---|---|---|"
)


async def reply(provider: LocalProvider, prompt: str, max_tokens: int, system: str = SYSTEM) -> Reply:
    request = ProviderRequest(
        messages=[ChatMessage("system", system), ChatMessage("user", prompt)], max_tokens=max_tokens
    )
    guard = Guard(scaffolding(system))
    text, shown, finish, tokens = "", "", "stop", 0
    first: float | None = None
    last = time.perf_counter()
    async for delta in provider.stream(request):
        if isinstance(delta, TextDelta):
            first = first or time.perf_counter()
            last = time.perf_counter()
            text += delta.text
            # the raw reply goes on: the figures are the model's, the stops the guard's
            shown += guard.feed(delta.text)
        elif isinstance(delta, Usage):
            tokens = delta.output_tokens
        elif isinstance(delta, Finish):
            finish = delta.reason
    shown += guard.flush()
    stopped = guard.stopped or ("echo" if guard.dropped else None)
    return Reply(text, stopped, finish, tokens, last - (first or last), shown)


def distinct2(texts: list[str]) -> float:
    bigrams = [
        pair for text in texts for pair in zip(text.lower().split(), text.lower().split()[1:], strict=False)
    ]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def figures(replies: list[Reply], right: float) -> Figures:
    n = len(replies)
    rates = [(r.tokens - 1) / r.seconds for r in replies if r.tokens > 1 and r.seconds > 0]
    return Figures(
        right=right,
        repetition=sum(r.stopped == "repetition" for r in replies) / n,
        echo=sum(r.stopped == "echo" for r in replies) / n,
        distinct2=statistics.fmean(distinct2([r.text]) for r in replies),
        length=sum(r.finish == "length" for r in replies) / n,
        tokens=statistics.fmean(r.tokens for r in replies),
        tokens_per_s=statistics.fmean(rates) if rates else float("nan"),
    )


@dataclass(frozen=True)
class Candidate:
    """What is measured: the sampling settings and the system prompt."""

    sampling: Sampling
    system: str = SYSTEM


async def measure(
    provider: LocalProvider, candidate: Candidate, prompts: list[str], max_tokens: int
) -> list[Reply]:
    replies = []
    for index, prompt in enumerate(prompts):
        provider.local.sampling = replace(candidate.sampling, seed=1000 + index)
        replies.append(await reply(provider, prompt, max_tokens, candidate.system))
    return replies


async def accuracy(
    provider: LocalProvider, candidate: Candidate, questions: list[tuple[str, str]], seeds: int
) -> float:
    """The share of (question, seed) pairs whose reply, as the guard lets it through, is right."""
    right = 0
    for index, (question, answer) in enumerate(questions):
        for seed in range(seeds):
            provider.local.sampling = replace(candidate.sampling, seed=2000 + index * seeds + seed)
            shown = (await reply(provider, question, 48, candidate.system)).shown
            right += bool(re.search(answer, shown.lower()))
    return right / (len(questions) * seeds)


def candidates_of(args: argparse.Namespace) -> dict[str, Candidate]:
    """The sampling settings under the general assistant's prompt or, with ``--instructions``,
    the system prompts under the default sampling."""
    every = (
        {name: Candidate(Sampling(), system) for name, system in INSTRUCTIONS.items()}
        if args.instructions
        else {name: Candidate(sampling) for name, sampling in CANDIDATES.items()}
    )
    return {k: v for k, v in every.items() if not args.only or k in args.only}


async def main(args: argparse.Namespace) -> None:
    configure(json_logs=False, level="WARNING")
    provider = create(f"smollm2?threads={args.threads}", Settings(local_threads=args.threads))
    candidates = candidates_of(args)
    print(f"python -m bench.sampling {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"{len(CHOOSE)} prompts and {len(CHOOSE_FACTS)} questions to choose on, {len(REPORT)} and "
        f"{len(REPORT_FACTS)} to report on, max_tokens {args.tokens}, {args.seeds} seeds per question\n"
    )
    await reply(provider, "Hello.", 8)  # loads the model
    started = time.perf_counter()
    chosen: dict[str, Figures] = {}
    samples: dict[str, list[Reply]] = {}
    print("Choosing set:\n" + HEADER, flush=True)
    for name, candidate in candidates.items():
        right = await accuracy(provider, candidate, CHOOSE_FACTS, args.seeds)
        chosen[name] = figures(await measure(provider, candidate, CHOOSE, args.tokens), right)
        print(chosen[name].row(name), flush=True)
    best = min(
        chosen,
        key=lambda k: (-chosen[k].right, chosen[k].repetition, -chosen[k].distinct2, chosen[k].length),
    )
    print(f"chosen: {best} = {candidates[best]}")
    print("\nReport set (not used to choose):\n" + HEADER, flush=True)
    for name, candidate in candidates.items():
        right = await accuracy(provider, candidate, REPORT_FACTS, args.seeds)
        samples[name] = await measure(provider, candidate, REPORT, args.tokens)
        print(figures(samples[name], right).row(name + (" **chosen**" if name == best else "")), flush=True)
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
    parser.add_argument("--seeds", type=int, default=4, help="seeds each factual question is asked under")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="measure the system prompts in INSTRUCTIONS under the default sampling instead",
    )
    parser.add_argument("--only", nargs="*", default=[], help="measure only these settings (by name)")
    parser.add_argument("--show", action="store_true", help="print some replies of each setting")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
