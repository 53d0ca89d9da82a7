"""Knowledge bases at scale: an index updated in place equals one built afresh, indexes load on
first use, another process's index catches up from the database, batch uploads (parts, zip, tar) as jobs with progress, large
documents as jobs, hostile archives refused with nothing stored, truthful counts and modes, and
the ingest rate class."""

from __future__ import annotations

import asyncio
import io
import random
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pytest

from parley.config import Settings
from parley.knowledge.bases import Knowledge
from parley.knowledge.ingest import parse_text
from parley.knowledge.search import ChunkEntry, KbIndex
from parley.store.db import Database
from parley.users import Principal, ensure_local_user
from tests.conftest import Server, serve
from tests.knowledge_data import FAQ, GUIDE


def _entry(i: int, rng: random.Random, words: list[str], document: str | None = None) -> ChunkEntry:
    text = " ".join(rng.choice(words[: 20 + i % 180]) for _ in range(rng.randint(3, 30)))
    vector = np.asarray([rng.random() for _ in range(8)], dtype=np.float32)
    return ChunkEntry(
        f"c{i}", document or f"d{i // 3}", "", text, i % 3, "T", tuple(text.split()), vector, f"{i:064x}"
    )


def test_an_index_changed_in_place_scores_as_one_built_afresh() -> None:
    rng = random.Random(7)
    words = [f"w{i}" for i in range(200)]
    entries = [_entry(i, rng, words) for i in range(900)]
    index = KbIndex.build("kb", 0, [], 8)
    for start in range(0, 600, 5):  # one small document at a time, as uploads come
        index = index.with_changes(start + 1, set(), entries[start : start + 5])
    assert index.segments <= 12  # log-structured: segments merge as they come
    removed = {f"c{i}" for i in range(0, 600, 4)}
    index = index.with_changes(1000, removed, entries[600:])
    live = [e for e in entries if e.id not in removed]
    reference = bm25s.BM25()
    reference.index([list(e.tokens) for e in live], show_progress=False)
    fresh = KbIndex.build("kb", 1000, live, 8)
    for query in (["w3", "w17"], ["w150", "w2", "w2"], ["w199"]):
        expected = reference.get_scores(query)
        got = index.bm25_scores(query)
        assert got is not None
        rows = [index.row_of(e.id) for e in live]
        assert all(r is not None for r in rows)
        assert np.allclose(got[rows], expected, atol=1e-5)
        vector = np.ones(8, dtype=np.float32) / np.sqrt(8)
        for mode in ("bm25", "dense", "hybrid"):
            assert [h.chunk_id for h in index.search(query, vector, mode=mode, k=10)] == [
                h.chunk_id for h in fresh.search(query, vector, mode=mode, k=10)
            ]
    assert len(index) == len(live)
    assert all(index.row_of(i) is None for i in removed)
    # a moved or retitled chunk replaces its row; the old snapshot still sees its own
    before = index
    moved = index.with_changes(1001, {"c2"}, [], positions={"c1": 42}, titles={"d0": "New title"})
    [c1] = [e for e in moved.entries if e.id == "c1"]
    assert (c1.position, c1.document_title) == (42, "New title")
    assert {e.document_title for e in moved.entries if e.document_id == "d0"} == {"New title"}
    assert (before.count("d0"), moved.count("d0")) == (2, 1)  # c0 was removed earlier, c2 now
    assert [e.position for e in before.entries if e.id == "c1"] == [1]


async def _knowledge(url: str) -> tuple[Knowledge, Database, Principal]:
    db = Database(url)
    await db.upgrade()
    owner = await ensure_local_user(db)
    knowledge = Knowledge(db, embeddings="hash")
    await knowledge.start(owner_id=owner.user_id)
    return knowledge, db, owner


