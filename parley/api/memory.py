"""What the assistant remembers about the caller: ``/v1/memory``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import StrictBool

from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.schemas import Body, iso
from parley.memory import MemoryFact

router = APIRouter(prefix="/v1/memory", tags=["memory"])


class MemorySettingsUpdate(Body):
    enabled: StrictBool


def fact_json(fact: MemoryFact) -> dict[str, Any]:
    return {
        "id": fact.id,
        "object": "memory.fact",
        "kind": fact.kind,
        "key": fact.key,
        "value": fact.value,
        "text": fact.text,
        "message_id": fact.message_id,
        "thread_id": fact.thread_id,
        "created_at": iso(fact.created_at),
        "updated_at": iso(fact.updated_at),
    }


async def _settings_json(parley: ParleyDep, user_id: int) -> dict[str, Any]:
    memory = parley.context.memory
    return {
        "object": "memory.settings",
        "enabled": await memory.user_enabled(user_id),
        "server_enabled": memory.enabled,
    }


@router.get("")
async def list_(
    parley: ParleyDep,
    principal: PrincipalDep,
    limit: int = Query(100, ge=1, le=500),
    before: str | None = Query(None, description="Last fact id of the previous page."),
) -> dict[str, Any]:
    """The facts remembered about the caller, newest first, each linked to the message it came from."""
    facts, has_more = await parley.context.memory.page(principal, limit=limit, before=before)
    return {"object": "list", "data": [fact_json(f) for f in facts], "has_more": has_more}


@router.delete("", status_code=204)
async def forget_all(parley: ParleyDep, principal: PrincipalDep) -> Response:
    """Forget everything remembered about the caller."""
    await parley.context.memory.forget_all(principal)
    return Response(status_code=204)


@router.get("/settings")
async def read_settings(parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    return await _settings_json(parley, principal.user_id)


@router.patch("/settings")
async def update_settings(
    body: MemorySettingsUpdate, parley: ParleyDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Turn memory on or off for the caller: off, nothing is learned and nothing is recalled."""
    await parley.context.memory.set_enabled(principal, body.enabled)
    return await _settings_json(parley, principal.user_id)


@router.delete("/{fact_id}", status_code=204)
async def forget(fact_id: str, parley: ParleyDep, principal: PrincipalDep) -> Response:
    """Forget one fact. Only its owner can; for anyone else it does not exist (404)."""
    await parley.context.memory.forget(principal, fact_id)
    return Response(status_code=204)
