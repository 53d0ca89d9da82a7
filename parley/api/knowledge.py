"""Knowledge bases: ``/v1/knowledge-bases``, their documents, and search."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field, ValidationError

from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.schemas import Body, iso
from parley.errors import ApiError, documented_error
from parley.knowledge.bases import Ingested
from parley.knowledge.ingest import UnreadableDocument, parse_received, parse_text
from parley.knowledge.schema import Document, KnowledgeBase
from parley.knowledge.search import Mode
from parley.uploads import parse_received as within_limits
from parley.uploads import receive

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
        "created_at": iso(doc.created_at),
        "updated_at": iso(doc.updated_at),
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
async def add_document(kb_id: str, request: Request, parley: ParleyDep, principal: PrincipalDep) -> Response:
    """Add or update a document: JSON ``{"title", "text"}`` or a multipart ``file`` (Markdown, text, PDF)."""
    await parley.knowledge.get_base(principal, kb_id)
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("multipart/form-data"):
            limit = parley.settings.knowledge_max_upload_bytes
            received = await receive(
                request, parley.files.directory, max_bytes=limit, quota_left=limit, accepted=DOCUMENT_KINDS
            )
            try:
                source, parsed = received.name, await within_limits(parse_received, received)
            finally:
                received.discard()
        else:
            try:
                body = DocumentCreate.model_validate_json(await request.body())
            except ValidationError as exc:
                if any(e["type"] == "json_invalid" for e in exc.errors()):
                    raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
                raise ApiError(422, "invalid_request", _describe(exc)) from None
            parsed = parse_text(body.text, title=body.title, markdown=body.format == "markdown")
            source = body.source or body.title
    except UnreadableDocument as exc:
        status = 415 if exc.unsupported else 422
        raise ApiError(status, exc.code, exc.reason) from None
    result = await parley.knowledge.add_document(principal, kb_id, source, parsed)
    return _ingested(result)


def _ingested(result: Ingested) -> Response:
    from fastapi.responses import JSONResponse

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
    hits = await parley.knowledge.search(principal, kb_id, q, mode=mode, k=k, document=document)
    return {"object": "list", "mode": mode, "data": [h.json() for h in hits]}
