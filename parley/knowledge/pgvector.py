"""Chunk vectors in PostgreSQL with pgvector: stored in ``kb_chunks.embedding``, ranked there.

Migration 0008 adds ``embedding vector`` (no fixed dimension: it depends on the embedding
model, and a database may change model) where the ``vector`` extension is available. Each
model gets a partial HNSW index on ``embedding::vector(dim)`` for its own rows (cosine), made
when a process first needs it; queries repeat the index's expression and predicate so the
planner can use it. The dense half of a search is then one query per knowledge base: the
nearest chunks (HNSW, with pgvector's iterative scan so filters still fill the list) and the
similarity of BM25's candidates, which every hit reports. BM25 stays in the process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.knowledge.embeddings import Vectors
from parley.store.db import Database

#: HNSW's candidate list: at least twice the results asked for (pgvector's default is 40).
EF_SEARCH = 40


@dataclass(frozen=True, slots=True)
class PgVector:
    """pgvector is installed and ``kb_chunks.embedding`` exists."""

    version: tuple[int, ...]

    @property
    def iterative_scan(self) -> bool:
        return self.version >= (0, 8)


async def detect(db: Database) -> PgVector | None:
    if db.engine.dialect.name != "postgresql":
        return None
    async with db.session() as session:
        version = await session.scalar(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
        column = await session.scalar(
            text(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = 'kb_chunks' AND column_name = 'embedding'"
            )
        )
    if version is None or column is None:
        return None
    return PgVector(tuple(int(p) for p in str(version).split(".") if p.isdigit()))


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _expression(dim: int) -> str:
    return f"(embedding::vector({int(dim)}))"


def index_name(model: str, dim: int) -> str:
    return "ix_kb_chunks_embedding_" + hashlib.sha256(f"{model}:{dim}".encode()).hexdigest()[:12]


async def ensure_index(db: Database, model: str, dim: int) -> None:
    """The HNSW index over ``model``'s vectors (built once; other processes may race: fine)."""
    ddl = (
        f"CREATE INDEX IF NOT EXISTS {index_name(model, dim)} ON kb_chunks "
        f"USING hnsw ({_expression(dim)} vector_cosine_ops) WHERE vector_model = {_literal(model)}"
    )
    try:
        async with db.transaction() as session:
            await session.execute(text(ddl))
    except DBAPIError:
        async with db.session() as session:
            exists = await session.scalar(
                text("SELECT 1 FROM pg_indexes WHERE indexname = :name"), {"name": index_name(model, dim)}
            )
        if exists is None:
            raise


def to_text(vector: Vectors) -> str:
    """pgvector's text form; float32 values print exactly and parse back to the same floats."""
    return "[" + ",".join(repr(v) for v in np.asarray(vector, dtype=np.float32).tolist()) + "]"


async def store(session: AsyncSession, model: str, rows: Sequence[tuple[str, Vectors]]) -> None:
    """Write chunks' vectors (the chunks exist: flush first)."""
    if not rows:
        return
    await session.execute(
        text(
            "UPDATE kb_chunks SET embedding = CAST(:v AS vector), vector = NULL, vector_model = :m "
            "WHERE id = :id"
        ),
        [{"id": chunk_id, "v": to_text(vector), "m": model} for chunk_id, vector in rows],
    )


def nearest_sql(model: str, dim: int, *, document: bool, candidates: bool, exact: bool = False) -> str:
    """Chunk ids and cosine distances: the ``:n`` nearest to ``:q`` in ``:kb`` (and ``:doc``),
    then ``:ids``. Its ORDER BY repeats the index's expression and predicate, so HNSW serves it;
    ``exact`` orders by the bare column instead, which no index serves: every row is compared."""
    column = "embedding" if exact else _expression(dim)
    distance = f"{column} <=> CAST(:q AS vector({int(dim)}))"
    where = f"kb_id = :kb AND vector_model = {_literal(model)}" + (
        " AND document_id = :doc" if document else ""
    )
    sql = (
        f"SELECT id, distance, true AS ranked FROM (SELECT id, {distance} AS distance FROM kb_chunks "
        f"WHERE {where} ORDER BY distance LIMIT :n) AS nearest"
    )
    if candidates:
        sql += (
            f" UNION ALL SELECT id, {distance}, false FROM kb_chunks "
            f"WHERE id = ANY(CAST(:ids AS varchar[])) AND vector_model = {_literal(model)}"
        )
    return sql


async def similarities(
    db: Database,
    store: PgVector,
    *,
    kb_id: str,
    model: str,
    dim: int,
    query: Vectors,
    depth: int,
    document: str | None,
    candidates: Sequence[str],
    expected: int,
) -> dict[str, float]:
    """Cosine similarity of the ``depth`` nearest chunks and of ``candidates``, by chunk id.

    ``expected``: how many chunks the filter lets through. One document's chunks are few:
    they are compared exactly. A knowledge base goes through HNSW, which filters after the
    graph walk: where that leaves fewer than ``min(depth, expected)`` (pgvector < 0.8 has no
    iterative scan; a small knowledge base in a large table), the query runs again exactly.
    """
    params: dict[str, object] = {"q": to_text(query), "kb": kb_id, "n": depth}
    if document is not None:
        params["doc"] = document
    if candidates:
        params["ids"] = list(candidates)
    settings = "SELECT set_config('hnsw.ef_search', :ef, true)"
    if store.iterative_scan:
        settings += ", set_config('hnsw.iterative_scan', 'strict_order', true)"
    shape = {"document": document is not None, "candidates": bool(candidates)}
    async with db.session() as session:
        rows: Sequence[Any] = []
        if document is None:
            await session.execute(text(settings), {"ef": str(min(max(2 * depth, EF_SEARCH), 1000))})
            rows = (await session.execute(text(nearest_sql(model, dim, **shape)), params)).all()
        if document is not None or sum(1 for r in rows if r[2]) < min(depth, expected):
            rows = (await session.execute(text(nearest_sql(model, dim, exact=True, **shape)), params)).all()
    return {chunk_id: 1.0 - float(d) for chunk_id, d, _ in rows}
