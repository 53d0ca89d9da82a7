"""Hybrid search over one knowledge base: BM25 (bm25s) and dense vectors, fused by RRF.

A ``KbIndex`` is an immutable snapshot of a knowledge base's chunks: their BM25 index,
their vectors as one matrix (unless pgvector holds them: then the database ranks by cosine
and ``search`` takes its similarities), and the database revision it reflects. Writers build a new
snapshot (``with_changes``) and swap it in, so searches in other threads never see half
an update. Reciprocal rank fusion (Cormack et al., 2009) adds ``1 / (60 + rank)`` from
each ranking: it needs no score calibration between BM25 and cosine similarity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, Literal

import bm25s
import numpy as np
import numpy.typing as npt

from parley.knowledge.embeddings import Vectors

Mode = Literal["hybrid", "bm25", "dense"]
MODES: tuple[Mode, ...] = ("hybrid", "bm25", "dense")
RRF_K = 60
#: How deep each ranking goes before fusion.
CANDIDATES = 100


@dataclass(frozen=True, slots=True)
class ChunkEntry:
    id: str
    document_id: str
    title: str
    text: str
    position: int
    document_title: str
    tokens: tuple[str, ...]
    vector: Vectors | None
    #: The chunk text's hash: equal scores are ordered by it, so every process and store
    #: (whatever order it loaded the chunks in) ranks ties alike.
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class Hit:
    kb_id: str
    chunk_id: str
    document_id: str
    document_title: str
    title: str
    text: str
    position: int
    #: The fused score in hybrid mode; the BM25 score or the cosine similarity otherwise.
    score: float
    bm25: float | None
    similarity: float | None

    def json(self) -> dict[str, Any]:
        return {
            "knowledge_base": self.kb_id,
            "document": self.document_id,
            "document_title": self.document_title,
            "chunk": self.chunk_id,
            "position": self.position,
            "title": self.title or self.document_title,
            "text": self.text,
            "score": round(self.score, 6),
            "bm25": None if self.bm25 is None else round(self.bm25, 4),
            "similarity": None if self.similarity is None else round(self.similarity, 4),
        }


@cache
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: Sequence[str]) -> list[tuple[str, ...]]:
    """Lower-cased words, English stop words removed, Snowball-stemmed (as Lucene's English analyzer)."""
    if not texts:
        return []
    tokens = bm25s.tokenize(
        list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False
    )
    return [tuple(t) for t in tokens]


@dataclass(frozen=True)
class KbIndex:
    kb_id: str
    revision: int
    entries: tuple[ChunkEntry, ...] = ()
    dim: int | None = None
    _bm25: Any = field(default=None, repr=False)
    _vectors: Vectors | None = field(default=None, repr=False)
    _documents: npt.NDArray[np.str_] | None = field(default=None, repr=False)
    _rows: dict[str, int] = field(default_factory=dict, repr=False)
    _order: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)

    @classmethod
    def build(cls, kb_id: str, revision: int, entries: Sequence[ChunkEntry], dim: int | None) -> KbIndex:
        entries = tuple(entries)
        retriever = None
        if entries:
            retriever = bm25s.BM25()
            retriever.index([list(e.tokens) or [""] for e in entries], show_progress=False)
        vectors = None
        if dim is not None and entries and all(e.vector is not None for e in entries):
            vectors = np.vstack([e.vector for e in entries if e.vector is not None]).astype(np.float32)
        documents = np.array([e.document_id for e in entries]) if entries else None
        rows = {e.id: i for i, e in enumerate(entries)}
        order = np.empty(len(entries), dtype=np.int64)
        order[sorted(range(len(entries)), key=lambda i: (entries[i].sha256, entries[i].id))] = np.arange(
            len(entries)
        )
        return cls(kb_id, revision, entries, dim, retriever, vectors, documents, rows, order)

    def with_changes(
        self,
        revision: int,
        removed: set[str],
        added: Sequence[ChunkEntry],
        *,
        positions: dict[str, int] | None = None,
        titles: dict[str, str] | None = None,
        dim: int | None = None,
    ) -> KbIndex:
        """A new snapshot: ``removed`` chunk ids out, ``added`` in, kept chunks moved or retitled."""
        positions, titles = positions or {}, titles or {}
        kept = [
            replace(
                e,
                position=positions.get(e.id, e.position),
                document_title=titles.get(e.document_id, e.document_title),
            )
            for e in self.entries
            if e.id not in removed
        ]
        return KbIndex.build(self.kb_id, revision, [*kept, *added], dim if dim is not None else self.dim)

    @property
    def has_vectors(self) -> bool:
        return self._vectors is not None

    def __len__(self) -> int:
        return len(self.entries)

    def count(self, document: str | None = None) -> int:
        """Chunks in the knowledge base, or in one of its documents."""
        if document is None or self._documents is None:
            return len(self.entries)
        return int(np.count_nonzero(self._documents == document))

    def search(
        self,
        query_tokens: Sequence[str],
        query_vector: Vectors | None,
        *,
        mode: Mode,
        k: int,
        document: str | None = None,
        lexical: npt.NDArray[np.float32] | None = None,
        similarities: Mapping[str, float] | None = None,
    ) -> list[Hit]:
        """The best ``k`` chunks. ``lexical``: BM25 scores already computed (``bm25_scores``);
        ``similarities``: cosine similarities by chunk id from the database (pgvector), in
        place of the in-memory vectors: its nearest ``depth(mode, k)`` chunks and the lexical
        candidates (``lexical_candidates``), whose similarity every hit reports."""
        if not self.entries:
            return []
        allowed = None if document is None or self._documents is None else self._documents == document
        dense_given = similarities is not None or query_vector is not None
        if lexical is None and (mode != "dense" or not dense_given):
            lexical = self._bm25_scores(query_tokens)
        dense = None
        if mode != "bm25" and similarities is not None:
            dense = np.full(len(self.entries), np.nan, dtype=np.float32)
            for chunk_id, similarity in similarities.items():
                row = self._rows.get(chunk_id)
                if row is not None:
                    dense[row] = similarity
        elif mode != "bm25" and query_vector is not None and self._vectors is not None:
            dense = self._vectors @ query_vector
        depth = depth_for(mode, k)
        lexical_rank = (
            _top(lexical, depth, allowed, self._order, positive=True) if lexical is not None else []
        )
        dense_rank: list[int] = []
        if dense is not None:
            known = ~np.isnan(dense)
            dense_rank = _top(
                dense, depth, known if allowed is None else known & allowed, self._order, positive=False
            )
        if mode == "bm25" or dense is None:
            ranked = [(i, float(lexical[i])) for i in lexical_rank[:k]] if lexical is not None else []
        elif mode == "dense":
            ranked = [(i, float(dense[i])) for i in dense_rank[:k]]
        else:
            ranked = _rrf([lexical_rank, dense_rank], self._order)[:k]
        return [self._hit(i, score, lexical, dense) for i, score in ranked]

    def lexical_candidates(
        self, lexical: npt.NDArray[np.float32], mode: Mode, k: int, document: str | None
    ) -> list[str]:
        """The chunk ids BM25 puts in the running: their similarities are needed for the hits."""
        if not self.entries:
            return []
        allowed = None if document is None or self._documents is None else self._documents == document
        ranking = _top(lexical, depth_for(mode, k), allowed, self._order, positive=True)
        return [self.entries[i].id for i in ranking]

    def bm25_scores(self, query_tokens: Sequence[str]) -> npt.NDArray[np.float32] | None:
        return self._bm25_scores(query_tokens) if self.entries else None

    def _bm25_scores(self, query_tokens: Sequence[str]) -> npt.NDArray[np.float32]:
        vocab = self._bm25.vocab_dict
        known = [t for t in query_tokens if t in vocab]
        if not known:
            return np.zeros(len(self.entries), dtype=np.float32)
        scores: npt.NDArray[np.float32] = self._bm25.get_scores(known)
        return scores

    def _hit(
        self,
        i: int,
        score: float,
        lexical: npt.NDArray[np.float32] | None,
        dense: npt.NDArray[np.float32] | None,
    ) -> Hit:
        e = self.entries[i]
        return Hit(
            kb_id=self.kb_id,
            chunk_id=e.id,
            document_id=e.document_id,
            document_title=e.document_title,
            title=e.title,
            text=e.text,
            position=e.position,
            score=score,
            bm25=None if lexical is None else float(lexical[i]),
            similarity=None if dense is None or np.isnan(dense[i]) else float(dense[i]),
        )


