"""Feedback on answers: ``POST /v1/messages/{id}/feedback``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import Field, StrictInt, field_validator

from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.schemas import Body, iso
from parley.feedback import Feedback, rate

router = APIRouter(tags=["feedback"])


class FeedbackIn(Body):
    rating: StrictInt = Field(
        description="1 (thumbs up) or -1 (thumbs down).", json_schema_extra={"enum": [1, -1]}
    )
    comment: str | None = Field(default=None, max_length=2000)

    @field_validator("rating")
    @classmethod
    def _thumb(cls, value: int) -> int:
        if value not in (1, -1):
            raise ValueError("rating must be 1 (thumbs up) or -1 (thumbs down)")
        return value


def feedback_json(feedback: Feedback) -> dict[str, Any]:
    return {
        "object": "feedback",
        "message_id": feedback.message_id,
        "run_id": feedback.run_id,
        "rating": feedback.rating,
        "comment": feedback.comment,
        "created_at": iso(feedback.created_at),
        "updated_at": iso(feedback.updated_at),
    }


@router.post(
    "/v1/messages/{message_id}/feedback",
    status_code=201,
    responses={200: {"description": "A previous rating of this message was replaced."}},
)
async def give(message_id: str, body: FeedbackIn, parley: ParleyDep, principal: PrincipalDep) -> JSONResponse:
    feedback, created = await rate(parley.db, principal, message_id, body.rating, body.comment)
    return JSONResponse(feedback_json(feedback), status_code=201 if created else 200)
