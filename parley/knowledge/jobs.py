"""Ingest jobs: a large document or a batch of files, ingested after the request is answered.

A job is a row in ``kb_jobs`` (readable from any process: ``GET …/jobs/{id}``) and an asyncio
task in the process that received the files, which does only I/O itself: parsing runs in the
worker processes, embedding and index updates in the worker threads (``Workers``). A large
document is visible from the start as ``processing`` with a percentage; a batch reports the
files done. Progress is written at most twice a second.

A job interrupted by a restart is marked ``failed`` at the next start (its files were
temporary); sending them again skips every document already ingested.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import delete, or_, select, update

from parley.errors import not_found
from parley.knowledge.bases import BATCH, Knowledge
from parley.knowledge.ingest import ParsedDocument, UnreadableDocument, parse_file
from parley.knowledge.plans import PENDING, Ingested
from parley.knowledge.schema import Chunk, Document, Job, KnowledgeBase
from parley.store.schema import new_id, now
from parley.users import Principal

log = structlog.get_logger(__name__)

#: Seconds between two progress writes of one job.
PROGRESS_EVERY = 0.5
#: A running job whose progress is older than this at a start was left by a stopped process.
STALE_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Upload:
    """A file waiting to be ingested: its source in the base, where it is, the name to parse it as."""

    source: str
    path: Path
    name: str
    title: str | None = None


class Jobs:
    def __init__(self, knowledge: Knowledge) -> None:
        self.knowledge = knowledge
        self.db = knowledge.db
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Jobs left running by a process that stopped will not finish: say so (a running job
        writes its progress every few seconds; one silent for ``STALE_SECONDS`` is gone)."""
        stale = now() - STALE_SECONDS
        async with self.db.transaction() as session:
            await session.execute(
                update(Job)
                .where(Job.status == "running", Job.updated_at < stale)
                .values(
                    status="failed", error="interrupted by a restart; send the files again", updated_at=now()
                )
            )
            stuck = select(Document.id).where(Document.status == "processing", Document.updated_at < stale)
            # Their rows written ahead: pending, or at the revision their change reserved.
            reserved = select(KnowledgeBase.staging).where(KnowledgeBase.id == Chunk.kb_id).scalar_subquery()
            await session.execute(
                delete(Chunk).where(
                    Chunk.document_id.in_(stuck), or_(Chunk.revision == PENDING, Chunk.revision == reserved)
                )
            )
            # A reservation is released when no change into its base is still live.
            live = select(Document.kb_id).where(Document.status == "processing", Document.updated_at >= stale)
            await session.execute(
                update(KnowledgeBase)
                .where(
                    KnowledgeBase.staging.is_not(None),
                    KnowledgeBase.id.in_(select(Document.kb_id).where(Document.id.in_(stuck))),
                    KnowledgeBase.id.not_in(live),
                )
                .values(staging=None)
            )
            await session.execute(
                update(Document)
                .where(Document.status == "processing", Document.updated_at < stale)
                .values(status="failed", error="interrupted by a restart; upload it again", updated_at=now())
            )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait(self) -> None:
        """Until every job of this process has ended (tests, the CLI)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def get(self, principal: Principal, kb_id: str, job_id: str) -> Job:
        await self.knowledge.get_base(principal, kb_id)
        async with self.db.session() as session:
            job = await session.scalar(select(Job).where(Job.id == job_id, Job.kb_id == kb_id))
        if job is None:
            raise not_found("job", job_id)
        return job

    # -- one large document ----------------------------------------------------------

    async def document(
        self, principal: Principal, kb_id: str, upload: Upload, *, cleanup: Path | None = None
    ) -> tuple[Job, Document]:
        """Show the document as ``processing`` now; ingest it in the background."""
        await self.knowledge.get_base(principal, kb_id)
        async with self.db.transaction() as session:
            doc = await session.scalar(
                select(Document).where(Document.kb_id == kb_id, Document.source == upload.source)
            )
            created = doc is None
            if doc is None:
                doc = Document(
                    id=new_id("doc"),
                    kb_id=kb_id,
                    source=upload.source,
                    title=(upload.title or Path(upload.source).stem or upload.source)[:300],
                    format="text",
                    sha256="",
                    size=upload.path.stat().st_size,
                    chunk_count=0,
                    created_at=now(),
                    updated_at=now(),
                    status="processing",
                    progress=0,
                )
                session.add(doc)
            else:
                doc.status, doc.progress, doc.error = "processing", 0, None
            job = Job(id=new_id("job"), kb_id=kb_id, user_id=principal.user_id, total=1, status="running")
            session.add(job)
        self._spawn(self._document(job.id, kb_id, doc.id, upload, cleanup, created))
        return job, doc

    async def _document(
        self, job_id: str, kb_id: str, doc_id: str, upload: Upload, cleanup: Path | None, created: bool
    ) -> None:
        reporter = _Reporter(self, job_id, doc_id)
        try:
            parsed = await self.knowledge.workers.cpu(parse_file, str(upload.path), upload.name, upload.title)
            await reporter.report(0.1)

            async def embedding(fraction: float) -> None:
                await reporter.report(0.1 + 0.85 * fraction)

            [result] = await self.knowledge.add_documents(
                kb_id, [(upload.source, parsed)], progress=embedding
            )
            if created and result.status == "updated":  # it was only a placeholder
                result.status = "created"
            await self._finish(job_id, [_result(upload.source, result)], done=1, doc_id=doc_id)
        except UnreadableDocument as exc:
            await self._fail(job_id, doc_id, exc.reason, [_skipped(upload.source, exc.reason)])
        except asyncio.CancelledError:
            await asyncio.shield(
                self._fail(job_id, doc_id, "the server stopped before the document was ingested")
            )
            raise
        except Exception as exc:
            log.exception("ingest_job_failed", job=job_id)
            await self._fail(job_id, doc_id, f"{type(exc).__name__}: {exc}")
        finally:
            _remove(cleanup or upload.path)

    # -- a batch of files ---------------------------------------------------------------

    async def batch(
        self,
        principal: Principal,
        kb_id: str,
        uploads: Sequence[Upload],
        *,
        skipped: Sequence[tuple[str, str]] = (),
        cleanup: Path | None = None,
    ) -> Job:
        await self.knowledge.get_base(principal, kb_id)
        results = [_skipped(source, reason) for source, reason in skipped]
        job = Job(
            id=new_id("job"),
            kb_id=kb_id,
            user_id=principal.user_id,
            total=len(uploads) + len(skipped),
            done=len(skipped),
            status="running",
            results=json.dumps(results),
        )
        async with self.db.transaction() as session:
            session.add(job)
        self._spawn(self._batch(job.id, kb_id, list(uploads), results, cleanup))
        return job

    async def _batch(
        self,
        job_id: str,
        kb_id: str,
        uploads: list[Upload],
        results: list[dict[str, Any]],
        cleanup: Path | None,
    ) -> None:
        reporter = _Reporter(self, job_id, None)
        total = len(uploads) + len(results)
        try:
            await ingest_uploads(self.knowledge, kb_id, uploads, results, reporter, total)
            await self._finish(job_id, results, done=total)
        except asyncio.CancelledError:
            await asyncio.shield(
                self._fail(job_id, None, "the server stopped before the batch was ingested", results)
            )
            raise
        except Exception as exc:
            log.exception("ingest_job_failed", job=job_id)
            await self._fail(job_id, None, f"{type(exc).__name__}: {exc}", results)
        finally:
            for upload in uploads:
                _remove(upload.path)
            if cleanup is not None:
                _remove(cleanup)

    # -- bookkeeping ----------------------------------------------------------------------

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def progress(
        self, job_id: str, doc_id: str | None, fraction: float, done: int | None = None
    ) -> None:
        percent = max(0, min(99, int(fraction * 100)))
        async with self.db.transaction() as session:
            values: dict[str, Any] = {"progress": percent, "updated_at": now()}
            if done is not None:
                values["done"] = done
            await session.execute(update(Job).where(Job.id == job_id).values(**values))
            if doc_id is not None:
                await session.execute(
                    update(Document)
                    .where(Document.id == doc_id, Document.status == "processing")
                    .values(progress=percent, updated_at=now())
                )

    async def _finish(
        self, job_id: str, results: list[dict[str, Any]], *, done: int, doc_id: str | None = None
    ) -> None:
        async with self.db.transaction() as session:
            if doc_id is not None:  # an unchanged document was written by no one
                await session.execute(
                    update(Document)
                    .where(Document.id == doc_id, Document.status == "processing")
                    .values(status="ready", progress=100, error=None)
                )
            await session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    status="completed", progress=100, done=done, results=json.dumps(results), updated_at=now()
                )
            )

    async def _fail(
        self, job_id: str, doc_id: str | None, error: str, results: list[dict[str, Any]] | None = None
    ) -> None:
        async with self.db.transaction() as session:
            values: dict[str, Any] = {"status": "failed", "error": error, "updated_at": now()}
            if results is not None:
                values["results"] = json.dumps(results)
            await session.execute(update(Job).where(Job.id == job_id).values(**values))
            if doc_id is not None:
                await session.execute(
                    update(Document)
                    .where(Document.id == doc_id, Document.status == "processing")
                    .values(status="failed", error=error, updated_at=now())
                )


class _Reporter:
    """Writes a job's progress, at most every ``PROGRESS_EVERY`` seconds."""

    def __init__(self, jobs: Jobs, job_id: str, doc_id: str | None) -> None:
        self.jobs, self.job_id, self.doc_id = jobs, job_id, doc_id
        self._last = 0.0

    async def report(self, fraction: float, done: int | None = None) -> None:
        if time.monotonic() - self._last < PROGRESS_EVERY:
            return
        self._last = time.monotonic()
        await self.jobs.progress(self.job_id, self.doc_id, fraction, done)


