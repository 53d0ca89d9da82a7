"""Attachments are context: the files of a run and of its thread, read like a small knowledge base.

A file the user attached to a message (the run's ``metadata.files``) or to the thread
(``File.thread_id``) is chunked as an ingested document would be, and its chunks compete for
the prompt by BM25 against the question, with the same index the knowledge bases use. A
request for a summary ("summarise the attached file", "what is this document about") wants
the file from its start, so it gets the leading chunks in order instead; so does any other
message with a file attached to it that no chunk matches (the user attached it to this
message, so it is about it: "translate this", "fix the grammar"). A file attached to the
thread earlier is brought in only where it matches. Each passage is cited by the file's name.
A passage the message already quotes (seed 001's file analysis puts the text in it) is left out.

Only the run's user's own files are read: an id of anyone else's file is ignored, as is a
file with no text (an image).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import replace
from itertools import zip_longest
from typing import Any

from sqlalchemy import bindparam, select

from parley.files import File
from parley.knowledge.chunking import Chunk, is_faq, split_faq, split_markdown, split_text
from parley.knowledge.search import ChunkEntry, Hit, KbIndex, tokenize
from parley.store.db import Database
from parley.store.schema import Run, from_row

DEFAULT_K = 4
#: Characters of attached text a run's prompt takes at most: four full chunks, which leaves
#: a small local model's context room for the question, the knowledge base and the history.
DEFAULT_BUDGET = 4_000
#: Files read per run at most (the run's own first, then the thread's newest).
MAX_FILES = 20
#: The ``kb_id`` of an attachment's hits: they come from no knowledge base.
SOURCE = "attachment"

_SUMMARY = re.compile(
    r"\b(summar(y|ies|i[sz]e[sd]?|i[sz]ing)|overview|outline|gist|tl;?\s?dr|recap|key (points|ideas|takeaways)"
    r"|main (points|ideas)|what('s| is| are)? (this|that|the|these|those) (\w+ )?(document|file|pdf|attachment|text"
    r"|paper|page|article|report)s?( \w+)? about|what('s| is) in (this|that|the) (\w+ )?(document|file|pdf"
    r"|attachment)|describe (this|that|the) (\w+ )?(document|file|pdf|attachment))\b",
    re.IGNORECASE,
)


# Built once: constructing a statement costs about as much as running it.
_IN_THREAD = (
    select(File)
    .where(
        File.user_id == bindparam("user_id"),
        File.thread_id == bindparam("thread_id"),
        File.text.is_not(None),
    )
    .order_by(File.created_at.desc(), File.id.desc())
    .limit(MAX_FILES)
)


def wants_summary(question: str) -> bool:
    """Whether the message asks about a file as a whole rather than something in it."""
    return _SUMMARY.search(question) is not None


async def attached_hits(
    db: Database, run: Run, question: str, *, k: int = DEFAULT_K, budget: int = DEFAULT_BUDGET
) -> list[Hit]:
    """The passages of the run's and its thread's attached files that the answer should see,
    most relevant first (leading passages in file order for a summary), at most ``k`` and
    ``budget`` characters; ``[]`` when nothing with text is attached."""
    own = _file_ids(run.options)
    files = await _load(db, run, own)
    if not files:
        return []
    return await asyncio.to_thread(_select, files, set(own), question, k, budget)


def _file_ids(options: dict[str, Any] | None) -> list[str]:
    """The ids in ``metadata.files``, in order, once each; anything else there is ignored."""
    metadata = (options or {}).get("metadata")
    listed = metadata.get("files") if isinstance(metadata, dict) else None
    if not isinstance(listed, list):
        return []
    ids = [item for item in listed if isinstance(item, str)]
    return list(dict.fromkeys(ids))[:MAX_FILES]


async def _load(db: Database, run: Run, own: Sequence[str]) -> list[File]:
    """The run's files in the order it names them, then the thread's, newest first.

    The thread's are read straight through the driver: every run of every assistant reads
    them before its first token (an ORM session took 2.8 ms of it on PostgreSQL, for a thread
    with no files)."""
    named: dict[str, File] = {}
    if own:  # a run that names files: any number of ids, through a session
        readable = select(File).where(File.user_id == run.user_id, File.text.is_not(None))
        async with db.session() as session:
            named = {f.id: f for f in (await session.scalars(readable.where(File.id.in_(own)))).all()}
    async with db.read() as reader:
        rows = await reader.rows(_IN_THREAD, {"user_id": run.user_id, "thread_id": run.thread_id})
    files = [named[file_id] for file_id in own if file_id in named]
    files += [f for f in (from_row(File, row) for row in rows) if f.id not in named]
    return files[:MAX_FILES]


def _select(files: Sequence[File], own: set[str], question: str, k: int, budget: int) -> list[Hit]:
    said = " ".join(question.split())
    passages = [[h for h in _passages(file) if " ".join(h.text.split()) not in said] for file in files]
    primary = [p for file, p in zip(files, passages, strict=True) if file.id in own] or passages
    if wants_summary(question):
        return _leading(primary, k, budget)
    ranked = _ranked([hit for p in passages for hit in p], question, k, budget)
    if ranked or not own:
        return ranked
    return _leading(primary, k, budget)


def _passages(file: File) -> list[Hit]:
    """A file's chunks as hits, in order: chunked as ingestion would chunk a document of its kind."""
    text = file.text or ""
    chunks: list[Chunk]
    if file.kind == "md":
        chunks = split_faq(text) if is_faq(text) else split_markdown(text)
    else:
        chunks = [Chunk(piece) for piece in split_text(text)]
    return [
        Hit(
            kb_id=SOURCE,
            chunk_id=f"{file.id}:{position}",
            document_id=file.id,
            document_title=file.name,
            title="",  # the citation names the file
            text=chunk.indexed_text,
            position=position,
            # Taken for its place in the file, not ranked; attached by the user, so relevant by
            # choice: it passes ``grounding.relevant`` with or without a similarity floor.
            score=1.0,
            bm25=1.0,
            similarity=1.0,
        )
        for position, chunk in enumerate(c for c in chunks if c.text.strip())
    ]


def _ranked(hits: Sequence[Hit], question: str, k: int, budget: int) -> list[Hit]:
    """The chunks BM25 finds the question's words in, best first."""
    query = tokenize([question])[0] if question.strip() else ()
    if not hits or not query:
        return []
    entries = [
        ChunkEntry(h.chunk_id, h.document_id, h.title, h.text, h.position, h.document_title, tokens, None)
        for h, tokens in zip(hits, tokenize([h.text for h in hits]), strict=True)
    ]
    found = KbIndex.build(SOURCE, 0, entries, None).search(query, None, mode="bm25", k=len(entries))
    scored = [replace(hit, similarity=1.0) for hit in found if (hit.bm25 or 0.0) > 0.0]
    return _within(scored, k, budget)


def _leading(passages: Sequence[Sequence[Hit]], k: int, budget: int) -> list[Hit]:
    """Each file's first chunks, taken in turn so every file is seen, then shown in file order."""
    taken = _within([h for row in zip_longest(*passages) for h in row if h is not None], k, budget)
    order = {hit.document_id: n for n, hit in enumerate(h for p in passages for h in p[:1])}
    return sorted(taken, key=lambda h: (order[h.document_id], h.position))


def _within(hits: Sequence[Hit], k: int, budget: int) -> list[Hit]:
    chosen: list[Hit] = []
    used = 0
    for hit in hits:
        if len(chosen) == k or used + len(hit.text) > budget:
            break
        chosen.append(hit)
        used += len(hit.text)
    return chosen
