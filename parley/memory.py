"""User memory: the facts users stated about themselves, each linked to its message.

After a run completes, facts are extracted from the user's message (``parley.facts``)
and stored here; stating the same thing again updates the fact and relinks it to the
newer message. Facts are the user's: listed by ``GET /v1/memory``, forgotten one by one
or all at once; deleting the thread a fact came from forgets it too (it was learned
there). For each run, the ``k`` facts most relevant to the user's message go into the
prompt (``rank``). Memory is on unless ``PARLEY_MEMORY=false``, the assistant's
``options.memory`` is false, or the user turned it off (``PATCH /v1/memory/settings``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    exists,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from parley.errors import not_found
from parley.facts import Fact, words
from parley.store.db import Database, Direct
from parley.store.schema import Base, from_row, new_id, now
from parley.users import Principal


class MemoryFact(Base):
    __tablename__ = "memory_facts"
    __table_args__ = (UniqueConstraint("user_id", "key", name="uq_memory_facts_user_key"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    key: Mapped[str] = mapped_column(String(200))
    value: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    thread_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class MemorySetting(Base):
    __tablename__ = "memory_settings"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


# -- relevance --------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")
_STOP = words(
    "a an the and or but of to in on at for with is are was were be been am i me my you your it its this "
    "that these those do does did have has had what which who whom how can could would should will shall "
    "about please tell know any some there their they them we our us so if then than just like"
)
# Words a question about a kind of fact uses without naming the fact itself.
_HINTS: dict[str, str] = {
    "name": "name called call who",
    "location": "live where city country home based weather local near",
    "origin": "from where origin country born grew",
    "occupation": "job work profession career do",
    "employer": "work company employer job",
    "age": "age old years born",
    "birthday": "birthday born date celebrate",
    "family": "family kids children have",
    "relation": "name called family pet",
    "allergy": "allergic allergy eat food cook recipe meal safe ingredients",
    "diet": "eat food cook recipe meal diet dinner lunch restaurant",
    "budget": "budget afford spend cost price cheap expensive money buy",
    "reply-language": "language speak reply answer",
    "likes": "enjoy favourite favorite prefer recommend",
    "prefers": "prefer favourite favorite recommend",
    "favourite": "favourite favorite prefer best",
}
# Words a question asking for a kind of fact uses ("What do I do for a living?"): narrower
# than ``_HINTS``, which also has the words of requests a fact bears on ("cook", "recipe").
_ASKED_BY: dict[str, str] = {
    "occupation": "job work living profession career",
    "employer": "job work company employer",
    "age": "age old",
}
_PRIORS = {"name": 1.0, "constraint": 1.0, "profile": 0.3, "preference": 0.2, "note": 0.2}


def _terms(text: str) -> list[str]:
    terms = []
    for word in _WORD.findall(text.lower()):
        if word in _STOP or len(word) < 2:
            continue
        for suffix in ("ing", "ies", "es", "ed", "s"):
            if len(word) > len(suffix) + 3 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        terms.append(word)
    return terms


def _fact_terms(fact: MemoryFact) -> set[str]:
    head = fact.key.split(":", 1)[0]
    return set(_terms(f"{fact.text} {fact.key.replace(':', ' ')} {_HINTS.get(head, '')}"))


# One query on the run's path to its first token: the user's switch is a condition of it.
_RECALL = (
    select(MemoryFact)
    .where(
        MemoryFact.user_id == bindparam("user_id"),
        ~exists().where(MemorySetting.user_id == bindparam("user_id"), MemorySetting.enabled.is_(False)),
    )
    .order_by(MemoryFact.created_at, MemoryFact.id)
)


def rank(facts: Sequence[MemoryFact], query: str, k: int) -> list[MemoryFact]:
    """The ``k`` facts most relevant to ``query``: shared terms weighted by rarity, plus a prior
    that keeps the name and constraints (an allergy matters even when not mentioned)."""
    if len(facts) <= k:
        return sorted(facts, key=lambda f: (-_PRIORS.get(f.kind, 0.0), f.created_at))
    wanted = set(_terms(query))
    bags = [_fact_terms(f) for f in facts]
    frequency = Counter(term for bag in bags for term in bag)
    total = len(facts)

    def score(index: int) -> tuple[float, float]:
        overlap = sum(math.log(1 + total / frequency[t]) for t in bags[index] & wanted)
        return overlap + _PRIORS.get(facts[index].kind, 0.0), facts[index].updated_at

    best = sorted(range(total), key=score, reverse=True)[:k]
    # A stable order: the same facts make the same text, whatever the question.
    return sorted((facts[i] for i in best), key=lambda f: (-_PRIORS.get(f.kind, 0.0), f.created_at))


class Stated(Protocol):
    """A fact as stored (``MemoryFact``) or as just extracted from a message (``facts.Fact``)."""

    @property
    def kind(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def text(self) -> str: ...


_F = TypeVar("_F", bound=Stated)


def asked_for(facts: Sequence[_F], question: str, *, by_value: bool = False) -> list[_F]:
    """The facts ``question`` asks for: those that share a word with it besides their value's
    ("Which food am I allergic to?" and "Allergic to sesame" share "allergic"; "how do I make
    sesame noodles?" shares only the value, and asks for no fact), or, for a note, any word when
    the question says "my" ("When does my passport expire?"). A fact about someone close asks
    for them by name ("Dog's name: Pixel" answers "what is my dog called?" only). ``by_value``:
    the value's words count too, for a question that asks whether it holds ("am I vegetarian?")."""
    wanted = set(_terms(question))
    mine = "my" in _WORD.findall(question.lower())
    found = []
    for fact in facts:
        head, _, rest = fact.key.partition(":")
        if head == "relation" and not set(_terms(rest)) & wanted:
            continue  # "Dog's name: Pixel" answers "what is my dog called?", not "what is my name?"
        own = set(_terms(f"{fact.text} {fact.key.replace(':', ' ')} {_ASKED_BY.get(head, '')}"))
        about = own if by_value or (fact.kind == "note" and mine) else own - set(_terms(fact.value))
        if about & wanted:
            found.append(fact)
    return found


# -- storage ----------------------------------------------------------------------------


class Memory:
    """User memory over the database."""

    def __init__(self, db: Database, *, enabled: bool = True) -> None:
        self.db = db
        self.enabled = enabled

    async def user_enabled(self, user_id: int, session: AsyncSession | None = None) -> bool:
        if not self.enabled:
            return False
        if session is None:
            async with self.db.session() as own:
                return await self.user_enabled(user_id, own)
        setting = await session.get(MemorySetting, user_id)
        return setting is None or setting.enabled

    async def recall(self, reader: Direct, user_id: int, query: str, k: int) -> list[MemoryFact]:
        """The ``k`` facts about ``user_id`` most relevant to ``query`` (none when memory is off)."""
        if k <= 0 or not self.enabled:
            return []
        facts = [from_row(MemoryFact, row) for row in await reader.rows(_RECALL, {"user_id": user_id})]
        return rank(facts, query, k)

    async def set_enabled(self, principal: Principal, enabled: bool) -> bool:
        async with self.db.transaction() as session:
            setting = await session.get(MemorySetting, principal.user_id, with_for_update=True)
            if setting is None:
                session.add(MemorySetting(user_id=principal.user_id, enabled=enabled))
            else:
                setting.enabled = enabled
                setting.updated_at = now()
        return enabled

    async def page(
        self, principal: Principal, *, limit: int, before: str | None = None
    ) -> tuple[Sequence[MemoryFact], bool]:
        """The caller's facts, newest first; ``before`` is the last id of the previous page."""
        stmt = select(MemoryFact).where(MemoryFact.user_id == principal.user_id)
        async with self.db.session() as session:
            if before is not None:
                anchor = await self._own(session, principal, before)
                stmt = stmt.where(
                    (MemoryFact.created_at < anchor.created_at)
                    | ((MemoryFact.created_at == anchor.created_at) & (MemoryFact.id < anchor.id))
                )
            order = (MemoryFact.created_at.desc(), MemoryFact.id.desc())
            rows = (await session.scalars(stmt.order_by(*order).limit(limit + 1))).all()
        return rows[:limit], len(rows) > limit

    async def forget(self, principal: Principal, fact_id: str) -> None:
        """Delete one of the caller's facts; anyone else's is ``not found``."""
        async with self.db.transaction() as session:
            await self._own(session, principal, fact_id)
            await session.execute(delete(MemoryFact).where(MemoryFact.id == fact_id))

    async def forget_all(self, principal: Principal) -> int:
        async with self.db.transaction() as session:
            result = await session.execute(delete(MemoryFact).where(MemoryFact.user_id == principal.user_id))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def remember(
        self, user_id: int, thread_id: str, message_id: str, facts: Iterable[Fact]
    ) -> list[MemoryFact]:
        """Store ``facts`` for ``user_id``: new keys are added, known keys updated and relinked."""
        facts = list(facts)
        if not facts:
            return []
        try:
            return await self._upsert(user_id, thread_id, message_id, facts)
        except IntegrityError:
            # Another run of this user stored one of these keys first; now they all exist.
            return await self._upsert(user_id, thread_id, message_id, facts)

    async def _upsert(
        self, user_id: int, thread_id: str, message_id: str, facts: list[Fact]
    ) -> list[MemoryFact]:
        stored: list[MemoryFact] = []
        async with self.db.transaction() as session:
            keys = [f.key for f in facts]
            existing = {
                row.key: row
                for row in await session.scalars(
                    select(MemoryFact).where(MemoryFact.user_id == user_id, MemoryFact.key.in_(keys))
                )
            }
            for fact in facts:
                row = existing.get(fact.key)
                if row is None:
                    row = MemoryFact(id=new_id("mem"), user_id=user_id, key=fact.key)
                    session.add(row)
                row.kind, row.value, row.text = fact.kind, fact.value, fact.text
                row.message_id, row.thread_id, row.updated_at = message_id, thread_id, now()
                stored.append(row)
        return stored

    @staticmethod
    async def _own(session: AsyncSession, principal: Principal, fact_id: str) -> MemoryFact:
        fact: MemoryFact | None = await session.scalar(
            select(MemoryFact).where(MemoryFact.id == fact_id, MemoryFact.user_id == principal.user_id)
        )
        if fact is None:
            raise not_found("memory", fact_id)
        return fact