async def test_another_process_catches_up_from_the_database(database_url: str) -> None:
    writer, db1, owner = await _knowledge(database_url)
    reader, db2, _ = await _knowledge(database_url)
    try:
        kb = await writer.create_base(owner, "help")
        assert await reader.search(owner, kb.id, "password") == []
        faq = await writer.add_document(owner, kb.id, "faq.md", parse_text(FAQ, title="FAQ"))
        await writer.add_document(owner, kb.id, "guide.md", parse_text(GUIDE, title="Guide"))
        before = reader._indexes[kb.id]
        hits = await reader.search(owner, kb.id, "reset my password", k=3)
        assert hits[0].title == "How do I reset my password?"
        after = reader._indexes[kb.id]
        assert (after.revision, len(after)) == (2, len(writer._indexes[kb.id]))
        assert before.revision == 0  # caught up (not reloaded) from revision 0
        # an update: a retitled document, a changed chunk; then a deletion
        changed = FAQ.replace("Settings", "Preferences")
        await writer.add_document(owner, kb.id, "faq.md", parse_text(changed, title="Help centre"))
        hits = await reader.search(owner, kb.id, "reset my password", k=3, mode="bm25")
        assert hits[0].document_title == "Help centre"
        assert "Preferences" in " ".join(h.text for h in hits)
        assert "Settings" not in " ".join(h.text for h in hits if h.document_id == faq.document.id)
        await writer.delete_document(owner, kb.id, faq.document.id)
        hits = await reader.search(owner, kb.id, "reset my password", k=10, mode="bm25")
        assert all(h.document_id != faq.document.id for h in hits)
        assert len(reader._indexes[kb.id]) == len(writer._indexes[kb.id])
        # what the reader holds equals a full reload of the database
        fresh, db3, _ = await _knowledge(database_url)
        try:
            for q in ("watering tomatoes", "sun"):
                ids = [h.chunk_id for h in await fresh.search(owner, kb.id, q, k=5)]
                assert [h.chunk_id for h in await reader.search(owner, kb.id, q, k=5)] == ids
        finally:
            await db3.close()
    finally:
        await db1.close()
        await db2.close()


async def test_a_process_loads_an_index_on_its_first_use_not_at_start(database_url: str) -> None:
    """A process that starts loads no knowledge base: it reads one the first time it searches it
    (a cluster's API process holds only the bases its requests touch), and answers as a process
    that had always held it."""
    writer, db1, owner = await _knowledge(database_url)
    started, db2, _ = await _knowledge(database_url)
    try:
        help_ = await writer.create_base(owner, "help")
        garden = await writer.create_base(owner, "garden")
        await writer.add_document(owner, help_.id, "faq.md", parse_text(FAQ, title="FAQ"))
        await writer.add_document(owner, garden.id, "guide.md", parse_text(GUIDE, title="Guide"))
        restarted, db3, _ = await _knowledge(database_url)
        try:
            assert restarted.loaded == frozenset()
            hits = await restarted.search(owner, help_.id, "reset my password", k=3)
            assert hits[0].title == "How do I reset my password?"
            assert restarted.loaded == {help_.id}
            expected = [h.chunk_id for h in await writer.search(owner, garden.id, "watering tomatoes", k=5)]
            assert [
                h.chunk_id for h in await restarted.search(owner, garden.id, "watering tomatoes", k=5)
            ] == (expected)
            assert restarted.loaded == {help_.id, garden.id}
        finally:
            await db3.close()
        # A process that started before the bases existed loads them on first use as well.
        assert started.loaded == frozenset()
        assert (await started.search(owner, garden.id, "watering tomatoes", k=1))[0].chunk_id == expected[0]
        assert started.loaded == {garden.id}
    finally:
        await db1.close()
        await db2.close()


@pytest.fixture
async def scale(settings_for: Callable[..., Settings]) -> Any:
    settings = settings_for(
        embeddings="hash",
        knowledge_max_upload_bytes=64 * 1024,
        knowledge_max_batch_bytes=256 * 1024,
        knowledge_job_bytes=8 * 1024,
        ingest_workers="thread",
    )
    async with serve(settings) as handle:
        yield handle


