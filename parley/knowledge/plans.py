"""What ingesting documents changes in a knowledge base's rows: a ``Plan`` per document.

Re-ingesting compares hashes: an unchanged file is left alone; in a changed one, chunks whose
text is unchanged keep their rows (and vectors), moved to their new positions, and only new
chunks get rows (and need embedding). ``write`` stamps every row the plans add or change with
the knowledge base's new revision and records the chunks they remove (``kb_removals``), which
is how another process's index catches up (``Knowledge._catch_up``). It writes a batch's plans
together, a few statements in all: the publishing transaction holds SQLite's write lock, which
every live stream's next event waits for, so it must not cost a statement per document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.knowledge.ingest import ParsedDocument
from parley.knowledge.schema import Chunk, Document, Removal
from parley.store.schema import new_id, now

#: The revision of chunk rows written ahead of the transaction that publishes them.
PENDING = -1


@dataclass(slots=True)
class Ingested:
    document: Document
    status: str  # "created", "updated" or "unchanged"
    chunks: int
    embedded: int


@dataclass(slots=True)
class NewChunk:
    """A chunk row to insert. Plain, not an ORM instance: building one of those costs ~30 µs
    under the GIL, and a 20 MB document has 28,000 chunks (a second the event loop waited on)."""

    id: str
    kb_id: str
    document_id: str
    position: int
    title: str
    text: str
    sha256: str
    vector: bytes | None = None
    vector_model: str | None = None


@dataclass(slots=True)
class Plan:
    """What ingesting one parsed document changes."""

    document: Document
    status: str
    new_rows: list[NewChunk] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    moved: dict[str, int] = field(default_factory=dict)
    chunk_count: int = 0
    embedded: int = 0

    def result(self) -> Ingested:
        return Ingested(self.document, self.status, self.chunk_count, self.embedded)


async def write(
    session: AsyncSession, plans: Sequence[Plan], revision: int, *, staged: int | None = None
) -> None:
    """Stamp every row ``plans`` add or change with ``revision`` and record what they remove;
    ``staged``: new documents and rows are already written, their rows stamped with this
    (``Knowledge._stage``): when it is ``revision`` they are published as they are."""
    changed = [p for p in plans if p.status != "unchanged"]
    if not changed:
        return
    created = [p.document for p in changed if p.status == "created"]
    updated = [p for p in changed if p.status == "updated"]
    for d in created:
        d.status, d.progress, d.error = "ready", 100, None
    if created and staged is None:
        await session.execute(insert(Document), [_document(d) for d in created])
    elif created:  # written ahead as "processing": now they are visible
        await session.execute(
            update(Document)
            .where(Document.id.in_([d.id for d in created]))
            .values(status="ready", progress=100, error=None)
        )
    for p in updated:
        d = p.document
        await session.execute(
            update(Document)
            .where(Document.id == d.id)
            .values(
                title=d.title,
                format=d.format,
                sha256=d.sha256,
                size=d.size,
                chunk_count=d.chunk_count,
                updated_at=d.updated_at,
                status="ready",
                progress=100,
                error=None,
            )
        )
    removed = [(p.document.kb_id, c) for p in changed for c in p.removed]
    if removed:
        await session.execute(delete(Chunk).where(Chunk.id.in_([c for _, c in removed])))
        await session.execute(
            insert(Removal), [{"kb_id": kb, "revision": revision, "chunk_id": c} for kb, c in removed]
        )
    if updated:  # kept chunks: the title, and maybe the position, changed
        await session.execute(
            update(Chunk)
            .where(Chunk.document_id.in_([p.document.id for p in updated]), Chunk.revision != PENDING)
            .values(revision=revision)
        )
    for p in updated:
        for chunk_id, position in p.moved.items():
            await session.execute(update(Chunk).where(Chunk.id == chunk_id).values(position=position))
    if staged is not None and staged != revision:
        await session.execute(
            update(Chunk)
            .where(Chunk.document_id.in_([p.document.id for p in changed]), Chunk.revision == staged)
            .values(revision=revision)
        )
    elif staged is None and (rows := [row for p in changed for row in p.new_rows]):
        # From their values: stamping 84k ORM objects' ``revision`` would cost a third of a
        # second of the lock every live stream waits on.
        await session.execute(insert(Chunk), [values(row, revision) for row in rows])


def _document(d: Document) -> dict[str, Any]:
    return {
        "id": d.id,
        "kb_id": d.kb_id,
        "source": d.source,
        "title": d.title,
        "format": d.format,
        "sha256": d.sha256,
        "size": d.size,
        "chunk_count": d.chunk_count,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "status": "ready",
        "progress": 100,
        "error": None,
    }


def plans(
    kb_id: str,
    items: Sequence[tuple[str, ParsedDocument]],
    existing: dict[str, Document],
    old_chunks: dict[str, list[Chunk]],
) -> list[Plan]:
    """In a worker thread: a large document's thousands of rows are built off the event loop
    (plain rows, ``NewChunk``: the thread holds the GIL the loop needs for as short as it can)."""
    return [plan(kb_id, source, parsed, existing.get(source), old_chunks) for source, parsed in items]


def values(row: NewChunk, revision: int) -> dict[str, Any]:
    """A chunk row for a Core insert (the ORM's unit of work costs ~10x per row)."""
    return {
        "id": row.id,
        "kb_id": row.kb_id,
        "document_id": row.document_id,
        "position": row.position,
        "title": row.title,
        "text": row.text,
        "sha256": row.sha256,
        "vector": row.vector,
        "vector_model": row.vector_model,
        "revision": revision,
    }


def plan(
    kb_id: str,
    source: str,
    parsed: ParsedDocument,
    existing: Document | None,
    old_chunks: dict[str, list[Chunk]],
) -> Plan:
    if existing is not None and existing.sha256 == parsed.sha256:
        return Plan(existing, "unchanged", chunk_count=existing.chunk_count)
    values: dict[str, Any] = {
        "title": parsed.title[:300],
        "format": parsed.format,
        "sha256": parsed.sha256,
        "size": parsed.size,
        "chunk_count": len(parsed.chunks),
        "updated_at": now(),
    }
    if existing is None:
        document = Document(id=new_id("doc"), kb_id=kb_id, source=source, created_at=now(), **values)
        plan = Plan(document, "created", chunk_count=len(parsed.chunks))
    else:
        for key, value in {**values, "status": "ready", "progress": 100, "error": None}.items():
            setattr(existing, key, value)
        plan = Plan(existing, "updated", chunk_count=len(parsed.chunks))
    reusable: dict[str, list[Chunk]] = {}
    for chunk in old_chunks.get(plan.document.id, []):
        reusable.setdefault(chunk.sha256, []).append(chunk)
    document_id = plan.document.id
    for position, piece in enumerate(parsed.chunks):
        digest = piece.sha256
        kept = reusable.get(digest)
        if kept:
            old = kept.pop()
            if old.position != position:
                plan.moved[old.id] = position
            continue
        plan.new_rows.append(
            NewChunk(new_id("chk"), kb_id, document_id, position, piece.title, piece.text, digest)
        )
    plan.removed = [c.id for rest in reusable.values() for c in rest]
    return plan
