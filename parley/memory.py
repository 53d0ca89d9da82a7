"""User memory: facts users state about themselves, each linked to the message it came from.

After a run completes, the user's message is read for facts: a name, preferences,
constraints (allergies, diet, budget, reply language), a few profile details, and
explicit "remember that ..." requests. Extraction is by rules (``extract``): precise
patterns on first-person statements, never on questions or conditionals. An assistant
may name a ``memory_model`` (a route): that model is asked for the facts as JSON
instead, and the rules answer whenever it fails.

A fact has a ``key`` (``name``, ``location``, ``allergy:peanuts``, ``likes:jazz`` ...);
stating the same thing again updates the fact and relinks it to the newer message, and
"I don't like jazz" replaces "likes jazz". Facts are the user's: listed by
``GET /v1/memory``, forgotten one by one or all at once; deleting the thread a fact came
from forgets it too (it was learned there). Memory is on unless ``PARLEY_MEMORY=false``,
the assistant's ``options.memory`` is false, or the user turned it off
(``PATCH /v1/memory/settings``).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, String, Text, UniqueConstraint, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from parley.errors import not_found
from parley.providers.base import ChatMessage, ProviderRequest, TextDelta
from parley.providers.route import Route
from parley.store.db import Database
from parley.store.schema import Base, new_id, now
from parley.users import Principal


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


KINDS = ("name", "profile", "preference", "constraint", "note")


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


@dataclass(frozen=True, slots=True)
class Fact:
    """A fact as extracted, before it is stored."""

    kind: str
    key: str
    value: str
    text: str


# -- extraction by rules ----------------------------------------------------------------

_SENTENCES = re.compile(r"(?<=[.!?;])\s+|\n+")
_CLAUSE_END = re.compile(
    r"\s+(?:and|but|because|so|since|though|although|which|who|when|while|if|as well)\s+|[,;:.!?()\"]|\s+-\s+"
)
_SKIP_START = re.compile(
    r"^\s*(?:if|when|whenever|unless|suppose|imagine|what if|do|does|did|am|is|are)\b", re.I
)
_NOT_NAMES = words(
    "a an the not just so very really here there back sorry fine good ok okay glad happy sure "
    "looking trying going wondering new tired hungry from in at tomorrow later now again when if"
)
_LANGUAGES = words(
    "english french spanish german portuguese italian dutch polish russian ukrainian japanese chinese "
    "mandarin cantonese korean arabic hindi turkish greek swedish norwegian danish finnish czech "
    "hungarian romanian hebrew vietnamese thai indonesian catalan"
)
_DIETS = (
    "vegetarian|vegan|pescatarian|lactose[- ]intolerant|gluten[- ]intolerant|gluten[- ]free|diabetic|"
    "celiac|coeliac|kosher|halal|teetotal"
)
_RELATIONS = (
    "wife|husband|partner|girlfriend|boyfriend|son|daughter|kid|child|mother|mom|mum|father|dad|"
    "brother|sister|friend|boss|dog|cat|puppy|kitten|pet|horse|parrot|rabbit"
)
_PRONOUNS = {"my": "their", "me": "them", "mine": "theirs", "myself": "themselves", "i": "they"}

Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], Fact | None]]


def _clause(text: str, limit: int = 80) -> str:
    value = _CLAUSE_END.split(text, maxsplit=1)[0].strip()
    return value[:limit].strip() if len(value) >= 2 else ""


def _clause_end(sentence: str, match: re.Match[str]) -> int:
    """Where the clause a rule matched ends: later clauses of the sentence stay for other rules."""
    tail = _CLAUSE_END.search(sentence, match.start(match.lastindex or 0) + 1)
    return tail.start() if tail is not None else len(sentence)


def _third_person(text: str) -> str:
    return " ".join(_PRONOUNS.get(word.lower(), word) for word in text.split())


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80]


def _name(match: re.Match[str], *, capitalised: bool = False) -> Fact | None:
    words = match.group("name").split()
    if not words or words[0].lower() in _NOT_NAMES or (capitalised and not words[0][:1].isupper()):
        return None
    kept = [words[0]] + [w for w in words[1:2] if w[:1].isupper() and w.lower() not in _NOT_NAMES]
    name = " ".join(w[:1].upper() + w[1:] for w in kept).strip("'-")
    if not name.replace("'", "").replace("-", "").isalpha():
        return None
    return Fact("name", "name", name, f"Name: {name}")


def _capitalised_name(match: re.Match[str]) -> Fact | None:
    return _name(match, capitalised=True)


def _simple(kind: str, key: str, template: str) -> Callable[[re.Match[str]], Fact | None]:
    def make(match: re.Match[str]) -> Fact | None:
        value = _clause(match.group("v"))
        if not value:
            return None
        value = _third_person(value)
        return Fact(kind, key.format(slug=_slug(value)), value, template.format(value=value))

    return make


def _note(match: re.Match[str]) -> Fact | None:
    value = _third_person(match.group("v").strip().rstrip(".!;"))
    if len(value) < 4:
        return None
    return Fact("note", f"note:{_slug(value)}", value, value[:1].upper() + value[1:])


def _preference(match: re.Match[str]) -> Fact | None:
    value = _clause(match.group("v"))
    if not value or value.lower() in ("it", "that", "this", "them", "you"):
        return None
    value = _third_person(value)
    verb = match.group("verb").lower()
    if verb == "prefer":
        return Fact("preference", f"prefers:{_slug(value)}", value, f"Prefers {value}")
    return Fact("preference", f"likes:{_slug(value)}", value, f"Likes {value}")


def _dislike(match: re.Match[str]) -> Fact | None:
    value = _clause(match.group("v"))
    if not value or value.lower() in ("it", "that", "this", "them", "you"):
        return None
    value = _third_person(value)
    return Fact("preference", f"likes:{_slug(value)}", value, f"Dislikes {value}")


def _favourite(match: re.Match[str]) -> Fact | None:
    thing, value = match.group("thing").lower(), _clause(match.group("v"))
    if not value:
        return None
    return Fact("preference", f"favourite:{_slug(thing)}", value, f"Favourite {thing}: {value}")


def _language(match: re.Match[str]) -> Fact | None:
    language = match.group("lang").lower()
    if language not in _LANGUAGES:
        return None
    return Fact("constraint", "reply-language", language.title(), f"Wants replies in {language.title()}")


def _relation(match: re.Match[str]) -> Fact | None:
    who, name = match.group("who").lower(), match.group("name")
    if name.lower() in _NOT_NAMES or not name.isalpha():
        return None
    name = name[:1].upper() + name[1:]
    return Fact("profile", f"relation:{who}", name, f"{who.title()}'s name: {name}")


def _diet(match: re.Match[str]) -> Fact | None:
    diet = match.group("diet").lower().replace("-", " ")
    return Fact("constraint", f"diet:{_slug(diet)}", diet, f"Is {diet}")


_I_AM = r"(?:i'?m|i am)"
_RULES: list[Rule] = [
    (re.compile(r"\bmy name(?:'s| is)\s+(?P<name>[\w'-]+(?:\s+[\w'-]+)?)", re.I), _name),
    (re.compile(r"\bcall me\s+(?P<name>[\w'-]+)", re.I), _capitalised_name),
    (re.compile(r"\bi go by\s+(?P<name>[\w'-]+)", re.I), _capitalised_name),
    (
        re.compile(r"^\W*(?:hi|hello|hey)(?:\s+there)?[,!.]*\s+" + _I_AM + r"\s+(?P<name>[\w'-]+)", re.I),
        _capitalised_name,
    ),
    (
        re.compile(
            r"\bmy (?P<who>" + _RELATIONS + r")(?:'s name is| is (?:called|named))\s+(?P<name>[\w'-]+)", re.I
        ),
        _relation,
    ),
    (
        re.compile(r"\b(?:i live|" + _I_AM + r" living|" + _I_AM + r" based) in\s+(?P<v>.+)", re.I),
        _simple("profile", "location", "Lives in {value}"),
    ),
    (
        re.compile(
            r"\b(?:" + _I_AM + r" originally|" + _I_AM + r"|i come|i originally come) from\s+(?P<v>.+)", re.I
        ),
        _simple("profile", "origin", "Is from {value}"),
    ),
    (
        re.compile(r"\bi(?: currently)? work (?:as|as an?)\s+(?P<v>.+)", re.I),
        _simple("profile", "occupation", "Works as {value}"),
    ),
    (
        re.compile(r"\bi(?: currently)? work (?:at|for)\s+(?P<v>.+)", re.I),
        _simple("profile", "employer", "Works at {value}"),
    ),
    (
        re.compile(r"\bmy (?:job|profession|occupation) is\s+(?P<v>.+)", re.I),
        _simple("profile", "occupation", "Works as {value}"),
    ),
    (
        re.compile(r"\b" + _I_AM + r"\s+(?P<v>\d{1,3})\s+(?:years old|yo\b|y/o)", re.I),
        _simple("profile", "age", "Age: {value}"),
    ),
    (
        re.compile(r"\bmy birthday is(?: on)?\s+(?P<v>.+)", re.I),
        _simple("profile", "birthday", "Birthday: {value}"),
    ),
    (
        re.compile(
            r"\bi have (?P<v>(?:\d+|one|two|three|four|five|six|a|an) (?:"
            + _RELATIONS
            + r"|kids|children|sons|daughters|dogs|cats|brothers|sisters)s?\b)",
            re.I,
        ),
        _simple("profile", "family:{slug}", "Has {value}"),
    ),
    (
        re.compile(r"\b" + _I_AM + r" (?:severely |very |highly )?allergic to\s+(?P<v>.+)", re.I),
        _simple("constraint", "allergy:{slug}", "Allergic to {value}"),
    ),
    (
        re.compile(r"\bi have an? (?P<v>[\w -]{2,30}?) allergy\b", re.I),
        _simple("constraint", "allergy:{slug}", "Allergic to {value}"),
    ),
    (re.compile(r"\b" + _I_AM + r" (?:a |an |strictly |strict )?(?P<diet>" + _DIETS + r")\b", re.I), _diet),
    (
        re.compile(r"\bi (?:don'?t|do not|can'?t|cannot|never) (?:eat|drink)\s+(?P<v>.+)", re.I),
        _simple("constraint", "diet:no-{slug}", "Does not eat or drink {value}"),
    ),
    (re.compile(r"\bmy budget is\s+(?P<v>.+)", re.I), _simple("constraint", "budget", "Budget: {value}")),
    (
        re.compile(r"\bi (?:can'?t|cannot|can not) (?:spend|afford) more than\s+(?P<v>.+)", re.I),
        _simple("constraint", "budget", "Budget: at most {value}"),
    ),
    (
        re.compile(
            r"\b(?:always |please )*(?:answer|reply|respond|write|talk|speak) (?:to me )?in (?P<lang>[a-z]+)\b",
            re.I,
        ),
        _language,
    ),
    (re.compile(r"\bmy fav(?:ou?rite)? (?P<thing>[a-z]+(?: [a-z]+)?) is\s+(?P<v>.+)", re.I), _favourite),
    (
        re.compile(
            r"\bi (?:really |truly |absolutely |just )?(?P<verb>love|like|enjoy|adore|prefer)\s+(?P<v>.+)",
            re.I,
        ),
        _preference,
    ),
    (re.compile(r"\bi (?:really )?(?:don'?t|do not) (?:like|enjoy)\s+(?P<v>.+)", re.I), _dislike),
    (re.compile(r"\bi (?:hate|dislike|can'?t stand|cannot stand)\s+(?P<v>.+)", re.I), _dislike),
    (
        re.compile(
            r"^\W*(?:please |also |and )*(?:remember|note|keep in mind) (?:that )?(?P<v>.{4,200})", re.I
        ),
        _note,
    ),
]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCES.split(text) if s and s.strip()]


def extract(text: str) -> list[Fact]:
    """Facts stated in a user's message, by rules; later statements win over earlier ones."""
    found: dict[str, Fact] = {}
    for sentence in sentences(text):
        if sentence.endswith("?") or _SKIP_START.match(sentence):
            continue
        taken: list[tuple[int, int]] = []
        for pattern, make in _RULES:
            match = pattern.search(sentence)
            if match is None:
                continue
            span = (match.start(), _clause_end(sentence, match))
            if any(span[0] < end and start < span[1] for start, end in taken):
                continue
            fact = make(match)
            if fact is not None:
                found[fact.key] = fact
                taken.append(span)
    return list(found.values())


