"""Usage analytics: ``GET /v1/usage``."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from fastapi import APIRouter, Query

from parley.api.deps import ParleyDep, PrincipalDep
from parley.errors import ApiError, not_found
from parley.usage import DIMENSIONS, Dimension, usage_report

router = APIRouter(tags=["usage"])

MAX_DAYS = 366


def _moment(value: str, name: str, *, end: bool) -> float:
    """A date (``2026-01-31``: the whole day) or an ISO 8601 date-time (UTC unless it says otherwise)."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value) + timedelta(days=1 if end else 0)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise ApiError(
            422, "invalid_request", f"{name}: expected a date (YYYY-MM-DD) or an ISO 8601 time"
        ) from None
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):
        raise ApiError(422, "invalid_request", f"{name}: out of range") from None


@router.get("/v1/usage")
async def usage(
    parley: ParleyDep,
    principal: PrincipalDep,
    from_: str | None = Query(
        None, alias="from", max_length=40, description="Start (inclusive); default 30 days ago."
    ),
    to: str | None = Query(
        None, max_length=40, description="End: a date includes that whole day; default now."
    ),
    group_by: str = Query("day", max_length=60, description="Comma-separated: user, assistant, model, day."),
    user: int | None = Query(None, ge=1, le=2**31 - 1, description="Only this user's runs (administrators)."),
) -> dict[str, Any]:
    until = _moment(to, "to", end=True) if to else time.time()
    since = _moment(from_, "from", end=False) if from_ else until - 30 * 86400
    if since < 0:
        raise ApiError(422, "invalid_request", "from must be in 1970 or later")
    if since >= until:
        raise ApiError(422, "invalid_request", "from must be before to")
    if until - since > MAX_DAYS * 86400:
        raise ApiError(422, "invalid_request", f"the range is limited to {MAX_DAYS} days")
    dimensions = [d.strip() for d in group_by.split(",") if d.strip()]
    unknown = [d for d in dimensions if d not in DIMENSIONS]
    if unknown or len(set(dimensions)) != len(dimensions):
        raise ApiError(
            422, "invalid_request", f"group_by takes distinct values among {', '.join(DIMENSIONS)}"
        )
    if user is not None and not principal.is_admin and user != principal.user_id:
        raise not_found("user", user)
    report = await usage_report(
        parley.db,
        principal,
        since=since,
        until=until,
        group_by=cast(list[Dimension], dimensions),
        user_id=user,
    )
    return {
        "from": datetime.fromtimestamp(since, UTC).isoformat().replace("+00:00", "Z"),
        "to": datetime.fromtimestamp(until, UTC).isoformat().replace("+00:00", "Z"),
        **report,
    }
