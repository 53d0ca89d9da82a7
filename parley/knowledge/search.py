"""Hybrid search over one knowledge base: BM25 (Lucene's, as bm25s) and dense vectors, fused.

A ``KbIndex`` is an immutable snapshot of a knowledge base's chunks: their BM25 index,
their vectors as one matrix (unless pgvector holds them: then the database ranks by cosine
and ``search`` takes its similarities), and the database revision it reflects. Writers build a new
snapshot (``with_changes``) and swap it in, so searches in other threads never see half
an update. Fusion (``fuse``) is a convex combination of the two scores, each min-max
normalized over the candidates: 0.8 of the cosine, 0.2 of BM25. An FAQ entry (``Q: … A: …``) is
matched by its own question as well as its whole text (``ENTRY_QUESTION_WEIGHT``): people
paraphrase the question, and a long answer dilutes the entry's vector. The weights were chosen
on half of StackFAQ's and SciFact's queries and checked on the other half, where hybrid beats
both single modes on both (reciprocal rank fusion lost to dense on FAQ paraphrases:
docs/BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from itertools import chain
from typing import Any, Literal

import bm25s
import numpy as np
import numpy.typing as npt
from scipy import sparse

from parley.knowledge.chunking import entry_questions, shown
from parley.knowledge.embeddings import Vectors

Mode = Literal["hybrid", "bm25", "dense"]
MODES: tuple[Mode, ...] = ("hybrid", "bm25", "dense")
#: The cosine's share in hybrid fusion (``fuse``), chosen on the calibration half of StackFAQ's
#: and SciFact's queries (docs/BENCHMARKS.md).
DENSE_WEIGHT = 0.8
#: An FAQ entry's similarity to a question: this share from its own question's cosine, the rest
#: from its whole text's (``KbIndex.search``); chosen with ``DENSE_WEIGHT`` (docs/BENCHMARKS.md).
ENTRY_QUESTION_WEIGHT = 0.7
#: Lucene's (and bm25s') BM25 parameters.
K1 = 1.5
B = 0.75
#: How deep each ranking goes before fusion.
CANDIDATES = 100
#: Chunks whose terms ``_Rows.append`` counts in one go (a few milliseconds of the GIL).
APPEND_SLICE = 256


#: Embeds texts as a knowledge base's chunks are embedded (``Embedder.embed``): unit vectors.
Embed = Callable[[Sequence[str]], Vectors]


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

    @property
    def questions(self) -> list[str]:
        """An FAQ entry's own question and the other ways to ask it (its chunk reads
        ``Q: … [Q: …] A: …``), else ``[]``."""
        return entry_questions(self.text)


@dataclass(frozen=True, slots=True)
class Hit:
    kb_id: str
    chunk_id: str
    document_id: str
    document_title: str
    title: str
    text: str
    position: int
    #: The fused score in hybrid mode; the BM25 score or the cosine similarity otherwise (for an
    #: FAQ entry, its own question's cosine mixed in: ``ENTRY_QUESTION_WEIGHT``).
    score: float
    bm25: float | None
    similarity: float | None
    #: An FAQ entry's questions' cosine to the query (the nearest of its own question and the
    #: other ways to ask it), when the search computed it.
    question_similarity: float | None = None
    #: The cosine of the entry's own question alone (its first ``Q:``, the one shown).
    own_question_similarity: float | None = None

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


class _Column:
    """A growable column of rows: snapshots read a prefix that later appends never change."""

    def __init__(self, dtype: Any, width: int | None = None) -> None:
        self._shape: tuple[int, ...] = () if width is None else (width,)
        self._data: npt.NDArray[Any] = np.zeros((16, *self._shape), dtype=dtype)
        self.size = 0

    def extend(self, rows: npt.ArrayLike) -> None:
        values = np.asarray(rows, dtype=self._data.dtype).reshape((-1, *self._shape))
        end = self.size + len(values)
        if end > len(self._data):
            grown = np.zeros((max(end, 2 * len(self._data)), *self._shape), dtype=self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown  # snapshots keep the old buffer, whose prefix is the same
        self._data[self.size : end] = values
        self.size = end

    def prefix(self, n: int) -> npt.NDArray[Any]:
        return self._data[:n]


class _Rows:
    """Every row a lineage of snapshots has appended (chunks, their BM25 lengths, vectors).

    Only appended to, under the knowledge base's write lock; each ``KbIndex`` sees its first
    ``n`` rows and its own live mask, so a search never sees half an update."""

    def __init__(self, dim: int | None) -> None:
        self.dim = dim
        self.entries: list[ChunkEntry] = []
        self.lengths = _Column(np.float32)
        self.ties = _Column(np.int64)
        self.vectors = _Column(np.float32, dim) if dim is not None else None
        self.vocab: dict[str, int] = {}
        #: row -> the unit vectors of its FAQ entry's questions (one row each), embedded when a
        #: search first needs them
        self.questions: dict[int, Vectors] = {}
        #: chunk id -> its latest row; document id -> its rows (dead ones included)
        self.rows: dict[str, int] = {}
        self.by_document: dict[str, list[int]] = {}

    def append(self, added: Sequence[ChunkEntry]) -> _Segment:
        """Append ``added``; returns their term frequencies (rows by vocabulary) as a segment.

        Counted ``APPEND_SLICE`` rows at a time in C calls (a token at a time in Python, a
        20 MB document's 2.4 million tokens held the GIL for 1.6 s): each call is short, so an
        event loop waiting for the GIL in another thread gets it within a millisecond or so."""
        start = len(self.entries)
        vocab = self.vocab
        parts = []
        for lo in range(0, len(added), APPEND_SLICE):
            tokens = [e.tokens for e in added[lo : lo + APPEND_SLICE]]
            fresh = sorted(set(chain.from_iterable(tokens)).difference(vocab))  # the same in any process
            vocab.update(zip(fresh, range(len(vocab), len(vocab) + len(fresh)), strict=True))
            lengths = [len(t) for t in tokens]
            terms = np.fromiter(map(vocab.__getitem__, chain.from_iterable(tokens)), np.int64, sum(lengths))
            rows = np.repeat(np.arange(len(tokens)), lengths)
            # From (row, term) pairs; the conversion sums each pair's repeats into its count.
            counts = sparse.coo_matrix(
                (np.ones(len(terms), dtype=np.float32), (rows, terms)), shape=(len(tokens), len(vocab))
            )
            parts.append(counts.tocsr())
        for offset, entry in enumerate(added):
            self.entries.append(entry)
            self.rows[entry.id] = start + offset
            self.by_document.setdefault(entry.document_id, []).append(start + offset)
        self.lengths.extend([len(e.tokens) for e in added])
        self.ties.extend([_tie(e) for e in added])
        if self.vectors is not None:
            missing = np.zeros(self.dim or 0, dtype=np.float32)
            self.vectors.extend([missing if e.vector is None else e.vector for e in added])
        width = len(vocab)
        tf = (
            sparse.vstack([_widen(part, width) for part in parts], format="csr")
            if parts
            else sparse.csr_matrix((0, width), dtype=np.float32)
        )
        return _Segment(start, tf, tf.tocsc())


def _tie(entry: ChunkEntry) -> int:
    """Equal scores are ordered by the chunk text's hash, so every process ranks ties alike."""
    digest = entry.sha256 or hashlib.sha256(entry.id.encode()).hexdigest()
    return int(digest[:15], 16)


@dataclass(frozen=True, slots=True)
class _Segment:
    """BM25 term frequencies of rows ``start .. start + rows`` (a CSC matrix: one column per term)."""

    start: int
    #: by row (a removed row's terms) and by term (a query's postings)
    rows_tf: sparse.csr_matrix
    terms_tf: sparse.csc_matrix

    @property
    def rows(self) -> int:
        return int(self.rows_tf.shape[0])

    def merged(self, later: _Segment) -> _Segment:
        width = max(self.rows_tf.shape[1], later.rows_tf.shape[1])
        tf = sparse.vstack([_widen(self.rows_tf, width), _widen(later.rows_tf, width)], format="csr")
        return _Segment(self.start, tf, tf.tocsc())

    def terms_of(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The term ids of ``rows`` (absolute row numbers inside this segment), once per row."""
        local = rows - self.start
        spans = [self.rows_tf.indices[self.rows_tf.indptr[r] : self.rows_tf.indptr[r + 1]] for r in local]
        return np.concatenate(spans).astype(np.int64) if spans else np.zeros(0, dtype=np.int64)

    def add_scores(
        self,
        scores: npt.NDArray[np.float64],
        terms: Sequence[tuple[int, float]],
        lengths: npt.NDArray[np.float32],
        norm: float,
    ) -> None:
        """Add Lucene's BM25 of each ``(term, idf)`` to ``scores`` (``norm``: ``k1 / avgdl``)."""
        csc = self.terms_tf
        for term, idf in terms:
            if term >= csc.shape[1]:
                continue
            lo, hi = csc.indptr[term], csc.indptr[term + 1]
            if lo == hi:
                continue
            rows = csc.indices[lo:hi] + self.start
            tf = csc.data[lo:hi].astype(np.float64)
            scores[rows] += idf * tf / (tf + K1 * (1 - B) + norm * B * lengths[rows])


def _widen(tf: sparse.csr_matrix, width: int) -> sparse.csr_matrix:
    if tf.shape[1] == width:
        return tf
    return sparse.csr_matrix((tf.data, tf.indices, tf.indptr), shape=(tf.shape[0], width))


def _with_segment(segments: tuple[_Segment, ...], segment: _Segment) -> tuple[_Segment, ...]:
    """Log-structured: a segment merges into the one before while that one is < twice its size,
    so there are O(log n) segments and each row is copied O(log n) times in all."""
    out = [*segments, segment]
    while len(out) > 1 and out[-2].rows < 2 * out[-1].rows:
        later = out.pop()
        out[-1] = out[-1].merged(later)
    return tuple(out)


@dataclass(frozen=True)
class KbIndex:
    """An immutable snapshot of a knowledge base's chunks at a database revision.

    Incremental: ``with_changes`` costs time in proportion to the change, not to the base.
    Added chunks are appended (their BM25 term frequencies as a new segment, merged
    log-structured; their vectors to a growable matrix); removed ones are masked out of the
    live rows; a chunk added again under its id (moved, retitled) replaces its old row.
    BM25's statistics (document frequencies, average length) are kept over the live rows,
    so scores are those of a fresh index over them: Lucene's BM25, as ``bm25s`` computes it.
    When dead rows outnumber live ones the snapshot is compacted (built afresh).
    """

    kb_id: str
    revision: int
    dim: int | None = None
    _store: _Rows | None = field(default=None, repr=False)
    _n: int = 0
    _live: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    _df: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    _total_length: float = 0.0
    _live_count: int = 0
    _unembedded: int = 0
    _segments: tuple[_Segment, ...] = ()

    @classmethod
    def build(cls, kb_id: str, revision: int, entries: Sequence[ChunkEntry], dim: int | None) -> KbIndex:
        return cls(kb_id, -1, dim, _Rows(dim)).with_changes(revision, set(), entries)

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
        """A new snapshot: ``removed`` chunk ids out, ``added`` in (replacing any live row with the
        same id), kept chunks moved (``positions``) or retitled (``titles`` by document id)."""
        store = self._store
        if (dim is not None and dim != self.dim) or store is None or store.dim != self.dim:
            kept = self._changed(removed, positions, titles)
            return KbIndex.build(self.kb_id, revision, [*kept, *added], self.dim if dim is None else dim)
        if len(store.entries) != self._n:  # not the newest snapshot of its rows: start a new lineage
            fresh = KbIndex.build(self.kb_id, self.revision, self._changed(set(), None, None), self.dim)
            return fresh.with_changes(revision, removed, added, positions=positions, titles=titles)
        reentered = self._reentered(positions or {}, titles or {}, removed)
        added = [*reentered, *added]
        dead = {store.rows[i] for i in removed if i in store.rows}
        dead |= {store.rows[e.id] for e in added if e.id in store.rows}
        dead = {r for r in dead if r < self._n and self._live[r]}
        lengths = store.lengths.prefix(self._n)
        df = self._df.copy()
        live = np.concatenate([self._live, np.ones(len(added), dtype=bool)])
        total, count, unembedded = self._total_length, self._live_count, self._unembedded
        if dead:
            rows = np.fromiter(dead, dtype=np.int64)
            live[rows] = False
            total -= float(lengths[rows].sum())
            count -= len(rows)
            unembedded -= sum(1 for r in dead if store.entries[r].vector is None)
            for segment in self._segments:
                inside = rows[(rows >= segment.start) & (rows < segment.start + segment.rows)]
                if len(inside):
                    np.subtract.at(df, segment.terms_of(inside), 1)
        segments = self._segments
        if added:
            segment = store.append(added)
            df = np.concatenate([df, np.zeros(len(store.vocab) - len(df), dtype=np.int64)])
            np.add.at(df, segment.rows_tf.indices, 1)
            total += float(sum(len(e.tokens) for e in added))
            count += len(added)
            unembedded += sum(1 for e in added if e.vector is None)
            segments = _with_segment(segments, segment)
        snapshot = KbIndex(
            self.kb_id,
            revision,
            self.dim,
            store,
            len(store.entries),
            live,
            df,
            total,
            count,
            unembedded,
            segments,
        )
        if snapshot._n > 1000 and count < snapshot._n // 2:
            return KbIndex.build(self.kb_id, revision, snapshot.entries, self.dim)
        return snapshot

    def _reentered(
        self, positions: dict[str, int], titles: dict[str, str], removed: set[str]
    ) -> list[ChunkEntry]:
        """Kept chunks whose position or document title changed, as entries to add again."""
        if self._store is None or not (positions or titles):
            return []
        rows = {self._store.rows[i] for i in positions if i in self._store.rows}
        for document in titles:
            rows.update(self._store.by_document.get(document, ()))
        out = []
        for row in sorted(r for r in rows if r < self._n and self._live[r]):
            e = self._store.entries[row]
            if e.id in removed:
                continue
            out.append(
                replace(
                    e,
                    position=positions.get(e.id, e.position),
                    document_title=titles.get(e.document_id, e.document_title),
                )
            )
        return out

    def _changed(
        self, removed: set[str], positions: dict[str, int] | None, titles: dict[str, str] | None
    ) -> list[ChunkEntry]:
        positions, titles = positions or {}, titles or {}
        return [
            replace(
                e,
                position=positions.get(e.id, e.position),
                document_title=titles.get(e.document_id, e.document_title),
            )
            for e in self.entries
            if e.id not in removed
        ]

    @property
    def entries(self) -> list[ChunkEntry]:
        """The live chunks, in the order they were added."""
        if self._store is None:
            return []
        return [self._store.entries[int(i)] for i in np.flatnonzero(self._live)]

    @property
    def has_vectors(self) -> bool:
        return self.dim is not None and self._live_count > 0 and self._unembedded == 0

    @property
    def segments(self) -> int:
        """How many BM25 segments the snapshot holds (O(log n))."""
        return len(self._segments)

    def __len__(self) -> int:
        return self._live_count

    def _allowed(self, document: str | None) -> npt.NDArray[np.bool_]:
        if document is None or self._store is None:
            return self._live
        mask = np.zeros(self._n, dtype=bool)
        rows = [r for r in self._store.by_document.get(document, ()) if r < self._n]
        mask[rows] = True
        return mask & self._live

    def count(self, document: str | None = None) -> int:
        """Chunks in the knowledge base, or in one of its documents."""
        if document is None:
            return self._live_count
        return int(np.count_nonzero(self._allowed(document)))

    def row_of(self, chunk_id: str) -> int | None:
        """The live row of a chunk in this snapshot."""
        row = None if self._store is None else self._store.rows.get(chunk_id)
        return row if row is not None and row < self._n and self._live[row] else None

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
        questions: Embed | None = None,
    ) -> list[Hit]:
        """The best ``k`` chunks. ``lexical``: BM25 scores already computed (``bm25_scores``);
        ``similarities``: cosine similarities by chunk id from the database (pgvector), in
        place of the in-memory vectors: its nearest ``depth(mode, k)`` chunks and the lexical
        candidates (``lexical_candidates``), whose similarity every hit reports.
        ``questions``: embeds the questions of the FAQ entries in the running, so that an entry
        is matched by its own question too (``entry_similarities``); without it, by its text."""
        if not self._live_count or self._store is None:
            return []
        allowed = self._allowed(document)
        order = self._store.ties.prefix(self._n)
        dense_given = similarities is not None or query_vector is not None
        if lexical is None and (mode != "dense" or not dense_given):
            lexical = self._bm25_scores(query_tokens)
        dense = None
        if mode != "bm25" and similarities is not None:
            dense = np.full(self._n, np.nan, dtype=np.float32)
            for chunk_id, similarity in similarities.items():
                row = self.row_of(chunk_id)
                if row is not None:
                    dense[row] = similarity
        elif mode != "bm25" and query_vector is not None and self.has_vectors:
            assert self._store.vectors is not None
            dense = self._store.vectors.prefix(self._n) @ query_vector
        depth = depth_for(mode, k)
        # What ranks: for an FAQ entry, its own question's cosine too. What a hit reports as its
        # similarity (and the answer's relevance thresholds read) stays its text's cosine.
        cosine = dense
        if dense is not None and query_vector is not None and questions is not None:
            dense = self.entry_similarities(dense, query_vector, allowed, questions)
        lexical_rank = _top(lexical, depth, allowed, order, positive=True) if lexical is not None else []
        dense_rank: list[int] = []
        if dense is not None:
            dense_rank = _top(dense, depth, ~np.isnan(dense) & allowed, order, positive=False)
        if mode == "bm25" or dense is None:
            ranked = [(i, float(lexical[i])) for i in lexical_rank[:k]] if lexical is not None else []
        elif mode == "dense":
            ranked = [(i, float(dense[i])) for i in dense_rank[:k]]
        else:
            ranked = fuse(lexical, dense, lexical_rank, dense_rank, order)[:k]
        return [self._hit(i, score, lexical, cosine, query_vector) for i, score in ranked]

    def entry_similarities(
        self,
        dense: npt.NDArray[np.float32],
        query_vector: Vectors,
        allowed: npt.NDArray[np.bool_],
        questions: Embed,
    ) -> npt.NDArray[np.float32]:
        """``dense`` with each FAQ entry among the ``CANDIDATES`` nearest rows scored by its own
        question as well: ``ENTRY_QUESTION_WEIGHT`` of that cosine, the rest of its text's.

        A question's vector is embedded the first time a search needs it and kept with the rows
        (a snapshot's rows never change text), so the first search of a base pays for its entries.
        """
        assert self._store is not None
        store = self._store
        order = store.ties.prefix(self._n)
        rows = _top(dense, CANDIDATES, ~np.isnan(dense) & allowed, order, positive=False)
        asked = {r: q for r in rows if (q := store.entries[r].questions)}
        if not asked:
            return dense
        missing = [r for r in asked if r not in store.questions]
        if missing:
            vectors = np.asarray(questions([q for r in missing for q in asked[r]]), dtype=np.float32)
            start = 0
            for row in missing:
                store.questions[row] = vectors[start : start + len(asked[row])]
                start += len(asked[row])
        entries = np.fromiter(asked, dtype=np.int64, count=len(asked))
        # The nearest of an entry's questions: the one the user's words are closest to (one
        # product for all of them, then the maximum of each entry's rows).
        matrices = [store.questions[int(r)] for r in entries]
        starts = np.cumsum([0] + [len(m) for m in matrices[:-1]])
        cosines = np.maximum.reduceat(np.vstack(matrices) @ query_vector, starts)
        out = dense.copy()
        out[entries] = ENTRY_QUESTION_WEIGHT * cosines + (1 - ENTRY_QUESTION_WEIGHT) * dense[entries]
        return out

    def lexical_candidates(
        self, lexical: npt.NDArray[np.float32], mode: Mode, k: int, document: str | None
    ) -> list[str]:
        """The chunk ids BM25 puts in the running: their similarities are needed for the hits."""
        if not self._live_count or self._store is None:
            return []
        order = self._store.ties.prefix(self._n)
        ranking = _top(lexical, depth_for(mode, k), self._allowed(document), order, positive=True)
        return [self._store.entries[i].id for i in ranking]

    def frequency(self, token: str) -> int:
        """How many live chunks have ``token`` (a ``tokenize`` term)."""
        term = self._store.vocab.get(token) if self._store is not None else None
        return int(self._df[term]) if term is not None and term < len(self._df) else 0

    def bm25_scores(self, query_tokens: Sequence[str]) -> npt.NDArray[np.float32] | None:
        return self._bm25_scores(query_tokens) if self._live_count else None

    def _bm25_scores(self, query_tokens: Sequence[str]) -> npt.NDArray[np.float32]:
        """Lucene's BM25 over the live rows (dead rows score 0)."""
        scores = np.zeros(self._n, dtype=np.float64)
        if self._store is None or not self._live_count:
            return scores.astype(np.float32)
        vocab = self._store.vocab
        n = self._live_count
        terms = []
        for token in query_tokens:
            term = vocab.get(token)
            if term is not None and term < len(self._df) and self._df[term] > 0:
                df = float(self._df[term])
                terms.append((term, math.log(1 + (n - df + 0.5) / (df + 0.5))))
        if terms:
            average = self._total_length / n or 1.0
            lengths = self._store.lengths.prefix(self._n)
            for segment in self._segments:
                segment.add_scores(scores, terms, lengths, K1 / average)
            scores[~self._live] = 0.0
        return scores.astype(np.float32)

    def _hit(
        self,
        i: int,
        score: float,
        lexical: npt.NDArray[np.float32] | None,
        dense: npt.NDArray[np.float32] | None,
        query_vector: Vectors | None = None,
    ) -> Hit:
        assert self._store is not None
        e = self._store.entries[i]
        asked = own = None
        if query_vector is not None and (vectors := self._store.questions.get(i)) is not None:
            cosines = vectors @ query_vector
            asked, own = float(np.max(cosines)), float(cosines[0])
        return Hit(
            kb_id=self.kb_id,
            chunk_id=e.id,
            document_id=e.document_id,
            document_title=e.document_title,
            title=e.title,
            text=shown(e.text),
            position=e.position,
            score=score,
            bm25=None if lexical is None else float(lexical[i]),
            similarity=None if dense is None or np.isnan(dense[i]) else float(dense[i]),
            question_similarity=asked,
            own_question_similarity=own,
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


def fuse(
    lexical: npt.NDArray[np.float32] | None,
    dense: npt.NDArray[np.float32],
    lexical_rank: Sequence[int],
    dense_rank: Sequence[int],
    order: npt.NDArray[np.int64],
    weight: float | None = None,
) -> list[tuple[int, float]]:
    """A convex combination of the two rankings' scores, each min-max normalized over the
    candidates either ranking put forward: ``weight`` (``DENSE_WEIGHT``) of the cosine, the rest
    of BM25. Unlike RRF it keeps how far apart the scores are: a paraphrase the model matches
    clearly is not pulled down by a middling BM25 rank (see docs/BENCHMARKS.md for the measure)."""
    weight = DENSE_WEIGHT if weight is None else weight
    candidates = np.asarray(sorted({*lexical_rank, *dense_rank}), dtype=np.int64)
    if not len(candidates):
        return []
    similarity = np.nan_to_num(dense[candidates].astype(np.float64), nan=-1.0)
    words = np.zeros(len(candidates)) if lexical is None else lexical[candidates].astype(np.float64)
    fused = weight * _minmax(similarity) + (1 - weight) * _minmax(words)
    ranked = np.lexsort((order[candidates], -fused))
    return [(int(candidates[i]), float(fused[i])) for i in ranked]


def _minmax(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def merge(hits: Sequence[Hit], k: int) -> list[Hit]:
    """The best ``k`` hits from several knowledge bases."""
    return sorted(hits, key=lambda h: -h.score)[:k]