# -- extraction by a model --------------------------------------------------------------

FACTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "kind": {"enum": list(KINDS)},
                    "key": {"type": "string"},
                    "value": {"type": "string"},
                    "text": {"type": "string"},
                },
                "required": ["kind", "key", "value", "text"],
            },
        }
    },
    "required": ["facts"],
}

_EXTRACT_PROMPT = """You keep a short profile of the user. From the user's message below, list the \
durable facts the user states about themselves: their name, preferences, constraints (allergies, \
diet, budget, language), and details they ask you to remember. Ignore questions, hypotheticals and \
anything about other people. Keys are short and stable: "name", "location", "allergy:peanuts", \
"likes:jazz". Write "text" in the third person, e.g. "Allergic to peanuts". Answer with JSON only: \
{"facts": [{"kind": "name|profile|preference|constraint|note", "key": ..., "value": ..., "text": ...}]}."""


async def extract_with_model(route: Route, text: str) -> list[Fact]:
    """Facts as ``route``'s model reads them; raises ``ValueError`` on an answer that is not the schema."""
    request = ProviderRequest(
        messages=[ChatMessage("system", _EXTRACT_PROMPT), ChatMessage("user", text)],
        response_schema=FACTS_SCHEMA,
        temperature=0.0,
        max_tokens=400,
    )
    reply = "".join([d.text async for d in route.stream(request) if isinstance(d, TextDelta)])
    start, end = reply.find("{"), reply.rfind("}")
    if start < 0 or end < start:
        raise ValueError("the memory model did not answer with JSON")
    raw = json.loads(reply[start : end + 1])
    facts: list[Fact] = []
    for item in raw.get("facts", []) if isinstance(raw, dict) else []:
        if not isinstance(item, dict):
            continue
        kind, key = str(item.get("kind", "")), str(item.get("key", "")).strip().lower()[:200]
        value, statement = str(item.get("value", "")).strip(), str(item.get("text", "")).strip()
        if kind in KINDS and key and value and statement:
            facts.append(Fact(kind, key, value[:500], statement[:500]))
    return facts


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

    async def recall(self, session: AsyncSession, user_id: int, query: str, k: int) -> list[MemoryFact]:
        """The ``k`` facts about ``user_id`` most relevant to ``query`` (none when memory is off)."""
        if k <= 0 or not await self.user_enabled(user_id, session):
            return []
        stmt = select(MemoryFact).where(MemoryFact.user_id == user_id)
        return rank(
            (await session.scalars(stmt.order_by(MemoryFact.created_at, MemoryFact.id))).all(), query, k
        )

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