async def ingest_uploads(
    knowledge: Knowledge,
    kb_id: str,
    uploads: Sequence[Upload],
    results: list[dict[str, Any]],
    reporter: _Reporter | None,
    total: int,
) -> None:
    """Parse ``uploads`` in the worker pool and add them ``BATCH`` at a time; a file that cannot be
    read is recorded in ``results`` as skipped and the rest go on."""
    for start in range(0, len(uploads), BATCH):
        group = uploads[start : start + BATCH]
        parsed = await asyncio.gather(
            *(knowledge.workers.cpu(parse_file, str(u.path), u.name, u.title) for u in group),
            return_exceptions=True,
        )
        ready: list[tuple[str, ParsedDocument]] = []
        for upload, outcome in zip(group, parsed, strict=True):
            if isinstance(outcome, UnreadableDocument):
                results.append(_skipped(upload.source, outcome.reason))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                ready.append((upload.source, outcome))
        for (source, _), result in zip(ready, await knowledge.add_documents(kb_id, ready), strict=True):
            results.append(_result(source, result))
        if reporter is not None:
            await reporter.report(len(results) / max(1, total), done=len(results))


def _result(source: str, result: Ingested) -> dict[str, Any]:
    return {
        "source": source,
        "status": result.status,
        "document": result.document.id,
        "chunks": result.chunks,
        "embedded": result.embedded,
        "error": None,
    }


def _skipped(source: str, reason: str) -> dict[str, Any]:
    return {
        "source": source,
        "status": "skipped",
        "document": None,
        "chunks": 0,
        "embedded": 0,
        "error": reason,
    }


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
