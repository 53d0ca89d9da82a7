"""Knowledge bases over a real database: incremental ingest, search modes, freshness, ownership."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from sqlalchemy import func, select

from parley.config import Settings
from parley.errors import ApiError
from parley.knowledge.bases import Knowledge
from parley.knowledge.embeddings import (
    EmbeddingsUnavailable,
    HashEmbedder,
    MiniLMEmbedder,
    QueryVectors,
    Vectors,
)
from parley.knowledge.ingest import parse
from parley.knowledge.schema import Chunk
from parley.store.db import Database
from parley.users import Principal, create_user
from tests.conftest import database_of, serve
from tests.knowledge_data import FAQ, GUIDE


@pytest.fixture(params=["sqlite", "postgres", "pgvector"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """Every test here runs in-app (SQLite, PostgreSQL without pgvector) and on pgvector."""
    async with database_of(request.param, tmp_path) as url:
        database = Database(url)
        await database.upgrade()
        try:
            yield database
        finally:
            await database.close()


async def started(db: Database, owner: Principal, embeddings: str = "hash") -> Knowledge:
    knowledge = Knowledge(db, embeddings=embeddings)
    await knowledge.start(owner_id=owner.user_id)
    return knowledge


async def chunk_count(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Chunk)) or 0)


async def test_reingesting_updates_only_what_changed(db: Database) -> None:
    alice = await create_user(db, "alice")
    knowledge = await started(db, alice)
    kb = await knowledge.create_base(alice, "help")
    first = await knowledge.add_document(alice, kb.id, "help.md", parse("help.md", FAQ.encode()))
    assert (first.status, first.chunks, first.embedded) == ("created", 3, 3)

    again = await knowledge.add_document(alice, kb.id, "help.md", parse("help.md", FAQ.encode()))
    assert (again.status, again.embedded) == ("unchanged", 0)
    assert again.document.id == first.document.id

    edited = FAQ.replace("Visa, Mastercard and bank transfer.", "Visa and PayPal.")
    changed = await knowledge.add_document(alice, kb.id, "help.md", parse("help.md", edited.encode()))
    assert (changed.status, changed.chunks, changed.embedded) == ("updated", 3, 1)
    assert await chunk_count(db) == 3
    hits = await knowledge.search(alice, kb.id, "PayPal", mode="bm25")
    assert [h.title for h in hits] == ["Which payment methods do you accept?"]
    assert await knowledge.search(alice, kb.id, "Mastercard", mode="bm25") == []


async def test_deleting_a_document_removes_its_chunks_from_the_database_and_the_index(db: Database) -> None:
    alice = await create_user(db, "alice")
    knowledge = await started(db, alice)
    kb = await knowledge.create_base(alice, "mixed")
    faq = await knowledge.add_document(alice, kb.id, "help.md", parse("help.md", FAQ.encode()))
    await knowledge.add_document(alice, kb.id, "guide.md", parse("guide.md", GUIDE.encode()))
    assert await chunk_count(db) == 5
    await knowledge.delete_document(alice, kb.id, faq.document.id)
    assert await chunk_count(db) == 2
    left = await knowledge.search(alice, kb.id, "refund policy password payment", k=10)
    assert left
    assert {h.document_id for h in left} != {faq.document.id}
    assert all(h.document_id != faq.document.id for h in left)
    with pytest.raises(ApiError) as missing:
        await knowledge.delete_document(alice, kb.id, faq.document.id)
    assert missing.value.status == 404


async def test_modes_scores_and_document_filter(db: Database) -> None:
    alice = await create_user(db, "alice")
    knowledge = await started(db, alice)
    kb = await knowledge.create_base(alice, "mixed")
    faq = await knowledge.add_document(alice, kb.id, "help.md", parse("help.md", FAQ.encode()))
    guide = await knowledge.add_document(alice, kb.id, "guide.md", parse("guide.md", GUIDE.encode()))

    bm25 = await knowledge.search(alice, kb.id, "refund", mode="bm25", k=5)
    assert [h.title for h in bm25] == ["What is the refund policy?"]  # only documents with the term
    assert bm25[0].score == bm25[0].bm25
    assert bm25[0].score > 0
    assert bm25[0].similarity is None

    # "refunded" stems to "refund": BM25 matches word forms too.
    assert (await knowledge.search(alice, kb.id, "refunded", mode="bm25"))[
        0
    ].title == "What is the refund policy?"

    dense = await knowledge.search(alice, kb.id, "watering tomato plants", mode="dense", k=2)
    assert dense[0].title == "Gardening guide > Tomatoes"
    assert dense[0].score == dense[0].similarity
    assert dense[0].similarity > dense[1].similarity

    hybrid = await knowledge.search(alice, kb.id, "password reset email", mode="hybrid", k=3)
    assert hybrid[0].title == "How do I reset my password?"
    assert hybrid[0].bm25 is not None
    assert hybrid[0].similarity is not None
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)

    only_guide = await knowledge.search(
        alice, kb.id, "password", mode="hybrid", k=5, document=guide.document.id
    )
    assert only_guide
    assert {h.document_id for h in only_guide} == {guide.document.id}
    only_faq = await knowledge.search(alice, kb.id, "roses", mode="bm25", document=faq.document.id)
    assert only_faq == []


class CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.seen += texts
        return super().embed(texts)


async def test_a_repeated_question_is_not_embedded_again(db: Database) -> None:
    alice = await create_user(db, "alice")
    embedder = CountingEmbedder()
    knowledge = Knowledge(db, embedder=embedder)
    await knowledge.start(owner_id=alice.user_id)
    kb = await knowledge.create_base(alice, "help")
    await knowledge.add_document(alice, kb.id, "help.md", parse("help.md", FAQ.encode()))
    embedder.seen.clear()

    first = await knowledge.search(alice, kb.id, "password reset email", mode="hybrid")
    again = await knowledge.search(alice, kb.id, "password reset email", mode="dense")
    other = await knowledge.search(alice, kb.id, "how do refunds work", mode="hybrid")
    await knowledge.search(alice, kb.id, "anything at all", mode="bm25")
    # The FAQ entries' own questions are embedded once, at the first search that ranks them.
    entries = [q for q in embedder.seen if q.endswith("?")]
    assert sorted(entries) == sorted(q for e in knowledge._indexes[kb.id].entries for q in e.questions)
    assert [q for q in embedder.seen if q not in entries] == ["password reset email", "how do refunds work"]
    assert first[0].title == again[0].title == "How do I reset my password?"
    assert first[0].similarity == again[0].similarity
    assert other[0].title == "What is the refund policy?"


def test_query_vectors_forget_the_least_recently_used_question() -> None:
    embedder = CountingEmbedder()
    queries = QueryVectors(embedder, size=2)
    first = queries.get("a b c")
    queries.get("d e f")
    queries.get("a b c")
    queries.get("g h i")  # "d e f" is the least recently used: forgotten
    queries.get("a b c")
    queries.get("d e f")
    assert embedder.seen == ["a b c", "d e f", "g h i", "d e f"]
    assert (queries.hits, queries.misses) == (2, 4)
    assert not first.flags.writeable  # callers share the cached vector


async def test_a_new_process_loads_the_index_from_the_database(db: Database) -> None:
    alice = await create_user(db, "alice")
    writer = await started(db, alice)
    kb = await writer.create_base(alice, "help")
    await writer.add_document(alice, kb.id, "help.md", parse("help.md", FAQ.encode()))
    restarted = await started(db, alice)
    hits = await restarted.search(alice, kb.id, "reset my password", k=1)
    assert hits[0].title == "How do I reset my password?"
    assert hits[0].similarity is not None  # vectors came back from the database


async def test_a_write_by_another_process_is_seen_without_a_restart(db: Database) -> None:
    alice = await create_user(db, "alice")
    server = await started(db, alice)
    cli = await started(db, alice)
    kb = await server.create_base(alice, "help")
    assert await server.search(alice, kb.id, "password") == []
    await cli.add_document(alice, kb.id, "help.md", parse("help.md", FAQ.encode()))
    assert (await server.search(alice, kb.id, "password", k=1))[0].title == "How do I reset my password?"
    doc = (await cli.list_documents(alice, kb.id))[0]
    await cli.delete_document(alice, kb.id, doc.id)
    assert await server.search(alice, kb.id, "password") == []


async def test_vectors_of_another_model_are_recomputed_at_start(db: Database) -> None:
    alice = await create_user(db, "alice")
    bm25_only = await started(db, alice, embeddings="none")
    kb = await bm25_only.create_base(alice, "help")
    await bm25_only.add_document(alice, kb.id, "help.md", parse("help.md", FAQ.encode()))
    with pytest.raises(ApiError) as off:
        await bm25_only.search(alice, kb.id, "password", mode="dense")
    assert off.value.status == 422
    dense = await started(db, alice, embeddings="hash")
    hits = await dense.search(alice, kb.id, "password reset", mode="dense", k=1)
    assert hits[0].similarity is not None
    assert hits[0].title == "How do I reset my password?"
    async with db.session() as session:
        models = set(await session.scalars(select(Chunk.vector_model)))
    assert models == {HashEmbedder().name}


async def test_sync_reports_bad_files_and_mirrors_the_folder(db: Database, tmp_path: Path) -> None:
    owner = await create_user(db, "operator")
    knowledge = await started(db, owner)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "help.md").write_text(FAQ)
    (folder / "guide.md").write_text(GUIDE)
    (folder / "fake.pdf").write_bytes(b"not a pdf at all")
    seen: list[tuple[str, str | None]] = []
    report = await knowledge.sync(
        owner.user_id, "docs", [folder], prune=True, progress=lambda s, e: seen.append((s, e))
    )
    assert (report.created, report.updated, report.unchanged, report.chunks) == (2, 0, 0, 5)
    assert report.failed == [("fake.pdf", "not a PDF: the file does not start with %PDF-")]
    assert [s for s, _ in seen] == ["fake.pdf", "guide.md", "help.md"]

    (folder / "guide.md").unlink()
    (folder / "help.md").write_text(FAQ + "\nQ: Do you ship abroad?\nA: Yes, to 40 countries.\n")
    report = await knowledge.sync(owner.user_id, "docs", [folder], prune=True)
    assert (report.created, report.updated, report.deleted, report.embedded) == (0, 1, 1, 1)
    kb = (await knowledge.bases_named(owner.user_id, ["docs"]))[0]
    assert (await knowledge.search(owner, kb.id, "ship abroad", k=1))[0].title == "Do you ship abroad?"
    assert await knowledge.search(owner, kb.id, "roses", mode="bm25") == []


async def test_nobody_reaches_another_users_knowledge_base(db: Database) -> None:
    alice, bob = await create_user(db, "alice"), await create_user(db, "bob")
    knowledge = await started(db, alice)
    kb = await knowledge.create_base(alice, "private")
    doc = await knowledge.add_document(alice, kb.id, "help.md", parse("help.md", FAQ.encode()))
    attempts = [
        knowledge.get_base(bob, kb.id),
        knowledge.search(bob, kb.id, "password"),
        knowledge.list_documents(bob, kb.id),
        knowledge.add_document(bob, kb.id, "x.md", parse("x.md", b"# x\n\nintruder")),
        knowledge.delete_document(bob, kb.id, doc.document.id),
        knowledge.delete_base(bob, kb.id),
    ]
    for attempt in attempts:
        with pytest.raises(ApiError) as denied:
            await attempt
        assert denied.value.status == 404
    assert [kb.name for kb, _ in await knowledge.list_bases(bob)] == []
    assert len(await knowledge.search(alice, kb.id, "password")) > 0
    assert await chunk_count(db) == 3
    # Names are per user: bob may have his own "private".
    assert (await knowledge.create_base(bob, "private")).id != kb.id
    with pytest.raises(ApiError) as taken:
        await knowledge.create_base(alice, "private")
    assert taken.value.status == 409


def test_minilm_embeds_a_question_on_one_thread_with_the_same_vector() -> None:
    """With float32 questions (the int8 default is tested in test_knowledge_embeddings.py)."""
    pytest.importorskip("sentence_transformers")
    torch = pytest.importorskip("torch")
    try:
        embedder = MiniLMEmbedder(questions="float32")
    except EmbeddingsUnavailable as exc:
        pytest.skip(str(exc))
    threads = torch.get_num_threads()
    question = "How do I reset my password?"
    single = embedder.embed_query(question)
    batch = embedder.embed([question, "an unrelated sentence about tomatoes"])
    assert single.shape == (384,)
    assert float(single @ batch[0]) > 0.9999
    assert float(single @ batch[1]) < 0.5
    assert torch.get_num_threads() == threads


RECEIPTS = """Q: Can I get a copy of my receipt?
A: Orders ship from our warehouse in Leeds within two working days. Couriers collect parcels every
afternoon; tracking numbers arrive by email once the parcel is scanned. Large items travel on pallets
and need a delivery slot, which the courier books with you by phone. Returns go back to the same
warehouse; print the prepaid label from your order page and drop the parcel at any post office.

