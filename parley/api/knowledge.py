"""Knowledge bases: ``/v1/knowledge-bases``, their documents, and search."""

from __future__ import annotations

import asyncio
import json
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError

from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.schemas import Body, iso
from parley.errors import ApiError, documented_error
from parley.knowledge.batch import Limits, receive_batch, unpack
from parley.knowledge.ingest import UnreadableDocument, parse_file, parse_text
from parley.knowledge.jobs import Upload
from parley.knowledge.plans import Ingested
from parley.knowledge.schema import Document, Job, KnowledgeBase
from parley.knowledge.search import Mode
from parley.ratelimit import rate_class
from parley.uploads import PARSE_TIMEOUT_SECONDS, receive

#: What a knowledge document may be; the rest of the upload policy is every route's.
DOCUMENT_KINDS = ("txt", "md", "pdf")

router = APIRouter(prefix="/v1/knowledge-bases", tags=["knowledge"])

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")]


class KnowledgeBaseCreate(Body):
    name: Name
    description: str = Field(default="", max_length=2000)


class DocumentCreate(Body):
    title: str = Field(min_length=1, max_length=300)
    text: str = Field(min_length=1)
    format: str = Field(default="markdown", pattern="^(markdown|text)$")
    source: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="Identity in the knowledge base; default: the title.",
    )


def kb_json(kb: KnowledgeBase, documents: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": kb.id,
        "object": "knowledge_base",
        "name": kb.name,
        "description": kb.description,
        "revision": kb.revision,
        "created_at": iso(kb.created_at),
        "updated_at": iso(kb.updated_at),
    }
    if documents is not None:
        out["documents"] = documents
    return out


def document_json(doc: Document) -> dict[str, Any]:
    return {
        "id": doc.id,
        "object": "document",
        "knowledge_base": doc.kb_id,
        "source": doc.source,
        "title": doc.title,
        "format": doc.format,
        "sha256": doc.sha256,
        "size": doc.size,
        "chunks": doc.chunk_count,
        "status": doc.status,
        "progress": doc.progress,
        "error": doc.error,
        "created_at": iso(doc.created_at),
        "updated_at": iso(doc.updated_at),
    }


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "object": "knowledge_job",
        "knowledge_base": job.kb_id,
        "status": job.status,
        "total": job.total,
        "done": job.done,
        "progress": job.progress,
        "results": json.loads(job.results or "[]"),
        "error": job.error,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
    }


@router.post(
    "",
    status_code=201,
    responses={409: documented_error("You already have a knowledge base with that name.")},
)
async def create(body: KnowledgeBaseCreate, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    return kb_json(await parley.knowledge.create_base(principal, body.name, body.description), 0)


@router.get("")
async def list_(parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    bases = await parley.knowledge.list_bases(principal)
    return {"object": "list", "data": [kb_json(kb, n) for kb, n in bases]}


@router.get("/{kb_id}")
async def read(kb_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    return kb_json(await parley.knowledge.get_base(principal, kb_id))


@router.delete("/{kb_id}", status_code=204)
async def delete(kb_id: str, parley: ParleyDep, principal: PrincipalDep) -> Response:
    await parley.knowledge.delete_base(principal, kb_id)
    return Response(status_code=204)


@router.get("/{kb_id}/documents")
async def documents(kb_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    docs = await parley.knowledge.list_documents(principal, kb_id)
    return {"object": "list", "data": [document_json(d) for d in docs]}


@router.post(
    "/{kb_id}/documents",
    status_code=201,
    responses={
        200: {"description": "The document was already there with the same content."},
        202: {
            "description": "A large file: the document is `processing`; the job (`job`) reports progress "
            "at `GET /v1/knowledge-bases/{kb_id}/jobs/{job_id}`."
        },
        415: documented_error("The file's type is not one Parley can read (Markdown, text, PDF)."),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": DocumentCreate.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "title": {"type": "string", "maxLength": 300},
                        },
                    }
                },
            },
        }
    },
)
@rate_class("ingest")
async def add_document(kb_id: str, request: Request, parley: ParleyDep, principal: PrincipalDep) -> Response:
    """Add or update a document: JSON ``{"title", "text"}`` or a multipart ``file`` (Markdown, text, PDF).

    A file of ``PARLEY_KNOWLEDGE_JOB_BYTES`` or more is ingested as a job: 202 at once."""
    await parley.knowledge.get_base(principal, kb_id)
    content_type = request.headers.get("content-type", "")
    workers = parley.knowledge.workers
    try:
        if content_type.startswith("multipart/form-data"):
            limit = parley.settings.knowledge_max_upload_bytes
            received = await receive(
                request, parley.files.directory, max_bytes=limit, quota_left=limit, accepted=DOCUMENT_KINDS
            )
            title = received.fields.get("title", "").strip()[:300] or None
            upload = Upload(
                received.name, received.path, f"{PurePosixPath(received.name).stem}.{received.kind}", title
            )
            if received.size >= parley.settings.knowledge_job_bytes:
                job, doc = await parley.jobs.document(principal, kb_id, upload)
                return JSONResponse({**document_json(doc), "job": job_json(job)}, status_code=202)
            try:
                source = received.name
                parsed = await _within_time(workers.cpu(parse_file, str(upload.path), upload.name, title))
            finally:
                received.discard()
        else:
            try:
                body = DocumentCreate.model_validate_json(await request.body())
            except ValidationError as exc:
                if any(e["type"] == "json_invalid" for e in exc.errors()):
                    raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
                raise ApiError(422, "invalid_request", _describe(exc)) from None
            parsed = await _within_time(
                workers.cpu(parse_text, body.text, title=body.title, markdown=body.format == "markdown")
            )
            source = body.source or body.title
    except UnreadableDocument as exc:
        status = 415 if exc.unsupported else 422
        raise ApiError(status, exc.code, exc.reason) from None
    result = await parley.knowledge.add_document(principal, kb_id, source, parsed)
    return _ingested(result)


