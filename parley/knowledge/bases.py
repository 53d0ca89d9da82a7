"""Knowledge bases as their owners see them: create, ingest, delete, search.

``Knowledge`` holds one in-memory ``KbIndex`` per knowledge base, loaded on its first use
and updated in place after each write. Every write bumps the knowledge base's ``revision``
in the same transaction; before a search, the revision in the database is compared with
the index's, so a change written by another process (``parley ingest`` while the server
runs, or another worker) is picked up without a restart, by reading only what changed: the
chunk rows stamped with a later revision and the removals recorded since (``_catch_up``; the
stamps are written by ``parley.knowledge.plans``). The writer's own index is updated from the
rows in hand. A large change writes its rows ahead in short transactions, as pending, and
publishes them at once (``_stage``). CPU work runs in ``Workers`` (processes for parsing and
tokenizing, threads for embedding and index updates): the event loop only does I/O.

Re-ingesting compares hashes: an unchanged file is skipped; in a changed one, chunks whose
text is unchanged keep their vectors, and only new chunks are embedded.

Where the vectors live: on PostgreSQL with pgvector (``parley.knowledge.pgvector``) in
``kb_chunks.embedding``, ranked by the database; the process keeps the chunks' text and
BM25 index only. Elsewhere, float32 bytes in ``kb_chunks.vector``, loaded into the index
as one matrix and ranked with numpy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from sqlalchemy import Boolean, bindparam, delete, func, insert, literal_column, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.errors import ApiError, not_found
from parley.knowledge import pgvector
from parley.knowledge.chunking import shown
from parley.knowledge.embeddings import (
    Embedder,
    EmbeddingsUnavailable,
    QueryVectors,
    Vectors,
    from_bytes,
    load_embedder,
    to_bytes,
)
from parley.knowledge.ingest import ParsedDocument, UnreadableDocument, iter_files, parse_file
from parley.knowledge.minilm_onnx import Precision, QuestionPrecision
from parley.knowledge.pgvector import PgVector
from parley.knowledge.plans import PENDING, Ingested, NewChunk, Plan, plans, values, write
from parley.knowledge.schema import Chunk, Document, Job, KnowledgeBase, Removal
from parley.knowledge.search import ChunkEntry, Hit, KbIndex, Mode, depth_for, merge, tokenize
from parley.knowledge.workers import Workers
from parley.store.db import Database
from parley.store.schema import new_id, now
from parley.threads import visible
from parley.tools.choice import content_stems
from parley.users import Principal

log = structlog.get_logger(__name__)

#: Documents written per transaction (and per index update) by a folder ingest.
BATCH = 64
#: Chunks per embedding call: progress is reported between them.
EMBED_BATCH = 256
#: Chunk rows per transaction when a change is larger (``Knowledge._stage``).
SLICE = 500
#: Texts tokenized per call in the process pool.
TOKENIZE_SLICE = 2000


@dataclass(slots=True)
class SyncReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    chunks: int = 0
    embedded: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def add(self, result: Ingested) -> None:
        setattr(self, result.status, getattr(self, result.status) + 1)
        self.chunks += result.chunks
        self.embedded += result.embedded


Progress = Callable[[str, str | None], None]
#: Called with the fraction done (0..1) of a long step (embedding a large document).
Fraction = Callable[[float], Awaitable[None]]


# Before every search: built once (building it cost as much as running it on SQLite).
_REVISION = select(KnowledgeBase.revision).where(KnowledgeBase.id == bindparam("kb_id"))
_STAGING = select(KnowledgeBase.staging).where(KnowledgeBase.id == bindparam("kb_id"))


class Knowledge:
    def __init__(
        self,
        db: Database,
        *,
        embeddings: str = "minilm",
        embedder: Embedder | None = None,
        cache_dir: Path | None = None,
        use_pgvector: bool = True,
        questions: QuestionPrecision = "int8",
        chunks: Precision = "float32",
        workers: Workers | None = None,
    ) -> None:
        """``use_pgvector``: keep vectors in pgvector where the database has it (else in-app);
        ``questions``, ``chunks``: the precision MiniLM embeds questions and chunks in (``MiniLMEmbedder``);
        ``workers``: where parsing, tokenizing and embedding run (threads by default)."""
        self.db = db
        self.workers = workers or Workers("thread")
        self._use_pgvector = use_pgvector
        self._pgvector: PgVector | None = None
        self._store_checked = False
        self._vector_indexes: set[tuple[str, int]] = set()
        self._spec = embeddings
        self._cache_dir = cache_dir
        self._questions: QuestionPrecision = questions
        self._chunks: Precision = chunks
        self._embedder = embedder
        self._embedder_loaded = embeddings == "none" or embedder is not None
        self._indexes: dict[str, KbIndex] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._embed_lock = asyncio.Lock()
        self._queries: QueryVectors | None = None
        self._warming: asyncio.Task[None] | None = None
        #: The operator: assistants' knowledge bases are looked up among this user's.
        self.owner_id: int | None = None

    # -- lifecycle ----------------------------------------------------------------

    async def start(self, *, owner_id: int) -> None:
        """Get ready to serve: the model and the worker processes load in the background.

        Indexes load lazily, on a base's first search or write in this process (``_fresh``), so
        a process starts in the same time whatever the size of the knowledge, and an API process
        of a cluster holds only the bases it serves. Vectors of another model than the configured
        one are recomputed then (``knowledge_reembedding`` in the log).
        """
        self.owner_id = owner_id
        # The model and the worker processes load meanwhile: no first upload or search waits for them.
        self._warming = asyncio.create_task(self._warm_up(), name="knowledge-warm-up")
        await self._vector_store()

    async def _warm_up(self) -> None:
        await self.embedder()
        await self.workers.cpu(tokenize, ["warm up"])

    async def close(self) -> None:
        if self._warming is not None and not self._warming.done():
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        self.workers.close()

    async def embedder(self) -> Embedder | None:
        """The embedding backend, loaded on first use (a model takes seconds to load)."""
        if not self._embedder_loaded:
            async with self._embed_lock:
                if not self._embedder_loaded:
                    try:
                        self._embedder = await asyncio.to_thread(
                            partial(
                                load_embedder,
                                self._spec,
                                self._cache_dir,
                                questions=self._questions,
                                chunks=self._chunks,
                            )
                        )
                    except EmbeddingsUnavailable as exc:
                        log.warning("embeddings_unavailable", reason=str(exc), fallback="bm25 only")
                        self._spec = "none"
                    self._embedder_loaded = True
        return self._embedder

    async def _query_vectors(self) -> QueryVectors | None:
        embedder = await self.embedder()
        if embedder is None:
            return None
        if self._queries is None or self._queries.embedder is not embedder:
            self._queries = QueryVectors(embedder)
        return self._queries

    async def _vector_store(self) -> PgVector | None:
        """pgvector, when the database has it (and it is wanted); checked once."""
        if not self._store_checked:
            self._pgvector = await pgvector.detect(self.db) if self._use_pgvector else None
            self._store_checked = True
            log.info("knowledge_vectors", store="pgvector" if self._pgvector else "in-app")
        return self._pgvector

    @property
    def vector_store(self) -> str:
        return "pgvector" if self._pgvector is not None else "in-app"

    async def _pgvector_for(self, embedder: Embedder) -> PgVector | None:
        store = await self._vector_store()
        if store is not None and (embedder.name, embedder.dim) not in self._vector_indexes:
            await pgvector.ensure_index(self.db, embedder.name, embedder.dim)
            self._vector_indexes.add((embedder.name, embedder.dim))
        return store

    @property
    def dense_available(self) -> bool:
        return self._spec != "none"

    # -- knowledge bases ----------------------------------------------------------

    async def create_base(self, principal: Principal, name: str, description: str = "") -> KnowledgeBase:
        kb = KnowledgeBase(id=new_id("kb"), user_id=principal.user_id, name=name, description=description)
        try:
            async with self.db.transaction() as session:
                session.add(kb)
        except IntegrityError:
            raise ApiError(409, "name_taken", f"you already have a knowledge base named {name!r}") from None
        self._indexes[kb.id] = KbIndex(kb.id, 0)
        return kb

    async def ensure_base(self, user_id: int, name: str) -> KnowledgeBase:
        async with self.db.session() as session:
            kb = await session.scalar(
                select(KnowledgeBase).where(KnowledgeBase.user_id == user_id, KnowledgeBase.name == name)
            )
        if kb is not None:
            return kb
        try:
            return await self.create_base(Principal(user_id, ""), name)
        except ApiError:
            return await self.ensure_base(user_id, name)

    async def list_bases(self, principal: Principal) -> list[tuple[KnowledgeBase, int]]:
        """The caller's own knowledge bases with their document counts."""
        counts = select(Document.kb_id, func.count().label("n")).group_by(Document.kb_id).subquery("counts")
        stmt = (
            select(KnowledgeBase, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.kb_id == KnowledgeBase.id)
            .where(KnowledgeBase.user_id == principal.user_id)
            .order_by(KnowledgeBase.created_at)
        )
        async with self.db.session() as session:
            return [(kb, int(n)) for kb, n in (await session.execute(stmt)).all()]

    async def get_base(self, principal: Principal, kb_id: str) -> KnowledgeBase:
        async with self.db.session() as session:
            return await _base(session, principal, kb_id)

    async def bases_named(self, user_id: int, names: Sequence[str]) -> list[KnowledgeBase]:
        async with self.db.session() as session:
            rows = await session.scalars(
                select(KnowledgeBase).where(KnowledgeBase.user_id == user_id, KnowledgeBase.name.in_(names))
            )
            return list(rows)

    async def delete_base(self, principal: Principal, kb_id: str) -> None:
        async with self._lock(kb_id), self.db.transaction() as session:
            await _base(session, principal, kb_id)
            await session.execute(delete(Chunk).where(Chunk.kb_id == kb_id))
            await session.execute(delete(Removal).where(Removal.kb_id == kb_id))
            await session.execute(delete(Job).where(Job.kb_id == kb_id))
            await session.execute(delete(Document).where(Document.kb_id == kb_id))
            await session.execute(delete(KnowledgeBase).where(KnowledgeBase.id == kb_id))
        self._indexes.pop(kb_id, None)

    # -- documents ----------------------------------------------------------------

    async def list_documents(self, principal: Principal, kb_id: str) -> list[Document]:
        async with self.db.session() as session:
            await _base(session, principal, kb_id)
            rows = await session.scalars(
                select(Document).where(Document.kb_id == kb_id).order_by(Document.source)
            )
            return list(rows)

    async def add_document(
        self, principal: Principal, kb_id: str, source: str, parsed: ParsedDocument
    ) -> Ingested:
        await self.get_base(principal, kb_id)
        return (await self.add_documents(kb_id, [(source, parsed)]))[0]

    async def add_documents(
        self,
        kb_id: str,
        items: Sequence[tuple[str, ParsedDocument]],
        *,
        progress: Fraction | None = None,
    ) -> list[Ingested]:
        """Create or update documents by source; one transaction, one index update.

        ``progress`` hears how much of the embedding is done (most of a large document's time)."""
        async with self._lock(kb_id):
            async with self.db.session() as session:
                existing = {
                    d.source: d
                    for d in await session.scalars(
                        select(Document).where(
                            Document.kb_id == kb_id, Document.source.in_([s for s, _ in items])
                        )
                    )
                }
                changed_ids = [
                    existing[s].id for s, p in items if s in existing and existing[s].sha256 != p.sha256
                ]
                old_chunks: dict[str, list[Chunk]] = {}
                if changed_ids:
                    for chunk in await session.scalars(
                        select(Chunk).where(Chunk.document_id.in_(changed_ids))
                    ):
                        old_chunks.setdefault(chunk.document_id, []).append(chunk)
            plan = await self.workers.thread(plans, kb_id, items, existing, old_chunks)
            embedder = await self.embedder()
            store = None if embedder is None else await self._pgvector_for(embedder)
            fresh = [row for p in plan for row in p.new_rows]
            in_db: list[tuple[str, Vectors]] = []
            if embedder is not None and fresh:
                vectors = await self._embed(embedder, await self.workers.thread(_texts, fresh), progress)
                for row, vector in zip(fresh, vectors, strict=True):
                    row.vector_model = embedder.name
                    if store is None:
                        row.vector = to_bytes(vector)
                    else:
                        in_db.append((row.id, vector))
                for p in plan:
                    p.embedded = len(p.new_rows)
            if not any(p.status != "unchanged" for p in plan):
                return [p.result() for p in plan]
            stamp = None  # the revision the rows were staged at, if they were
            if sum(len(p.new_rows) for p in plan) > SLICE:
                stamp = await self._stage(kb_id, plan, in_db, embedder)
            try:
                revision = await self._publish(kb_id, plan, stamp, in_db, embedder)
            except BaseException:
                if stamp is not None:
                    await asyncio.shield(self._unstage(kb_id, plan, stamp))
                raise
            await self._apply(kb_id, revision, plan)
            return [p.result() for p in plan]

    async def _stage(
        self, kb_id: str, plan: Sequence[Plan], in_db: list[tuple[str, Vectors]], embedder: Embedder | None
    ) -> int:
        """Write a large change's chunk rows ahead, ``SLICE`` rows per short transaction, out of
        every index: the event log's commits, which every live stream waits on, take turns with
        them instead of waiting for one long write. New documents show as ``processing``.

        The rows are stamped with the revision this change reserves (``KnowledgeBase.staging``,
        the next one), so that publishing them is one row whatever their number (``_bump``).
        While another process stages into the same base, they are stamped ``PENDING`` and
        publishing re-stamps them. Returns the stamp."""
        async with self.db.transaction() as session:
            kb = await _locked(session, kb_id)
            stamp = PENDING
            if kb.staging is None:
                stamp = kb.staging = kb.revision + 1
            for p in plan:
                if p.status == "created":
                    p.document.status, p.document.progress = "processing", 99
                    session.add(p.document)
        vectors = dict(in_db)
        rows = [row for p in plan for row in p.new_rows]
        try:
            for start in range(0, len(rows), SLICE):
                part = rows[start : start + SLICE]
                async with self.db.transaction() as session:
                    await session.execute(insert(Chunk), [values(row, stamp) for row in part])
                    if vectors and embedder is not None:
                        await pgvector.store(session, embedder.name, [(r.id, vectors[r.id]) for r in part])
        except BaseException:
            await asyncio.shield(self._unstage(kb_id, plan, stamp))
            raise
        return stamp

    async def _publish(
        self,
        kb_id: str,
        plan: Sequence[Plan],
        stamp: int | None,
        in_db: list[tuple[str, Vectors]],
        embedder: Embedder | None,
    ) -> int:
        """One transaction: the base's new revision and the plans' rows (``stamp``: those staged
        ahead, ``_stage``). Returns the revision."""
        started = time.perf_counter()
        async with self.db.transaction() as session:
            revision = await _bump(session, kb_id, publishing=stamp)
            await write(session, plan, revision, staged=stamp)
            if in_db and embedder is not None and stamp is None:
                await pgvector.store(session, embedder.name, in_db)
        if stamp is not None:
            log.info(
                "knowledge_published",
                kb_id=kb_id,
                chunks=sum(len(p.new_rows) for p in plan),
                restamped=revision != stamp,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
        return revision

    async def _unstage(self, kb_id: str, plan: Sequence[Plan], stamp: int) -> None:
        """A staged change that failed: its staged rows, the documents it created and its
        reservation go."""
        documents = [p.document.id for p in plan if p.status != "unchanged"]
        created = [p.document.id for p in plan if p.status == "created"]
        async with self.db.transaction() as session:
            await session.execute(
                delete(Chunk).where(Chunk.document_id.in_(documents), Chunk.revision == stamp)
            )
            if created:
                await session.execute(delete(Document).where(Document.id.in_(created)))
            if stamp != PENDING:
                await session.execute(
                    update(KnowledgeBase)
                    .where(KnowledgeBase.id == kb_id, KnowledgeBase.staging == stamp)
                    .values(staging=None)
                )

    async def _apply(self, kb_id: str, revision: int, plan: Sequence[Plan]) -> None:
        """The index after this process's own write: from the rows in hand (no read back), or
        caught up from the database when another process wrote in between."""
        index = self._indexes.get(kb_id)
        if index is None or index.revision != revision - 1:
            await self._catch_up(kb_id)
            return
        dim = None if self._embedder is None or self._pgvector is not None else self._embedder.dim
        # One title a document: an ORM attribute read costs microseconds, 84k of them a third of a second.
        rows = [(row, title) for p in plan for title in (p.document.title,) for row in p.new_rows]
        tokens = await self._tokenize(await self.workers.thread(_texts, [c for c, _ in rows]))
        added = await self.workers.thread(_entries, rows, tokens, dim)
        self._indexes[kb_id] = await self.workers.thread(
            index.with_changes,
            revision,
            {c for p in plan for c in p.removed},
            added,
            positions={cid: pos for p in plan for cid, pos in p.moved.items()},
            titles={p.document.id: p.document.title for p in plan if p.status == "updated"},
            dim=dim,
        )

    async def _tokenize(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        """In the process pool, ``TOKENIZE_SLICE`` texts a call: the answer of one call is unpickled
        in one piece, holding the GIL (84k chunks' tokens stalled the event loop for a second)."""
        parts = await asyncio.gather(
            *(
                self.workers.cpu(tokenize, texts[start : start + TOKENIZE_SLICE])
                for start in range(0, len(texts), TOKENIZE_SLICE)
            )
        )
        return [tokens for part in parts for tokens in part]

    async def _embed(self, embedder: Embedder, texts: Sequence[str], progress: Fraction | None) -> Vectors:
        """In the worker threads (ONNX Runtime releases the GIL), a batch at a time."""
        parts = []
        for start in range(0, len(texts), EMBED_BATCH):
            parts.append(await self.workers.thread(embedder.embed, texts[start : start + EMBED_BATCH]))
            if progress is not None:
                await progress(min(1.0, (start + EMBED_BATCH) / len(texts)))
        return np.vstack(parts).astype(np.float32)

    async def delete_document(self, principal: Principal, kb_id: str, document_id: str) -> None:
        async with self._lock(kb_id):
            async with self.db.transaction() as session:
                await _base(session, principal, kb_id)
                doc = await session.scalar(
                    select(Document).where(Document.id == document_id, Document.kb_id == kb_id)
                )
                if doc is None:
                    raise not_found("document", document_id)
                revision = await _bump(session, kb_id)
                removed = list(
                    await session.scalars(select(Chunk.id).where(Chunk.document_id == document_id))
                )
                if removed:
                    await session.execute(
                        insert(Removal),
                        [{"kb_id": kb_id, "revision": revision, "chunk_id": c} for c in removed],
                    )
                await session.execute(delete(Chunk).where(Chunk.document_id == document_id))
                await session.execute(delete(Document).where(Document.id == document_id))
            await self._catch_up(kb_id)

    async def sync(
        self,
        user_id: int,
        name: str,
        paths: Sequence[Path],
        *,
        prune: bool = False,
        progress: Progress | None = None,
    ) -> SyncReport:
        """Ingest files and folders into the knowledge base ``name`` of ``user_id`` (created if needed).

        Bad files are reported in ``failed`` and skipped. With ``prune``, documents whose
        source is no longer among the files are deleted: the knowledge base mirrors the paths.
        """
        kb = await self.ensure_base(user_id, name)
        report = SyncReport()
        seen: set[str] = set()
        batch: list[tuple[str, ParsedDocument]] = []
        files = [(source, path) for root in paths for source, path in iter_files(root)]
        for source, path in files:
            seen.add(source)
            try:
                batch.append((source, await self.workers.cpu(parse_file, str(path), path.name)))
                error = None
            except (UnreadableDocument, OSError) as exc:
                error = exc.reason if isinstance(exc, UnreadableDocument) else f"cannot read: {exc}"
                report.failed.append((source, error))
                log.warning("ingest_skipped", source=source, reason=error)
            if progress is not None:
                progress(source, error)
            if len(batch) >= BATCH:
                for result in await self.add_documents(kb.id, batch):
                    report.add(result)
                batch = []
        if batch:
            for result in await self.add_documents(kb.id, batch):
                report.add(result)
        if prune:
            owner = Principal(user_id, "", is_admin=False)
            async with self.db.session() as session:
                stale = (
                    await session.execute(select(Document.id, Document.source).where(Document.kb_id == kb.id))
                ).all()
            for doc_id, source in stale:
                if source not in seen:
                    await self.delete_document(owner, kb.id, doc_id)
                    report.deleted += 1
        return report

    # -- search ---------------------------------------------------------------------

    async def search(
        self,
        principal: Principal,
        kb_id: str,
        query: str,
        *,
        mode: Mode = "hybrid",
        k: int = 10,
        document: str | None = None,
    ) -> list[Hit]:
        return (await self.search_with_mode(principal, kb_id, query, mode=mode, k=k, document=document))[0]

    async def search_with_mode(
        self,
        principal: Principal,
        kb_id: str,
        query: str,
        *,
        mode: Mode = "hybrid",
        k: int = 10,
        document: str | None = None,
    ) -> tuple[list[Hit], Mode]:
        """The hits and the mode that really ran: ``bm25`` when a base has no vectors to fuse."""
        await self.get_base(principal, kb_id)
        return await self._search(kb_ids=[kb_id], query=query, mode=mode, k=k, document=document)

    async def search_bases(
        self,
        kb_ids: Sequence[str],
        query: str,
        *,
        mode: Mode = "hybrid",
        k: int = 10,
        document: str | None = None,
    ) -> list[Hit]:
        """Search knowledge bases the caller has already been allowed to read."""
        return (await self._search(kb_ids=kb_ids, query=query, mode=mode, k=k, document=document))[0]

    async def _search(
        self, *, kb_ids: Sequence[str], query: str, mode: Mode, k: int, document: str | None
    ) -> tuple[list[Hit], Mode]:
        if mode != "bm25" and not self.dense_available:
            if mode == "dense":
                raise ApiError(422, "dense_unavailable", "dense search is off (PARLEY_EMBEDDINGS=none)")
            mode = "bm25"
        indexes = [await self._fresh(kb_id) for kb_id in kb_ids]
        store = self._pgvector
        dense_wanted = (
            any(len(i) for i in indexes) if store is not None else any(i.has_vectors for i in indexes)
        )
        queries = await self._query_vectors() if mode != "bm25" and dense_wanted else None
        if queries is None:
            mode = "bm25"
        if store is not None and queries is not None and self._embedder is not None:
            pending = asyncio.get_running_loop().run_in_executor(None, queries.get, query)
            tokens = tokenize([query])[0]  # while the model embeds the question
            hits = await self._search_pgvector(
                store, self._embedder, indexes, tokens, await pending, mode, k, document
            )
            return hits, mode

        questions = None if queries is None else queries.embedder.embed

        def run() -> list[Hit]:
            """One trip to a worker thread: on a busy machine each hand-off can wait a time slice."""
            vector = None if queries is None else queries.get(query)
            tokens = tokenize([query])[0]
            hits = [
                h
                for i in indexes
                for h in i.search(tokens, vector, mode=mode, k=k, document=document, questions=questions)
            ]
            return merge(hits, k)

        return await asyncio.to_thread(run), mode

    async def _search_pgvector(
        self,
        store: PgVector,
        embedder: Embedder,
        indexes: Sequence[KbIndex],
        tokens: Sequence[str],
        vector: Vectors,
        mode: Mode,
        k: int,
        document: str | None,
    ) -> list[Hit]:
        """BM25 here; the nearest chunks, and the similarity of BM25's candidates, from pgvector."""
        hits: list[Hit] = []
        for index in indexes:
            if not len(index):
                continue
            lexical = index.bm25_scores(tokens) if mode != "dense" else None
            candidates = index.lexical_candidates(lexical, mode, k, document) if lexical is not None else []
            similarities = await pgvector.similarities(
                self.db,
                store,
                kb_id=index.kb_id,
                model=embedder.name,
                dim=embedder.dim,
                query=vector,
                depth=depth_for(mode, k),
                document=document,
                candidates=candidates,
                expected=index.count(document),
            )
            hits += await asyncio.to_thread(
                partial(
                    index.search,
                    tokens,
                    vector,
                    mode=mode,
                    k=k,
                    document=document,
                    lexical=lexical,
                    similarities=similarities,
                    questions=embedder.embed,
                )
            )
        return merge(hits, k)

    def words_of(self, kb_ids: Sequence[str], text: str) -> tuple[list[str], list[str], list[str]]:
        """``text``'s content words (stemmed, stop words out: ``tools.choice.content_stems``), those that
        no chunk of these bases has, and those at least half of their chunks have (words that
        tell no chunk from another: BM25's Robertson-Sparck Jones weight is 0 or less). Read
        from the indexes as the question's search left them (``search_bases`` brought them up to
        date): no second trip to the database."""
        indexes = [index for kb_id in kb_ids if (index := self._indexes.get(kb_id)) is not None]
        terms = list(dict.fromkeys(content_stems(text)))
        chunks = sum(len(i) for i in indexes)
        counts = {t: sum(i.frequency(t) for i in indexes) for t in terms}
        unknown = [t for t in terms if not counts[t]]
        return terms, unknown, [t for t in terms if chunks and 2 * counts[t] >= chunks]

    async def first_chunks(self, kb_ids: Sequence[str], k: int) -> list[Hit]:
        """The first ``k`` chunks in document order: "all context" for small knowledge bases."""
        hits: list[Hit] = []
        for kb_id in kb_ids:
            index = await self._fresh(kb_id)
            for e in sorted(index.entries, key=lambda e: (e.document_title, e.position))[:k]:
                hits.append(
                    Hit(
                        kb_id,
                        e.id,
                        e.document_id,
                        e.document_title,
                        e.title,
                        shown(e.text),
                        e.position,
                        1.0,
                        None,
                        None,
                    )
                )
        return hits[:k]

    def relevance_floor(self) -> float | None:
        """The cosine similarity a passage needs to count as relevant (None: BM25 only)."""
        return None if self._embedder is None else self._embedder.relevance_floor

    def familiar_similarity(self) -> float | None:
        """``Embedder.familiar_similarity`` (None: BM25 only, or a cosine that is no measure of meaning)."""
        return None if self._embedder is None else self._embedder.familiar_similarity

    # -- index upkeep ---------------------------------------------------------------

    def _lock(self, kb_id: str) -> asyncio.Lock:
        return self._locks.setdefault(kb_id, asyncio.Lock())

    async def _fresh(self, kb_id: str) -> KbIndex:
        async with self.db.session() as session:
            revision = (await (await session.connection()).execute(_REVISION, {"kb_id": kb_id})).scalar()
        if revision is None:
            self._indexes.pop(kb_id, None)
            return KbIndex(kb_id, 0)
        index = self._indexes.get(kb_id)
        if index is None or index.revision != revision:
            async with self._lock(kb_id):
                index = self._indexes.get(kb_id)
                if index is None:
                    await self._reload(kb_id, revision)
                elif index.revision != revision:
                    await self._catch_up(kb_id)
        return self._indexes[kb_id]

    async def _catch_up(self, kb_id: str) -> None:
        """Bring the index up to the database's revision by reading what changed since its own:
        the chunk rows stamped with a later revision (added, moved, retitled) and the removals.
        Time in proportion to the change; a full reload when there is no index yet."""
        index = self._indexes.get(kb_id)
        if index is None:
            async with self.db.session() as session:
                revision = await session.scalar(_REVISION, {"kb_id": kb_id})
            if revision is not None:
                await self._reload(kb_id, revision)
            return
        store = await self._vector_store()
        embedded = literal_column(
            "kb_chunks.embedding IS NOT NULL" if store else "false", type_=Boolean
        ).label("embedded")
        async with self.db.session() as session:
            revision = await session.scalar(_REVISION, {"kb_id": kb_id})
            if revision is None:
                self._indexes.pop(kb_id, None)
                return
            if revision == index.revision:
                return
            if revision < index.revision:  # the base was deleted and made again elsewhere
                await self._reload(kb_id, revision)
                return
            window = (Chunk.revision > index.revision) & (Chunk.revision <= revision)
            staging = await session.scalar(_STAGING, {"kb_id": kb_id})
            if staging is not None:  # rows written ahead of a change that has not published
                window &= Chunk.revision != staging
            rows = (
                await session.execute(
                    select(Chunk, Document.title, embedded)
                    .join(Document, Document.id == Chunk.document_id)
                    .where(Chunk.kb_id == kb_id, window)
                    .order_by(Chunk.document_id, Chunk.position)
                )
            ).all()
            removed = set(
                await session.scalars(
                    select(Removal.chunk_id).where(
                        Removal.kb_id == kb_id,
                        Removal.revision > index.revision,
                        Removal.revision <= revision,
                    )
                )
            )
        await self._index_rows(kb_id, revision, rows, base=index, removed=removed)

    async def preload(self, kb_id: str) -> None:
        """Load a base's index now, ahead of its first search."""
        await self._fresh(kb_id)

    @property
    def loaded(self) -> frozenset[str]:
        """The knowledge bases whose index this process holds (each loads on its first use)."""
        return frozenset(self._indexes)

    async def _reload(self, kb_id: str, revision: int) -> None:
        started = time.perf_counter()
        store = await self._vector_store()
        embedded = literal_column(
            "kb_chunks.embedding IS NOT NULL" if store else "false", type_=Boolean
        ).label("embedded")
        async with self.db.session() as session:
            # Published rows only: none staged (``PENDING``, or at a reserved revision).
            published = (Chunk.revision != PENDING) & (Chunk.revision <= revision)
            staging = await session.scalar(_STAGING, {"kb_id": kb_id})
            if staging is not None:
                published &= Chunk.revision != staging
            rows = (
                await session.execute(
                    select(Chunk, Document.title, embedded)
                    .join(Document, Document.id == Chunk.document_id)
                    .where(Chunk.kb_id == kb_id, published)
                    .order_by(Chunk.document_id, Chunk.position)
                )
            ).all()
        await self._index_rows(kb_id, revision, rows)
        log.info(
            "knowledge_index_loaded",
            kb_id=kb_id,
            revision=revision,
            chunks=len(rows),
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _index_rows(
        self,
        kb_id: str,
        revision: int,
        rows: Sequence[Any],
        *,
        base: KbIndex | None = None,
        removed: set[str] | None = None,
    ) -> None:
        """Index ``(chunk, document title, in pgvector)`` rows: a new index, or ``base`` changed."""
        embedder = await self.embedder() if rows and self._spec != "none" else None
        store = self._pgvector
        if embedder is not None:
            store = await self._pgvector_for(embedder)
            if store is None:
                stale = [c for c, _, _ in rows if c.vector is None or c.vector_model != embedder.name]
            else:
                stale = [c for c, _, in_db in rows if not in_db or c.vector_model != embedder.name]
            if stale:
                await self._reembed(embedder, store, kb_id, stale)
        dim = None if self._embedder is None or store is not None else self._embedder.dim
        tokens = await self._tokenize(await self.workers.thread(_texts, [c for c, _, _ in rows]))
        entries = await self.workers.thread(_entries, [(c, title) for c, title, _ in rows], tokens, dim)
        if base is None:
            self._indexes[kb_id] = await self.workers.thread(KbIndex.build, kb_id, revision, entries, dim)
        else:
            self._indexes[kb_id] = await self.workers.thread(
                base.with_changes, revision, removed or set(), entries, dim=dim
            )

    async def _reembed(
        self, embedder: Embedder, store: PgVector | None, kb_id: str, stale: Sequence[Chunk]
    ) -> None:
        """Vectors for chunks without one of this model (bytes already there move into pgvector)."""
        known = {
            c.id: v
            for c in stale
            if store is not None
            and c.vector is not None
            and c.vector_model == embedder.name
            and (v := from_bytes(c.vector, embedder.dim)) is not None
        }
        missing = [c for c in stale if c.id not in known]
        if missing:
            log.info("knowledge_reembedding", kb_id=kb_id, chunks=len(missing), model=embedder.name)
            vectors = await self._embed(embedder, await self.workers.thread(_texts, missing), None)
            known |= {c.id: v for c, v in zip(missing, vectors, strict=True)}
        async with self.db.transaction() as session:
            if store is not None:
                await pgvector.store(session, embedder.name, list(known.items()))
                return
            for chunk in stale:
                chunk.vector, chunk.vector_model = to_bytes(known[chunk.id]), embedder.name
                await session.execute(
                    update(Chunk)
                    .where(Chunk.id == chunk.id)
                    .values(vector=chunk.vector, vector_model=embedder.name)
                )


async def _base(session: AsyncSession, principal: Principal, kb_id: str) -> KnowledgeBase:
    kb = await session.scalar(
        visible(select(KnowledgeBase).where(KnowledgeBase.id == kb_id), principal, KnowledgeBase.user_id)
    )
    if kb is None:
        raise not_found("knowledge base", kb_id)
    return kb


async def _locked(session: AsyncSession, kb_id: str) -> KnowledgeBase:
    kb = await session.scalar(select(KnowledgeBase).where(KnowledgeBase.id == kb_id).with_for_update())
    if kb is None:
        raise not_found("knowledge base", kb_id)
    return kb


async def _bump(session: AsyncSession, kb_id: str, *, publishing: int | None = None) -> int:
    """The base's next revision, for a write in ``session``'s transaction.

    ``publishing``: the stamp of the rows a staged change wrote ahead (``Knowledge._stage``).
    When it is the reservation and nothing was published since it was made, the base's revision
    simply becomes the stamp, which publishes the rows; otherwise they are re-stamped
    (``plans.write``) with a new revision. Other writes step over a reserved revision."""
    kb = await _locked(session, kb_id)
    kb.updated_at = now()
    if publishing is not None and publishing != PENDING and kb.staging == publishing:
        kb.staging = None
        if kb.revision == publishing - 1:
            kb.revision = publishing
            return publishing
    kb.revision += 1
    if kb.revision == kb.staging:
        kb.revision += 1
    return kb.revision


def _texts(chunks: Sequence[Chunk | NewChunk]) -> list[str]:
    """What the index reads of each chunk (built in a worker thread: 84k chunks take half a second)."""
    return [_indexed(c) for c in chunks]


def _indexed(chunk: Chunk | NewChunk) -> str:
    return f"{chunk.title}\n{chunk.text}" if chunk.title and chunk.title not in chunk.text else chunk.text


def _entries(
    rows: Sequence[tuple[Chunk | NewChunk, str]], tokens: Sequence[tuple[str, ...]], dim: int | None
) -> list[ChunkEntry]:
    return [
        ChunkEntry(
            id=c.id,
            document_id=c.document_id,
            title=c.title,
            text=c.text,
            position=c.position,
            document_title=title,
            tokens=t,
            vector=None if dim is None or c.vector is None else from_bytes(c.vector, dim),
            sha256=c.sha256,
        )
        for (c, title), t in zip(rows, tokens, strict=True)
    ]