async def _kb(server: Server) -> str:
    response = await server.client.post("/v1/knowledge-bases", json={"name": "corpus"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _job(server: Server, kb: str, job: dict[str, Any]) -> dict[str, Any]:
    await server.parley.jobs.wait()
    response = await server.client.get(f"/v1/knowledge-bases/{kb}/jobs/{job['id']}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _documents(server: Server, kb: str) -> list[dict[str, Any]]:
    return list((await server.client.get(f"/v1/knowledge-bases/{kb}/documents")).json()["data"])


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


async def test_a_batch_of_parts_and_an_archive_is_one_job(scale: Server) -> None:
    kb = await _kb(scale)
    archive = _zip(
        {
            "docs/a.md": b"# Alpha\n\nAlpha particles are helium nuclei.",
            "docs/b.txt": b"Beta decay emits an electron.",
            "docs/.hidden.md": b"# secret",
            "__MACOSX/docs/a.md": b"junk",
            "docs/logo.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 64,
            "docs/broken.md": "caf\u00e9".encode("latin-1") * 3000,
            "docs/run.md": b"MZ\x90\x00" + b"\x00" * 100,
        }
    )
    files = [
        ("file", ("faq.md", FAQ.encode(), "text/markdown")),
        ("file", ("guide.md", GUIDE.encode(), "text/markdown")),
        ("file", ("docs.zip", archive, "application/zip")),
    ]
    response = await scale.client.post(f"/v1/knowledge-bases/{kb}/documents/batch", files=files)
    assert response.status_code == 202, response.text
    assert response.json()["object"] == "knowledge_job"
    job = await _job(scale, kb, response.json())
    assert (job["status"], job["progress"], job["done"], job["total"]) == ("completed", 100, 7, 7)
    outcome = {r["source"]: r["status"] for r in job["results"]}
    assert outcome == {
        "faq.md": "created",
        "guide.md": "created",
        "docs/a.md": "created",
        "docs/b.txt": "created",
        "docs/logo.png": "skipped",
        "docs/broken.md": "skipped",
        "docs/run.md": "skipped",
    }
    assert sorted(d["source"] for d in await _documents(scale, kb)) == [
        "docs/a.md",
        "docs/b.txt",
        "faq.md",
        "guide.md",
    ]
    found = await scale.client.get(f"/v1/knowledge-bases/{kb}/search", params={"q": "helium nuclei"})
    assert found.json()["data"][0]["document_title"] == "Alpha"
    again = await scale.client.post(f"/v1/knowledge-bases/{kb}/documents/batch", files=files[:2])
    job = await _job(scale, kb, again.json())
    assert [r["status"] for r in job["results"]] == ["unchanged", "unchanged"]
    assert not list(scale.parley.files.directory.glob(".batch-*"))


def _tar(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for info in members:
            archive.addfile(info, io.BytesIO(data[info.name]) if info.name in data else None)
    return out.getvalue()


def _member(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = size, kind, target
    return info


@pytest.mark.parametrize(
    ("archive", "name", "status", "code"),
    [
        (_zip({"../evil.md": b"# up"}), "a.zip", 422, "unsafe_archive"),
        (_zip({"/etc/evil.md": b"# abs"}), "a.zip", 422, "unsafe_archive"),
        (_zip({"big.md": b"a" * (70 * 1024)}), "a.zip", 413, "file_too_large"),
        (_zip({f"f{i}.md": b"x" * 60_000 for i in range(6)}), "a.zip", 413, "batch_too_large"),
        (
            _tar([_member("link.md", kind=tarfile.SYMTYPE, target="/etc/passwd")], {}),
            "a.tgz",
            422,
            "unsafe_archive",
        ),
        (_tar([_member("dev.md", kind=tarfile.CHRTYPE)], {}), "a.tar.gz", 422, "unsafe_archive"),
        (b"this is not an archive at all", "a.zip", 415, "file_type_mismatch"),
        (b"PK\x03\x04 truncated", "a.zip", 422, "unreadable_archive"),
    ],
    ids=["parent", "absolute", "big-member", "big-batch", "symlink", "device", "not-archive", "truncated"],
)
async def test_hostile_archives_are_refused_with_nothing_stored(
    scale: Server, archive: bytes, name: str, status: int, code: str
) -> None:
    kb = await _kb(scale)
    response = await scale.client.post(
        f"/v1/knowledge-bases/{kb}/documents/batch",
        files=[("file", ("ok.md", b"# fine\n\ntext", "text/markdown")), ("file", (name, archive, "x"))],
    )
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    assert await _documents(scale, kb) == []
    assert not [p for p in scale.parley.files.directory.iterdir() if p.name.startswith(".")]


async def test_batch_parts_get_the_upload_checks(scale: Server) -> None:
    kb = await _kb(scale)
    cases = [
        ([("file", ("run.md", b"MZ\x90\x00" + b"\0" * 64, "x"))], 415),
        ([("file", ("../x.md", b"# x", "x"))], 422),
        ([("file", ("a.md", b"# a", "x")), ("file", ("a.md", b"# b", "x"))], 422),
        ([("other", ("a.md", b"# a", "x"))], 422),
        ([("file", ("big.md", b"a" * (70 * 1024), "x"))], 413),
    ]
    for files, status in cases:
        response = await scale.client.post(f"/v1/knowledge-bases/{kb}/documents/batch", files=files)
        assert response.status_code == status, response.text
    assert await _documents(scale, kb) == []


async def test_a_large_document_is_a_job_showing_processing_then_ready(scale: Server) -> None:
    kb = await _kb(scale)
    text = "\n\n".join(f"Paragraph {i} tells how comet number {i} orbits the sun." for i in range(400))
    response = await scale.client.post(
        f"/v1/knowledge-bases/{kb}/documents", files={"file": ("comets.txt", text.encode(), "text/plain")}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["status"], body["job"]["status"]) == ("processing", "running")
    [listed] = await _documents(scale, kb)
    assert listed["id"] == body["id"]
    assert listed["status"] in ("processing", "ready")
    job = await _job(scale, kb, body["job"])
    assert (job["status"], job["progress"], job["results"][0]["status"]) == ("completed", 100, "created")
    [doc] = await _documents(scale, kb)
    assert (doc["status"], doc["progress"], doc["chunks"]) == ("ready", 100, job["results"][0]["chunks"])
    assert job["results"][0]["embedded"] == doc["chunks"] > 1
    found = await scale.client.get(f"/v1/knowledge-bases/{kb}/search", params={"q": "comet number 123"})
    assert "comet number 123 " in found.json()["data"][0]["text"]
    bad = await scale.client.post(
        f"/v1/knowledge-bases/{kb}/documents",
        files={"file": ("bad.txt", b"ok " * 4000 + "caf\u00e9".encode("latin-1") + b"x", "text/plain")},
    )
    assert bad.status_code == 415  # the streaming checks still answer at once


async def test_counts_and_modes_are_truthful_without_embeddings(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve(settings_for(embeddings="none", ingest_workers="thread")) as server:
        kb = await _kb(server)
        added = await server.client.post(
            f"/v1/knowledge-bases/{kb}/documents", json={"title": "FAQ", "text": FAQ}
        )
        assert (added.json()["chunks"], added.json()["embedded"]) == (3, 0)
        found = await server.client.get(
            f"/v1/knowledge-bases/{kb}/search", params={"q": "password", "mode": "hybrid"}
        )
        assert (found.status_code, found.json()["mode"]) == (200, "bm25")
        dense = await server.client.get(
            f"/v1/knowledge-bases/{kb}/search", params={"q": "password", "mode": "dense"}
        )
        assert dense.status_code == 422


async def test_ingest_has_its_own_generous_rate_class(settings_for: Callable[..., Settings]) -> None:
    async with serve(
        settings_for(embeddings="none", rate_limit="5/minute", ingest_workers="thread")
    ) as server:
        kb = await _kb(server)
        for i in range(12):
            response = await server.client.post(
                f"/v1/knowledge-bases/{kb}/documents", json={"title": f"doc {i}", "text": f"text {i}"}
            )
            assert response.status_code == 201, response.text
        limited = [(await server.client.get("/v1/knowledge-bases")).status_code for _ in range(6)]
        assert 429 in limited


async def test_parsing_runs_in_worker_processes(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    async with serve(settings_for(embeddings="none", ingest_workers="process")) as server:
        kb = await _kb(server)
        response = await server.client.post(
            f"/v1/knowledge-bases/{kb}/documents",
            files={"file": ("guide.md", GUIDE.encode(), "text/markdown")},
        )
        assert response.status_code == 201, response.text
        pool = server.parley.knowledge.workers._processes
        assert pool is not None
        pids = await asyncio.gather(*(asyncio.wrap_future(pool.submit(_pid)) for _ in range(2)))
        import os

        assert os.getpid() not in pids
        await asyncio.sleep(0)


def _pid() -> int:
    import os

    return os.getpid()


async def test_a_large_change_is_written_in_slices_and_published_at_once(database_url: str) -> None:
    knowledge, db, owner = await _knowledge(database_url)
    try:
        kb = await knowledge.create_base(owner, "big")
        faq = "\n".join(f"Q: What does part {i} do?\nA: Part {i} turns valve {i * 7}.\n" for i in range(700))
        [result] = await knowledge.add_documents(kb.id, [("parts.md", parse_text(faq, title="Parts"))])
        assert (result.status, result.chunks, result.embedded) == ("created", 700, 700)
        hits = await knowledge.search(owner, kb.id, "what does part 512 do", k=1, mode="bm25")
        assert hits[0].title == "What does part 512 do?"
        from sqlalchemy import func, select

        from parley.knowledge.plans import PENDING
        from parley.knowledge.schema import Chunk, Document

        async with db.session() as session:
            pending = await session.scalar(select(func.count()).where(Chunk.revision == PENDING))
            status = await session.scalar(select(Document.status))
        assert (pending, status) == (0, "ready")
        other, db2, _ = await _knowledge(database_url)
        try:
            hits = await other.search(owner, kb.id, "what does part 512 do", k=1, mode="bm25")
            assert hits[0].title == "What does part 512 do?"
            assert len(other._indexes[kb.id]) == 700
        finally:
            await db2.close()
    finally:
        await db.close()


def _parts(n: int) -> str:
    return "\n".join(f"Q: What does part {i} do?\nA: Part {i} turns valve {i * 7}.\n" for i in range(n))


async def _revisions(db: Database, kb_id: str) -> tuple[int, int | None, dict[int, int]]:
    """The base's revision and reservation, and its chunk rows counted by revision."""
    from sqlalchemy import func, select

    from parley.knowledge.schema import Chunk, KnowledgeBase

    async with db.session() as session:
        kb = (await session.execute(select(KnowledgeBase).where(KnowledgeBase.id == kb_id))).scalar_one()
        counts = await session.execute(
            select(Chunk.revision, func.count()).where(Chunk.kb_id == kb_id).group_by(Chunk.revision)
        )
        return kb.revision, kb.staging, {int(r): int(n) for r, n in counts}


async def test_publishing_a_staged_change_stamps_one_row_not_every_chunk(database_url: str) -> None:
    from parley.knowledge.plans import plans

    writer, db, owner = await _knowledge(database_url)
    reader, db2, _ = await _knowledge(database_url)
    try:
        kb = await writer.create_base(owner, "big")
        plan = plans(kb.id, [("parts.md", parse_text(_parts(700), title="Parts"))], {}, {})
        stamp = await writer._stage(kb.id, plan, [], None)
        # Written ahead at the revision it reserved, and out of every index until published.
        assert await _revisions(db, kb.id) == (0, 1, {1: 700})
        assert await reader.search(owner, kb.id, "what does part 512 do", k=1, mode="bm25") == []
        fresh, db3, _ = await _knowledge(database_url)  # a process starting now loads none of it
        try:
            assert await fresh.search(owner, kb.id, "what does part 512 do", k=1, mode="bm25") == []
            assert len(fresh._indexes[kb.id]) == 0
        finally:
            await db3.close()
        revision = await writer._publish(kb.id, plan, stamp, [], None)
        await writer._apply(kb.id, revision, plan)
        # The base's revision moved onto the stamp: the rows were not written again.
        assert (revision, await _revisions(db, kb.id)) == (1, (1, None, {1: 700}))
        hits = await reader.search(owner, kb.id, "what does part 512 do", k=1, mode="bm25")
        assert hits[0].title == "What does part 512 do?"
    finally:
        await db.close()
        await db2.close()


async def test_a_write_while_a_change_is_staged_steps_over_its_revision(database_url: str) -> None:
    from parley.knowledge.plans import plans

    writer, db, owner = await _knowledge(database_url)
    other, db2, _ = await _knowledge(database_url)
    reader, db3, _ = await _knowledge(database_url)
    try:
        kb = await writer.create_base(owner, "big")
        plan = plans(kb.id, [("parts.md", parse_text(_parts(700), title="Parts"))], {}, {})
        stamp = await writer._stage(kb.id, plan, [], None)
        # Another process writes meanwhile: its revision skips the reserved one, and readers
        # that catch up past it still skip the staged rows.
        await other.add_document(owner, kb.id, "faq.md", parse_text(FAQ, title="FAQ"))
        revision, staging, counts = await _revisions(db, kb.id)
        assert (revision, staging, counts[1]) == (2, 1, 700)
        hits = await reader.search(owner, kb.id, "what does part 512 do", k=3, mode="bm25")
        assert all(h.document_title == "FAQ" for h in hits)
        assert reader._indexes[kb.id].revision == 2
        # Publishing now re-stamps the rows with a new revision, which every reader catches up to.
        revision = await writer._publish(kb.id, plan, stamp, [], None)
        await writer._apply(kb.id, revision, plan)
        assert revision == 3
        assert (await _revisions(db, kb.id))[:2] == (3, None)
        assert (await _revisions(db, kb.id))[2][3] == 700
        for process in (reader, other, writer):
            hits = await process.search(owner, kb.id, "what does part 512 do", k=1, mode="bm25")
            assert hits[0].title == "What does part 512 do?"
            assert len(process._indexes[kb.id]) == len(writer._indexes[kb.id])
        # A change that fails after staging leaves no rows and no reservation behind.
        again = plans(kb.id, [("more.md", parse_text(_parts(600), title="More"))], {}, {})
        stamp = await writer._stage(kb.id, again, [], None)
        assert (await _revisions(db, kb.id))[1] == stamp == 4
        await writer._unstage(kb.id, again, stamp)
        revision, staging, counts = await _revisions(db, kb.id)
        assert (revision, staging, counts[3]) == (3, None, 700)
        assert stamp not in counts
    finally:
        await db.close()
        await db2.close()
        await db3.close()


async def test_a_restart_clears_what_a_dead_process_staged(database_url: str) -> None:
    """A process that died while staging left rows at its reserved revision, a ``processing``
    document and the reservation: the next start removes the rows, fails the document and
    releases the revision, so the next large change publishes in one row again."""
    from sqlalchemy import select, update

    from parley.knowledge.jobs import STALE_SECONDS, Jobs
    from parley.knowledge.plans import plans
    from parley.knowledge.schema import Document
    from parley.store.schema import now

    dead, db, owner = await _knowledge(database_url)
    try:
        kb = await dead.create_base(owner, "big")
        await dead.add_document(owner, kb.id, "faq.md", parse_text(FAQ, title="FAQ"))
        plan = plans(kb.id, [("parts.md", parse_text(_parts(700), title="Parts"))], {}, {})
        stamp = await dead._stage(kb.id, plan, [], None)  # ... and the process dies here
        async with db.transaction() as session:
            await session.execute(update(Document).values(updated_at=now() - 2 * STALE_SECONDS))
        restarted, db2, _ = await _knowledge(database_url)
        try:
            await Jobs(restarted).start()
            _, staging, counts = await _revisions(db, kb.id)
            assert (staging, stamp in counts, counts.get(1, 0) > 0) == (None, False, True)  # the FAQ stays
            async with db.session() as session:
                status = dict((await session.execute(select(Document.source, Document.status))).all())
            assert status == {"faq.md": "ready", "parts.md": "failed"}
        finally:
            await db2.close()
    finally:
        await db.close()


async def test_the_model_loads_while_the_server_starts(database_url: str) -> None:
    knowledge, db, _ = await _knowledge(database_url)
    try:
        assert knowledge._warming is not None
        await knowledge._warming  # no upload or search has asked for it
        assert knowledge._embedder is not None
    finally:
        await knowledge.close()
        await db.close()
