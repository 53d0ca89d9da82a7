"""Files: ``POST /v1/files`` (multipart upload), ``GET /v1/files[/{id}]``, ``DELETE /v1/files/{id}``.

The upload endpoint reads the request body itself (``parley.uploads``) instead of letting
the framework spool the whole form first: limits apply while the bytes arrive, and the
caller is authenticated and rate-limited before any are read.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response

from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.schemas import iso
from parley.errors import documented_error
from parley.files import File
from parley.ratelimit import rate_class

router = APIRouter(prefix="/v1/files", tags=["files"])

PREVIEW_CHARS = 500

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "thread_id": {"type": "string", "description": "Attach the file to this thread."},
                    },
                }
            }
        },
    }
}


UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: documented_error("The file is over the size limit or the user's quota."),
    415: documented_error("Not an allowed type (txt, md, csv, json, pdf, png, jpg)."),
}


def file_json(file: File) -> dict[str, Any]:
    return {
        "id": file.id,
        "object": "file",
        "name": file.name,
        "kind": file.kind,
        "media_type": file.media_type,
        "size": file.size,
        "sha256": file.sha256,
        "thread_id": file.thread_id,
        "text_chars": len(file.text) if file.text is not None else None,
        "preview": file.text[:PREVIEW_CHARS] if file.text is not None else None,
        "meta": file.meta,
        "created_at": iso(file.created_at),
    }


@router.post(
    "",
    status_code=201,
    openapi_extra=UPLOAD_BODY,
    responses=UPLOAD_RESPONSES,
)
@rate_class("uploads")
async def upload(request: Request, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    return file_json(await parley.files.upload(request, principal))


@router.get("")
async def list_(
    parley: ParleyDep,
    principal: PrincipalDep,
    limit: int = Query(50, ge=1, le=200),
    thread_id: str | None = Query(None, max_length=40),
) -> dict[str, Any]:
    files = await parley.files.list(principal, limit=limit, thread_id=thread_id)
    return {"object": "list", "data": [file_json(f) for f in files]}


@router.get("/{file_id}")
async def read(file_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    return file_json(await parley.files.get(principal, file_id))


@router.delete("/{file_id}", status_code=204)
async def delete(file_id: str, parley: ParleyDep, principal: PrincipalDep) -> Response:
    await parley.files.delete(principal, file_id)
    return Response(status_code=204)
