"""Health, readiness, metrics and the assistants list."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from parley.api.deps import ParleyDep, PrincipalDep
from parley.errors import ApiError, documented_error

router = APIRouter(tags=["system"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(parley: ParleyDep) -> Response:
    checks: dict[str, str] = {}
    try:
        async with parley.db.session() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    checks["executor"] = "ok" if parley.ready else "starting"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={403: documented_error("The caller is not an administrator.")},
)
async def metrics(parley: ParleyDep, principal: PrincipalDep) -> Response:
    """Prometheus metrics, for administrators: routes, users' activity and error rates are not
    for anyone who can reach the port (on a loopback install the local user is one)."""
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "metrics are for administrators: scrape with an admin API key")
    return Response(parley.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/assistants", tags=["assistants"])
async def assistants(parley: ParleyDep, _: PrincipalDep) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "name": a.name,
                "description": a.description,
                "model": parley.assistants.route_of(a),
                "tools": a.tools,
                "knowledge_bases": a.knowledge_bases,
                "examples": a.examples,
            }
            for a in parley.assistants.all()
        ],
    }
