"""Grounded answers: retrieve before the model answers, cite, and decline when nothing fits.

The retrieved passages go into the user's turn, numbered, right before the question
(``parley.context.grounded``, within the prompt's token budget): small local models follow
context there far better than in a long system prompt, and every model can cite ``[1]``,
``[2]`` from it. When no passage
reaches the relevance floor, the assistant says it does not know without calling the
model, so nothing is invented.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from parley import events as ev
from parley.knowledge.search import Hit

if TYPE_CHECKING:
    from parley.executor import Executor, RunState

DEFAULT_TOP_K = 4
NO_ANSWER = (
    "I don't know: I found nothing about that in my knowledge base. "
    "Try rephrasing the question, or ask about something it covers."
)
#: Characters of a source's text kept as its ``snippet``: enough to recognise the passage.
SNIPPET_CHARS = 240
_CITATION = re.compile(r"\[\d+\]")


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The start of a passage, whitespace collapsed, cut at a word and marked with an ellipsis."""
    clean = " ".join(text.split())
    if len(clean) <= limit:
        return clean
    cut = clean[: limit - 1]
    head, space, _ = cut.rpartition(" ")
    return (head if space and len(head) > limit // 2 else cut).rstrip(" ,;:") + "\u2026"


def source_json(hit: Hit) -> dict[str, Any]:
    return {
        "document": hit.document_id,
        "chunk": hit.chunk_id,
        "score": round(hit.score, 6),
        "title": hit.title or hit.document_title,
        "snippet": snippet(hit.text),
    }


def relevant(hits: Sequence[Hit], floor: float | None) -> list[Hit]:
    """Hits about the question: cosine similarity at or above the floor, or (BM25 only) any match."""
    if floor is None:
        return [h for h in hits if (h.bm25 or 0.0) > 0.0]
    return [h for h in hits if h.similarity is not None and h.similarity >= floor]


def prompt_source(hit: Hit) -> dict[str, str]:
    """A hit as the context builder numbers it in the prompt (``parley.context.grounded``)."""
    return {"title": _label(hit), "text": hit.text}


def _label(hit: Hit) -> str:
    if hit.title and hit.title in hit.text:
        return ""  # an FAQ pair names itself
    return " > ".join(part for part in (hit.document_title, hit.title) if part)


async def retrieve(executor: Executor, state: RunState, question: str) -> list[Hit]:
    """Search the assistant's knowledge bases; emit ``retrieval``; keep the sources on the run."""
    assert state.assistant is not None
    knowledge = executor.knowledge
    hits: list[Hit] = []
    if knowledge is not None and knowledge.owner_id is not None:
        options = state.assistant.options
        k = int(options.get("top_k", DEFAULT_TOP_K))
        bases = await knowledge.bases_named(knowledge.owner_id, state.assistant.knowledge_bases)
        kb_ids = [kb.id for kb in bases]
        if kb_ids and (state.run.options or {}).get("retrieval") == "all":
            hits = await knowledge.first_chunks(kb_ids, k)
        elif kb_ids:
            found = await knowledge.search_bases(
                kb_ids, question, mode=options.get("retrieval", "hybrid"), k=k
            )
            floor = options.get("min_similarity", knowledge.relevance_floor())
            hits = relevant(found, None if floor is None else float(floor))
    state.sources = [source_json(h) for h in hits]
    executor.log.append(state.run.id, ev.RETRIEVAL, {"sources": state.sources})
    return hits


def decline(executor: Executor, state: RunState) -> None:
    """Answer "I don't know" without the model: nothing retrieved is about the question."""
    assert state.assistant is not None
    state.text = str(state.assistant.options.get("no_answer", NO_ANSWER))
    executor.log.append(state.run.id, ev.MESSAGE_DELTA, {"text": state.text})


def cite(executor: Executor, state: RunState) -> None:
    """If the model cited nothing, list the sources it was given, so every answer shows them."""
    if not state.sources or _CITATION.search(state.text):
        return
    listed = "; ".join(f"[{n}] {s['title']}" for n, s in enumerate(state.sources, start=1))
    suffix = f"\n\nSources: {listed}"
    state.text += suffix
    executor.log.append(state.run.id, ev.MESSAGE_DELTA, {"text": suffix})