async def _within_time(parsing: Any) -> Any:
    try:
        return await asyncio.wait_for(parsing, timeout=PARSE_TIMEOUT_SECONDS)
    except TimeoutError:
        raise ApiError(422, "file_too_complex", "the file took too long to read and was refused") from None


@router.post(
    "/{kb_id}/documents/batch",
    status_code=202,
    responses={
        202: {"description": "The files were received; the job reports each one's outcome."},
        413: documented_error("A file, an archive member or the whole batch is over its limit."),
        415: documented_error("A file's type is not one Parley can read (Markdown, text, PDF, zip, tar)."),
        422: documented_error(
            "An archive is unreadable or unsafe (links, paths out of it), or a name is bad."
        ),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                        },
                    }
                }
            },
        }
    },
)
@rate_class("ingest")
async def add_documents(kb_id: str, request: Request, parley: ParleyDep, principal: PrincipalDep) -> Response:
    """Add or update many documents in one request: several multipart ``file`` parts (Markdown, text,
    PDF) and/or zip or tar archives of them. Answers 202 with a job; each file's outcome is in its
    ``results`` once done. A document's identity is its file name, or its path inside an archive."""
    await parley.knowledge.get_base(principal, kb_id)
    settings = parley.settings
    limits = Limits(settings.knowledge_max_upload_bytes, settings.knowledge_max_batch_bytes, DOCUMENT_KINDS)
    batch = await receive_batch(request, parley.files.directory, limits)
    try:
        await parley.knowledge.workers.thread(unpack, batch, limits)
        uploads = [_upload(source, path) for source, path in batch.files]
        job = await parley.jobs.batch(
            principal, kb_id, uploads, skipped=batch.skipped, cleanup=batch.directory
        )
    except BaseException:
        batch.discard()
        raise
    return JSONResponse(job_json(job), status_code=202)


def _upload(source: str, path: Any) -> Upload:
    """Parsed as the kind its name says (already checked against its content)."""
    return Upload(source, path, PurePosixPath(source).name)


@router.get("/{kb_id}/jobs/{job_id}")
async def job(kb_id: str, job_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    """An ingest job: ``running`` with its ``progress`` (percent) and files ``done``, then
    ``completed`` with one result per file, or ``failed`` with its ``error``."""
    return job_json(await parley.jobs.get(principal, kb_id, job_id))


def _ingested(result: Ingested) -> Response:
    body = {**document_json(result.document), "status": result.status, "embedded": result.embedded}
    return JSONResponse(body, status_code=200 if result.status == "unchanged" else 201)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts)


@router.delete("/{kb_id}/documents/{document_id}", status_code=204)
async def delete_document(
    kb_id: str, document_id: str, parley: ParleyDep, principal: PrincipalDep
) -> Response:
    await parley.knowledge.delete_document(principal, kb_id, document_id)
    return Response(status_code=204)


@router.get("/{kb_id}/search")
async def search(
    kb_id: str,
    parley: ParleyDep,
    principal: PrincipalDep,
    q: str = Query(min_length=1, max_length=2000, description="The query."),
    mode: Mode = Query("hybrid", description="hybrid (BM25 + dense, fused), bm25 or dense."),
    k: int = Query(10, ge=1, le=100),
    document: str | None = Query(None, max_length=40, description="Only this document's chunks."),
) -> dict[str, Any]:
    hits, ran = await parley.knowledge.search_with_mode(
        principal, kb_id, q, mode=mode, k=k, document=document
    )
    return {"object": "list", "mode": ran, "data": [h.json() for h in hits]}
