"""Seed 004's API (FAQ support bot), as documented in its README.

``POST /api/v1/ask`` ``{"question", "context_method"?}`` → ``{"answer", "question_id",
"timestamp", "processing_time"}``: the question becomes a run of the ``support`` assistant
on a new thread, and the answer is that run's output. ``GET /api/v1/history?n=&search=``
→ ``{"entries", "count", "total"}``, the caller's answered questions, newest first.
Errors: 400 for a question too short or too long, 422 for other invalid input, 503 when
no model is available.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field
from sqlalchemy import Float, ForeignKey, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, mapped_column

from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.schemas import Body, iso
from parley.errors import ApiError
from parley.providers.base import ProviderError
from parley.providers.registry import UnknownProvider
from parley.runs.lifecycle import NewRun
from parley.store.schema import Base, Run, now
from parley.threads import create_thread

router = APIRouter(prefix="/api/v1", tags=["compat: faq support bot (seed 004)"])

ASSISTANT = "support"
MIN_QUESTION, MAX_QUESTION = 3, 1000


class AskedQuestion(Base):
    """The seed's question log: integer ids over the runs that answered."""

    __tablename__ = "faq_questions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[str] = mapped_column(String(40), ForeignKey("runs.id", ondelete="CASCADE"))
    question: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class AskIn(Body):
    question: str
    context_method: Literal["keyword", "all"] = Field(
        default="keyword",
        description="keyword: the entries relevant to the question (hybrid search); all: the first entries.",
    )


def _processing_ms(run: Run) -> int:
    end = run.finished_at or now()
    return round((end - run.created_at) * 1000)


@router.post("/ask")
async def ask(body: AskIn, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    question = body.question.strip()
    if not MIN_QUESTION <= len(question) <= MAX_QUESTION:
        raise ApiError(
            400,
            "invalid_question",
            f"the question must be {MIN_QUESTION} to {MAX_QUESTION} characters long",
        )
    try:
        assistant = parley.assistants.get(ASSISTANT)
        parley.providers.route(parley.assistants.route_of(assistant))
    except (KeyError, UnknownProvider, ProviderError) as exc:
        raise ApiError(503, "model_unavailable", f"no model is available to answer: {exc}") from None
    thread = await create_thread(parley.db, principal, ASSISTANT, metadata={"source": "api/v1/ask"})
    options = {"retrieval": "all"} if body.context_method == "all" else {}
    run, _ = await parley.runs.create(principal, NewRun(thread.id, question, options=options))
    run = await parley.runs.wait(principal, run.id)
    if run.status != "completed":
        error = run.error or {}
        if error.get("code") == "internal_error":
            raise ApiError(500, "internal_error", "the answer failed; see the server log")
        # A provider error, or the run was stopped: the seed's "Ollama service unavailable".
        raise ApiError(503, "model_unavailable", f"no model could answer: {error.get('message', run.status)}")
    entry = AskedQuestion(user_id=principal.user_id, run_id=run.id, question=question)
    async with parley.db.transaction() as session:
        session.add(entry)
    return {
        "answer": run.output or "",
        "question_id": entry.id,
        "timestamp": iso(entry.created_at),
        "processing_time": _processing_ms(run),
    }


@router.get("/history")
async def history(
    parley: ParleyDep,
    principal: PrincipalDep,
    n: int = Query(10, ge=1, le=100, description="Entries to return."),
    search: str | None = Query(
        None, min_length=2, max_length=200, description="Only questions containing this."
    ),
) -> dict[str, Any]:
    mine = AskedQuestion.user_id == principal.user_id
    stmt = select(AskedQuestion, Run).join(Run, Run.id == AskedQuestion.run_id).where(mine)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(AskedQuestion.question.ilike(pattern, escape="\\"))
    async with parley.db.session() as session:
        rows = (await session.execute(stmt.order_by(AskedQuestion.id.desc()).limit(n))).all()
        total = await session.scalar(select(func.count()).select_from(AskedQuestion).where(mine))
    entries = [
        {
            "id": q.id,
            "question": q.question,
            "answer": run.output or "",
            "timestamp": iso(q.created_at),
            "processing_time": _processing_ms(run),
        }
        for q, run in rows
    ]
    return {"entries": entries, "count": len(entries), "total": total or 0}
