"""JSON errors: ``{"error": {"code", "message"}}`` with a proper status, for every failure."""

from __future__ import annotations

import re
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = structlog.get_logger(__name__)


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


#: The JSON schema of every error answer: ``{"error": {"code", "message"}}``.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def documented_error(description: str) -> dict[str, Any]:
    """An error answer for a route's OpenAPI ``responses`` (JSON even on streaming routes)."""
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


#: The error answers any API route may give, for the OpenAPI schema.
RESPONSES: dict[int | str, dict[str, Any]] = {
    400: documented_error("Malformed request (e.g. invalid JSON)."),
    401: documented_error("Missing, invalid or revoked API key."),
    404: documented_error("No such object (or not yours)."),
    413: documented_error("Request body too large."),
    422: documented_error("The request is well-formed but invalid."),
    429: documented_error("Rate limit or token budget exceeded; see Retry-After."),
}


def not_found(kind: str, ident: object) -> ApiError:
    return ApiError(404, "not_found", f"{kind} {ident} not found")


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _describe(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def describe_validation(errors: list[Any]) -> tuple[int, str, str]:
    """A request validation failure's status, code and message: 400 for JSON that does not parse."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "invalid_json", "the request body is not valid JSON"
    return 422, "invalid_request", _describe(errors)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        status, code, message = describe_validation(errors)
        extra = {"details": _jsonable(errors)} if status == 422 else {}
        return JSONResponse(error_body(code, message, **extra), status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error"
        )
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route of the path only; a path served by
            # several routes (GET and POST /v1/threads) takes every one of their methods.
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(error_body(code, message), exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", error=type(exc).__name__)
        return JSONResponse(error_body("internal_error", "an unexpected error occurred"), 500)


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """The methods of the request's path: its documented operations (a literal path before a
    template: ``/v1/memory/settings``, not ``/v1/memory/{fact_id}``), else whatever routes
    fully answer it."""
    path = request.scope["path"]
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    item = paths.get(path)
    if item is None:
        # The templates that match, the most literal first (``.../documents/batch`` before
        # ``.../documents/{document_id}``), as the routes are meant to be read.
        matching = [
            (template.count("{"), candidate)
            for template, candidate in paths.items()
            if "{" in template and re.fullmatch(re.sub(r"\{[^/]+?\}", "[^/]+", template), path)
        ]
        fewest = min((params for params, _ in matching), default=0)
        for params, candidate in matching:
            if params == fewest:
                item = {**(item or {}), **candidate}
    if item:
        return sorted(m.upper() for m in item if m.upper() in _METHODS)
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


def _jsonable(errors: list[Any]) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
