"""Facts in what users say about themselves: a name, preferences, constraints.

``extract`` reads a user's message by rules: precise patterns on first-person
statements, never on questions or conditionals, each clause matched once.
``extract_with_model`` asks a model for the same facts as JSON (for assistants that name
a ``memory_model``). A fact has a stable ``key`` (``name``, ``location``,
``allergy:peanuts``, ``likes:jazz`` ...): stating the same thing again, or its opposite
("I don't like jazz"), yields the same key, so the stored fact is updated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parley.providers.base import ChatMessage, ProviderRequest, TextDelta
from parley.providers.route import Route


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


KINDS = ("name", "profile", "preference", "constraint", "note")


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
#: The first person's words, as a fact stores them (the third person) and as the user hears
#: them back (the second): "my passport" is stored "their passport", said back "your passport".
_PERSONS = {
    "my": ("their", "your"),
    "me": ("them", "you"),
    "mine": ("theirs", "yours"),
    "myself": ("themselves", "yourself"),
    "i": ("they", "you"),
}
_PRONOUNS = {first: third for first, (third, _) in _PERSONS.items()}
_TO_USER = dict(_PERSONS.values())
#: Facts as the rules below word them, and as they are said back to the user, longest first.
_SPOKEN = (
    ("Does not eat or drink ", "you do not eat or drink "),
    ("Wants replies in ", "you want replies in "),
    ("Allergic to ", "you are allergic to "),
    ("Lives in ", "you live in "),
    ("Works as ", "you work as "),
    ("Works at ", "you work at "),
    ("Dislikes ", "you dislike "),
    ("Prefers ", "you prefer "),
    ("Is from ", "you are from "),
    ("Likes ", "you like "),
    ("Has ", "you have "),
    ("Is ", "you are "),
)
#: "Name: Ana", "Favourite colour: ochre", "Dog's name: Pixel".
_LABELLED = re.compile(r"^(?P<label>[A-Z][\w' ]{0,40}): (?P<value>.+)$")

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


def said_back(text: str) -> str:
    """A fact's text ("Is vegetarian", "Dog's name: Pixel", "Their passport expires in March")
    as said to the user: "you are vegetarian", "your dog's name is Pixel", "your passport …"."""
    text = " ".join(_TO_USER.get(word.lower(), word) for word in text.split())
    for stored, said in _SPOKEN:
        if text.startswith(stored):
            return said + text[len(stored) :]
    if (labelled := _LABELLED.match(text)) is not None:
        return f"your {labelled.group('label').lower()} is {labelled.group('value')}"
    return text[:1].lower() + text[1:]


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
#: How an introduction opens: "Hi, I'm Sam", "Good morning! I'm Rosa".
_GREETING = r"(?:hi|hiya|hello|hey|howdy|greetings|good\s+(?:morning|afternoon|evening|day))"
_BARE_GREETING = re.compile(r"\W*" + _GREETING + r"(?:\s+there)?\W*", re.I)
_RULES: list[Rule] = [
    (re.compile(r"\bmy name(?:'s| is)\s+(?P<name>[\w'-]+(?:\s+[\w'-]+)?)", re.I), _name),
    (re.compile(r"\bcall me\s+(?P<name>[\w'-]+)", re.I), _capitalised_name),
    (re.compile(r"\bi go by\s+(?P<name>[\w'-]+)", re.I), _capitalised_name),
    (
        re.compile(r"^\W*" + _GREETING + r"(?:\s+there)?[,!.]*\s+" + _I_AM + r"\s+(?P<name>[\w'-]+)", re.I),
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
    """The message's sentences; a greeting on its own joins the sentence after it ("Good
    morning! I'm Rosa" is one introduction)."""
    said = [s.strip() for s in _SENTENCES.split(text) if s and s.strip()]
    if len(said) > 1 and _BARE_GREETING.fullmatch(said[0]):
        said[:2] = [f"{said[0]} {said[1]}"]
    return said


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
