"""pgvector: vectors live in PostgreSQL and the database ranks them, with the in-app results.

The same documents, edits, deletions and another process's write go into SQLite (vectors
in the process) and into PostgreSQL with pgvector; every search must come back the same:
chunks, order and scores. Runs where ``PARLEY_TEST_PGVECTOR_URL`` is set (``make test``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from parley.knowledge import pgvector
from parley.knowledge.bases import Knowledge
from parley.knowledge.embeddings import HashEmbedder
from parley.knowledge.ingest import parse
from parley.knowledge.search import MODES
from parley.store.db import Database
from parley.users import Principal, create_user
from tests.conftest import database_of
from tests.knowledge_data import GUIDE, WordVectorEmbedder, corpus

QUERIES = ["kan lox miro", "nule pex", "rati sile tun", "tomatoes watering sun", "kax", "zzz unknown"]


@asynccontextmanager
async def database(kind: str, tmp_path: Path) -> AsyncIterator[Database]:
    async with database_of(kind, tmp_path) as url:
        db = Database(url)
        await db.upgrade()
        try:
            yield db
        finally:
            await db.close()


async def scenario(db: Database, folder: Path) -> tuple[Knowledge, Principal, str]:
    """Ingest a folder, edit one file and delete another, then a second process adds a guide."""
    owner = await create_user(db, "operator")
    server = Knowledge(db, embedder=WordVectorEmbedder())
    await server.start(owner_id=owner.user_id)
    folder.mkdir()
    files = corpus(60)
    for name, body in files.items():
        (folder / name).write_text(body)
    report = await server.sync(owner.user_id, "docs", [folder], prune=True)
    assert report.created == 60
    (folder / "doc-003.md").write_text(files["doc-003.md"] + "\n## Added\n\nkan kan lox tomatoes.\n")
    (folder / "doc-004.md").unlink()
    report = await server.sync(owner.user_id, "docs", [folder], prune=True)
    assert (report.updated, report.deleted, report.embedded) == (1, 1, 1)
    kb = (await server.bases_named(owner.user_id, ["docs"]))[0]
    other_process = Knowledge(db, embedder=WordVectorEmbedder())
    await other_process.start(owner_id=owner.user_id)
    await other_process.add_document(owner, kb.id, "guide.md", parse("guide.md", GUIDE.encode()))
    return server, owner, kb.id


async def results(knowledge: Knowledge, owner: Principal, kb_id: str) -> list[Any]:
    sources = {d.id: d.source for d in await knowledge.list_documents(owner, kb_id)}
    by_source = {s: d for d, s in sources.items()}
    out = []
    for query in QUERIES:
        for mode in MODES:
            for k, document in (
                (5, None),
                (20, None),
                (5, by_source["doc-003.md"]),
                (3, by_source["guide.md"]),
            ):
                hits = await knowledge.search(owner, kb_id, query, mode=mode, k=k, document=document)
                out.append(
                    (
                        query,
                        mode,
                        k,
                        sources.get(document or ""),
                        [(sources[h.document_id], h.position, h.title) for h in hits],
                        [(h.score, h.bm25, h.similarity) for h in hits],
                    )
                )
    return out


async def test_pgvector_search_equals_the_in_app_search(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with database("pgvector", tmp_path / "a") as pg, database("sqlite", tmp_path / "b") as lite:
        pg_knowledge, pg_owner, pg_kb = await scenario(pg, tmp_path / "a" / "docs")
        app_knowledge, app_owner, app_kb = await scenario(lite, tmp_path / "b" / "docs")
        assert (pg_knowledge.vector_store, app_knowledge.vector_store) == ("pgvector", "in-app")
        in_db = await results(pg_knowledge, pg_owner, pg_kb)
        in_app = await results(app_knowledge, app_owner, app_kb)

        async with pg.session() as session:
            stored = (
                await session.execute(
                    text(
                        "SELECT count(*), count(embedding), count(vector), count(DISTINCT vector_model) "
                        "FROM kb_chunks"
                    )
                )
            ).one()
        assert stored[0] > 100
        assert tuple(stored) == (stored[0], stored[0], 0, 1)  # every vector in pgvector, no bytes
        assert not pg_knowledge._indexes[pg_kb].has_vectors  # nor in the process

    assert len(in_db) == len(in_app)
    some_hits = 0
    for db_row, app_row in zip(in_db, in_app, strict=True):
        assert db_row[:5] == app_row[:5]
        for (score, bm25, similarity), (want_score, want_bm25, want_similarity) in zip(
            db_row[5], app_row[5], strict=True
        ):
            assert score == pytest.approx(want_score, abs=1e-5)
            assert bm25 == (None if want_bm25 is None else pytest.approx(want_bm25, rel=1e-5))
            assert similarity == (
                None if want_similarity is None else pytest.approx(want_similarity, abs=1e-5)
            )
        some_hits += len(db_row[4])
    assert some_hits > 300
    guide_hits = [r for r in in_db if r[0] == "tomatoes watering sun" and r[1] == "dense" and r[3] is None]
    assert guide_hits[0][4][0][0] == "guide.md"  # another process's write is found by the database


async def test_the_hnsw_index_serves_the_nearest_query_and_a_new_model_gets_its_own(tmp_path: Path) -> None:
    async with database("pgvector", tmp_path) as db:
        owner = await create_user(db, "operator")
        knowledge = Knowledge(db, embedder=WordVectorEmbedder())
        await knowledge.start(owner_id=owner.user_id)
        kb = await knowledge.create_base(owner, "help")
        await knowledge.add_document(owner, kb.id, "guide.md", parse("guide.md", GUIDE.encode()))
        model = WordVectorEmbedder()
        async with db.session() as session:
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(
                await session.scalars(
                    text(
                        "EXPLAIN "
                        + pgvector.nearest_sql(model.name, model.dim, document=True, candidates=True)
                    ),
                    {
                        "q": pgvector.to_text(model.embed(["roses"])[0]),
                        "kb": kb.id,
                        "doc": "x",
                        "n": 10,
                        "ids": ["a"],
                    },
                )
            )
        assert pgvector.index_name(model.name, model.dim) in plan

        hashed = Knowledge(db, embedder=HashEmbedder())  # another model, another dimension
        await hashed.start(owner_id=owner.user_id)
        hits = await hashed.search(owner, kb.id, "prune roses winter", mode="dense", k=1)
        assert hits[0].title == "Gardening guide > Roses"
        async with db.session() as session:
            models = set(await session.scalars(text("SELECT DISTINCT vector_model FROM kb_chunks")))
            indexes = set(await session.scalars(text("SELECT indexname FROM pg_indexes")))
        assert models == {HashEmbedder().name}
        assert pgvector.index_name(HashEmbedder().name, 256) in indexes


async def test_postgres_without_pgvector_keeps_vectors_in_the_process(tmp_path: Path) -> None:
    async with database("postgres", tmp_path) as db:
        owner = await create_user(db, "operator")
        knowledge = Knowledge(db, embedder=WordVectorEmbedder())
        await knowledge.start(owner_id=owner.user_id)
        kb = await knowledge.create_base(owner, "help")
        await knowledge.add_document(owner, kb.id, "guide.md", parse("guide.md", GUIDE.encode()))
        assert knowledge.vector_store == "in-app"
        assert (await knowledge.search(owner, kb.id, "roses", mode="dense", k=1))[0].similarity
        async with db.session() as session:
            columns = set(
                await session.scalars(
                    text("SELECT column_name FROM information_schema.columns WHERE table_name = 'kb_chunks'")
                )
            )
        assert "vector" in columns
        assert "embedding" not in columns
