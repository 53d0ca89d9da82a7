"""Rolling summaries: the older part of a thread, folded into a few lines the prompt can afford.

A thread's summary covers every message up to ``until_message_id``; the context builder
sends the summary plus the messages after it. Folding happens in the background after a
run (see ``parley.context``), a block of turns at a time, so the prompt prefix stays the
same for several turns and providers' prompt caches keep hitting.

Without a summary model the summary is *extractive*: the sentences that carry the most
information (rare terms, numbers, names; the user's own words weigh more) are kept in
their original order within a token cap. Lines carried over from the previous summary
lose a little weight at each fold, so old details give way to new ones gradually.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Float, ForeignKey, Integer, String, Text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from parley.providers.base import ChatMessage, ProviderRequest, TextDelta
from parley.providers.route import Route
from parley.store.db import Database
from parley.store.schema import Base, Message, now

CARRY_DECAY = 0.85
_USER_WEIGHT = 1.3
_MAX_SENTENCE_CHARS = 240
_MIN_TERMS = 2
_DUPLICATE = 0.6

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
_DETAIL = re.compile(r"\d|(?<=\s)[A-Z][a-z]")
_LINE = re.compile(r"^- (user|assistant): (.+)$")
_STOP_WORDS = (
    "a an the and or but of to in on at for with is are was were be been being am i me my you your it its "
    "this that these those do does did have has had what which who how can could would should will just "
    "so if then than there here about from as by not no yes ok okay sure thanks thank please very really "
    "also some any all more most much many one get got like well let know think want need i'm i've i'd i'll "
    "it's that's you're don't can't hi hello hey great good nice cool awesome perfect sounds glad happy "
    "right"
)
_STOP = frozenset(_STOP_WORDS.split())


class ThreadSummary(Base):
    __tablename__ = "thread_summaries"
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    until_message_id: Mapped[str] = mapped_column(String(40))
    until_created_at: Mapped[float] = mapped_column(Float)
    messages: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(20))
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


@dataclass(frozen=True, slots=True)
class _Candidate:
    order: int
    role: str
    text: str
    terms: frozenset[str]
    carried: bool


def _terms(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1)


def _candidates(previous: str, messages: Sequence[Message]) -> list[_Candidate]:
    found: list[_Candidate] = []

    def add(role: str, sentence: str, carried: bool) -> None:
        sentence = " ".join(sentence.split())
        if len(sentence) > _MAX_SENTENCE_CHARS:
            sentence = sentence[: _MAX_SENTENCE_CHARS - 1].rsplit(" ", 1)[0] + "…"
        terms = _terms(sentence)
        if len(terms) >= _MIN_TERMS:
            found.append(_Candidate(len(found), role, sentence, terms, carried))

    for line in previous.splitlines():
        match = _LINE.match(line.strip())
        if match:
            add(match.group(1), match.group(2), True)
        else:
            for sentence in _SENTENCE.split(line.strip().removeprefix("- ")):
                add("assistant", sentence, True)
    for message in messages:
        if message.role not in ("user", "assistant") or not message.content.strip():
            continue
        for sentence in _SENTENCE.split(message.content):
            if sentence.strip():
                add(message.role, sentence.strip(), False)
    return found


def extractive(previous: str, messages: Sequence[Message], limit: int, count: Callable[[str], int]) -> str:
    """Fold ``messages`` into the ``previous`` summary, keeping it within ``limit`` tokens."""
    candidates = _candidates(previous, messages)
    if not candidates or limit <= 0:
        return ""
    frequency = Counter(term for c in candidates for term in c.terms)
    total = len(candidates)

    def score(c: _Candidate) -> float:
        information = sum(math.log(1 + total / frequency[t]) for t in c.terms) / math.sqrt(len(c.terms))
        weight = (_USER_WEIGHT if c.role == "user" else 1.0) * (1.2 if _DETAIL.search(c.text) else 1.0)
        return information * weight * (CARRY_DECAY if c.carried else 1.0)

    chosen: list[_Candidate] = []
    used = 0
    for candidate in sorted(candidates, key=lambda c: (score(c), c.order), reverse=True):
        if any(len(candidate.terms & c.terms) / len(candidate.terms | c.terms) >= _DUPLICATE for c in chosen):
            continue
        cost = count(f"- {candidate.role}: {candidate.text}\n")
        if used + cost > limit:
            continue
        chosen.append(candidate)
        used += cost
    return "\n".join(f"- {c.role}: {c.text}" for c in sorted(chosen, key=lambda c: c.order))


_SUMMARY_PROMPT = """You maintain the running summary of a conversation between a user and an \
assistant. Update the summary with the new messages. Keep what later turns may need: the user's \
goals and requests, names, numbers, dates, decisions, promises and open questions. Drop greetings \
and small talk. Write short bullet lines starting with "- ", at most {words} words in all. Answer \
with the summary only."""


def transcript(messages: Sequence[Message]) -> str:
    return "\n".join(
        f"{m.role}: {m.content}" for m in messages if m.role in ("user", "assistant") and m.content
    )


async def with_model(route: Route, previous: str, messages: Sequence[Message], limit: int) -> str:
    """Fold ``messages`` into ``previous`` with a model; raises ``ProviderError`` or ``ValueError``."""
    words = max(20, int(limit * 0.75))
    body = f"Summary so far:\n{previous or '(none)'}\n\nNew messages:\n{transcript(messages)}"
    request = ProviderRequest(
        messages=[ChatMessage("system", _SUMMARY_PROMPT.format(words=words)), ChatMessage("user", body)],
        max_tokens=limit,
        temperature=0.0,
    )
    text = "".join([d.text async for d in route.stream(request) if isinstance(d, TextDelta)]).strip()
    if not text:
        raise ValueError("the summary model answered with nothing")
    return text


async def save(
    db: Database,
    thread_id: str,
    previous: ThreadSummary | None,
    *,
    text: str,
    until: Message,
    folded: int,
    method: str,
) -> bool:
    """Store a new summary unless another writer changed it since ``previous`` was read."""
    if previous is None:
        try:
            async with db.transaction() as session:
                session.add(
                    ThreadSummary(
                        thread_id=thread_id,
                        text=text,
                        until_message_id=until.id,
                        until_created_at=until.created_at,
                        messages=folded,
                        method=method,
                        version=1,
                    )
                )
        except IntegrityError:
            return False
        return True
    async with db.transaction() as session:
        result = await session.execute(
            update(ThreadSummary)
            .where(ThreadSummary.thread_id == thread_id, ThreadSummary.version == previous.version)
            .values(
                text=text,
                until_message_id=until.id,
                until_created_at=until.created_at,
                messages=previous.messages + folded,
                method=method,
                version=previous.version + 1,
                updated_at=now(),
            )
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]