def depth_for(mode: Mode, k: int) -> int:
    """How deep each ranking goes: ``CANDIDATES`` before a fusion, else just ``k``."""
    return max(k, CANDIDATES) if mode == "hybrid" else k


def _top(
    scores: npt.NDArray[np.float32],
    depth: int,
    allowed: npt.NDArray[np.bool_] | None,
    order: npt.NDArray[np.int64],
    *,
    positive: bool,
) -> list[int]:
    """Indices of the ``depth`` best scores, best first, ties by ``order`` (only > 0 when ``positive``)."""
    candidates = np.arange(len(scores))
    if allowed is not None:
        candidates = candidates[allowed]
    if positive:
        candidates = candidates[scores[candidates] > 0]
    if len(candidates) > depth:
        threshold = np.partition(scores[candidates], len(candidates) - depth)[len(candidates) - depth]
        candidates = candidates[scores[candidates] >= threshold]  # every tie at the cut stays in
    ranked = candidates[np.lexsort((order[candidates], -scores[candidates]))]
    return [int(i) for i in ranked[:depth]]


def _rrf(rankings: Sequence[Sequence[int]], order: npt.NDArray[np.int64]) -> list[tuple[int, float]]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, index in enumerate(ranking, start=1):
            fused[index] = fused.get(index, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], int(order[item[0]])))


def merge(hits: Sequence[Hit], k: int) -> list[Hit]:
    """The best ``k`` hits from several knowledge bases."""
    return sorted(hits, key=lambda h: -h.score)[:k]
