"""``GET /v1/me``: who the caller is, and what is left of their budget and storage."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from parley.api.deps import ParleyDep, PrincipalDep
from parley.budgets import standing_json

router = APIRouter(tags=["account"])


@router.get("/v1/me")
async def me(parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    async with parley.db.read() as reader:
        standing = await parley.budgets.standing(reader.first, principal.user_id)
    return {
        "object": "account",
        "user": {"id": principal.user_id, "name": principal.name, "is_admin": principal.is_admin},
        "key_id": principal.key_id,
        "budget": standing_json(standing),
        "storage": {
            "used_bytes": await parley.files.used_bytes(principal.user_id),
            "quota_bytes": parley.files.quota_bytes,
        },
    }