Q: Which payment methods do you accept?
A: Cards and bank transfers; we email a receipt for every payment, and a copy of each receipt stays on
the billing page.
"""


@pytest.mark.parametrize("mode", ["hybrid", "dense"])
async def test_a_paraphrased_faq_question_finds_its_entry_over_one_whose_answer_shares_the_words(
    settings_for: Callable[..., Settings], mode: str
) -> None:
    """An entry is matched by its own question too: its long answer about something else does not
    hide it behind an entry whose answer happens to share the user's words."""
    async with serve(settings_for(embeddings="hash")) as server:
        c = server.client
        kb = (await c.post("/v1/knowledge-bases", json={"name": "shop-help"})).json()["id"]
        added = await c.post(f"/v1/knowledge-bases/{kb}/documents", json={"title": "Help", "text": RECEIPTS})
        assert added.status_code == 201, added.text
        for question in ("could I have a copy of my receipt", "I need a receipt copy"):
            found = await c.get(f"/v1/knowledge-bases/{kb}/search", params={"q": question, "mode": mode})
            assert [h["title"] for h in found.json()["data"]] == [
                "Can I get a copy of my receipt?",
                "Which payment methods do you accept?",
            ]


LOCKED_OUT = """Q: How do I reset my password?
Q: i am locked out of my account
Q: forgot the login for my workspace
A: Use the "Forgot password" link on the sign-in page; the email it sends is valid for one hour.

Q: How do I invite a colleague?
A: Open Members and send an invitation to their email address; they join your workspace when they
accept it.
"""


@pytest.mark.parametrize("mode", ["hybrid", "bm25"])
async def test_a_question_in_words_only_another_way_of_asking_has_finds_the_entry(
    settings_for: Callable[..., Settings], mode: str
) -> None:
    """An entry's other ways of asking find it, and its hit shows it under its own question only."""
    async with serve(settings_for(embeddings="hash")) as server:
        c = server.client
        kb = (await c.post("/v1/knowledge-bases", json={"name": "help"})).json()["id"]
        added = await c.post(
            f"/v1/knowledge-bases/{kb}/documents", json={"title": "Help", "text": LOCKED_OUT}
        )
        assert added.status_code == 201, added.text
        found = await c.get(f"/v1/knowledge-bases/{kb}/search", params={"q": "locked out", "mode": mode})
        best = found.json()["data"][0]
        assert best["title"] == "How do I reset my password?"
        assert best["text"] == (
            'Q: How do I reset my password?\nA: Use the "Forgot password" link on the sign-in page; '
            "the email it sends is valid for one hour."
        )
