"""Hybrid search over one knowledge base: BM25 (bm25s) and dense vectors, fused by RRF.

A ``KbIndex`` is an immutable snapshot of a knowledge base's chunks: their BM25 index,
their vectors as one matrix, and the database revision it reflects. Writers build a new
snapshot (``with_changes``) and swap it in, so searches in other threads never see half
an update. Reciprocal rank fusion (Cormack et al., 2009) adds ``1 / (60 + rank)`` from
each ranking: it needs no score calibration between BM25 and cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        return cls(kb_id, revision, entries, dim, retriever, vectors, documents)

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

    def search(
        self,
        query_tokens: Sequence[str],
        query_vector: Vectors | None,
        *,
        mode: Mode,
        k: int,
        document: str | None = None,
    ) -> list[Hit]:
        if not self.entries:
            return []
        allowed = None if document is None or self._documents is None else self._documents == document
        lexical = self._bm25_scores(query_tokens) if mode != "dense" or query_vector is None else None
        dense = None
        if mode != "bm25" and query_vector is not None and self._vectors is not None:
            dense = self._vectors @ query_vector
        depth = max(k, CANDIDATES) if mode == "hybrid" else k
        lexical_rank = _top(lexical, depth, allowed, positive=True) if lexical is not None else []
        dense_rank = _top(dense, depth, allowed, positive=False) if dense is not None else []
        if mode == "bm25" or dense is None:
            ranked = [(i, float(lexical[i])) for i in lexical_rank[:k]] if lexical is not None else []
        elif mode == "dense":
            ranked = [(i, float(dense[i])) for i in dense_rank[:k]]
        else:
            ranked = _rrf([lexical_rank, dense_rank])[:k]
        return [self._hit(i, score, lexical, dense) for i, score in ranked]

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
            similarity=None if dense is None else float(dense[i]),
        )


def _top(
    scores: npt.NDArray[np.float32],
    depth: int,
    allowed: npt.NDArray[np.bool_] | None,
    *,
    positive: bool,
) -> list[int]:
    """Indices of the ``depth`` best scores, best first (only matches > 0 when ``positive``)."""
    candidates = np.arange(len(scores))
    if allowed is not None:
        candidates = candidates[allowed]
    if positive:
        candidates = candidates[scores[candidates] > 0]
    if len(candidates) > depth:
        part = np.argpartition(-scores[candidates], depth - 1)[:depth]
        candidates = candidates[part]
    order = np.argsort(-scores[candidates], kind="stable")
    return [int(i) for i in candidates[order]]


def _rrf(rankings: Sequence[Sequence[int]]) -> list[tuple[int, float]]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, index in enumerate(ranking, start=1):
            fused[index] = fused.get(index, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def merge(hits: Sequence[Hit], k: int) -> list[Hit]:
    """The best ``k`` hits from several knowledge bases."""
    return sorted(hits, key=lambda h: -h.score)[:k]
