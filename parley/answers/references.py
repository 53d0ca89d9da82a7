"""What "it", "the first one" or "the black one" means: references resolved against what was shown.

A conversation shows things through tool results: a search's list of products, in the order
of its cards; one product in detail; a product put in the cart; the cart. ``Shown`` keeps
those *displays* in order, rebuilt from the thread's tool-call records (and the choices a
question back listed), and grows with the run's own results. ``resolve`` reads the user's
words against them:

- "the first one", "the second", "number 2", "the last one": that position in the list shown
  last (after narrowing by any describing words: "the second keyboard");
- "both": the two products of the list shown last;
- "the cheaper one", "the most expensive": the lowest or highest price there;
- describing words ("the black one", a product's name): the shown products whose names
  have the most of those words, looking first at the last list and the product in focus,
  then at everything shown;
- "it", "that", "this one", or no reference at all: the product in focus (the one shown in
  detail, or just added), or the only product of the last list.

A product named but never shown ("add the Glide Wireless Mouse, Black" in a new conversation)
is searched for by the server (``naming``, ``named_by``: ``parley.agent``): added when exactly one
result has every word of the name, asked about when several do. Anything that fits several
products is ambiguous: the answer is a short question listing them, numbered, never a guess. A model that chooses tools itself still names ids, and provenance
(``parley.tools.provenance``) refuses any it was not shown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from parley.answers.compose import spoken
from parley.store.schema import Message
from parley.tools.choice import stems

_ORDINALS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "last": -1,
}
_ORDINAL = re.compile(
    r"\b(?:(?P<word>first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|last)"
    r"|(?P<nth>\d{1,2})(?:st|nd|rd|th)"
    r"|(?:number|no\.|#|item|option|product)\s*(?P<number>\d{1,2}))\b",
    re.IGNORECASE,
)
_BOTH = re.compile(r"\b(?:both|the two|these two|those two|the pair)\b", re.IGNORECASE)
_CHEAPEST = re.compile(r"\b(?:cheap\w*|less expensive|least expensive|lower price|lowest price)\b", re.I)
_DEAREST = re.compile(
    r"\b(?:more expensive|most expensive|pricier|priciest|dearer|higher price|highest price)\b", re.I
)
_PRONOUN = re.compile(r"\b(?:it|that|this|them|those|these)\b", re.IGNORECASE)
# Words of the cues above, so that they never count as describing a product.
_CUE_WORDS = stems(
    " ".join(_ORDINALS) + " st nd rd th number no item option both two pair cheap cheaper cheapest "
    "less least more most expensive pricier priciest dearer lower lowest higher highest price one ones"
)


@dataclass(frozen=True, slots=True)
class Item:
    """One thing shown: its id, its name, and its price when it has one."""

    id: str
    label: str
    price: float | None = None


@dataclass(frozen=True, slots=True)
class Display:
    """Things shown together: a ``list`` (cards in order), one thing in ``focus``, or things shown
    ``also`` beside it (a product's related products: nameable, but not what "the first" counts in)."""

    kind: str
    items: tuple[Item, ...]
    role: Literal["list", "focus", "also"] = "list"
    #: What the user asked to see (a search's query): "both" after "show me the Pulse Fit Band"
    #: means the two Pulse Fit Bands among the results.
    about: str = ""


@dataclass(frozen=True, slots=True)
class Resolution:
    """The ids meant (in order), or the ``choices`` to ask about; neither when nothing fits."""

    ids: tuple[str, ...] = ()
    choices: tuple[Item, ...] = ()
    #: Whether anything of the kind has been shown at all (a question back says so).
    anything_shown: bool = True
    #: What decided: "position", "both", "price", "named" (describing words), "unmatched"
    #: (describing words that fit nothing shown) or "focus".
    how: str = ""

    @property
    def ambiguous(self) -> bool:
        return not self.ids and bool(self.choices)

    def within(self, there: Sequence[Item]) -> Resolution:
        """Only what is ``there`` (the cart's products, for a removal): the ids meant that are,
        or the one choice that is; "outside" when what was meant is not there."""
        held = {item.id for item in there}
        if self.how == "unmatched":  # words that fit nothing shown or there
            return Resolution(how="outside")
        if self.ids:
            kept = tuple(i for i in self.ids if i in held)
            return replace(self, ids=kept) if kept else Resolution(how="outside")
        inside = tuple(item for item in self.choices if item.id in held)
        if len(inside) == 1:
            return Resolution((inside[0].id,), how=self.how)
        if inside:
            return replace(self, choices=inside)
        return Resolution(how="outside") if self.choices else self


def not_there(there: Sequence[Item], where: str) -> str:
    """The answer when what a removal means is not where it must be: "That is not in your
    cart. In your cart: …", or "Nothing is in your cart."."""
    if not there:
        return f"Nothing is {where}."
    return f"That is not {where}. {where[0].upper() + where[1:]}: {spoken([item.label for item in there])}."


@dataclass(slots=True)
class Shown:
    """The displays of a conversation, oldest first."""

    displays: list[Display] = field(default_factory=list)

    @classmethod
    def from_history(cls, messages: Sequence[Message], *, window: int) -> Shown:
        """What the last ``window`` assistant turns that showed something have shown."""
        shown = cls()
        turns = [m for m in messages if m.role == "assistant" and _shows(m.data or {})]
        for message in turns[-window:] if window > 0 else []:
            data = message.data or {}
            shown.add_records(data.get("tool_calls") or [])
            choices = data.get("choices")
            if isinstance(choices, dict) and choices.get("items"):
                shown.add_choices(str(choices.get("kind", "")), _items(choices["items"]))
        return shown

    def add_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """The displays of tool-call records (``Outcome.record``): only calls that succeeded show."""
        for record in records:
            if record.get("status") != "ok":
                continue
            prices = _prices(record.get("output"))
            focus = record.get("focus") or {}
            for kind, ids in (record.get("refs") or {}).items():
                items = tuple(Item(i, str(label), prices.get(i)) for i, label in ids.items())
                main = focus.get(kind)
                if isinstance(main, str) and main in ids:
                    others = tuple(item for item in items if item.id != main)
                    if others:
                        self.displays.append(Display(kind, others, "also"))
                    self.displays.append(
                        Display(kind, (Item(main, str(ids[main]), prices.get(main)),), "focus")
                    )
                elif items:
                    self.displays.append(Display(kind, items, about=_query(record.get("arguments"))))

    def knowing(self, kind: str, items: Sequence[Item]) -> Shown:
        """These displays, with ``items`` known as well (the cart's products): nameable, older
        than everything shown, and not what "the first one" counts in."""
        if not items:
            return self
        return Shown([Display(kind, tuple(items), "also"), *self.displays])

    def add_choices(self, kind: str, items: Sequence[Item]) -> None:
        """A question back's numbered choices: the list the next "the second one" counts in."""
        if items:
            self.displays.append(Display(kind, tuple(items)))

    def last_list(self, kind: str) -> tuple[Item, ...]:
        for display in reversed(self.displays):
            if display.kind == kind and display.role == "list":
                return display.items
        return ()

    def lists(self, kind: str) -> list[tuple[Item, ...]]:
        """The lists of ``kind`` shown, most recent first."""
        return [d.items for d in reversed(self.displays) if d.kind == kind and d.role == "list"]

    def last_about(self, kind: str) -> str:
        for display in reversed(self.displays):
            if display.kind == kind and display.role == "list":
                return display.about
        return ""

    def focus(self, kind: str) -> Item | None:
        """The one thing the conversation is about now: the last display, when it is one thing."""
        for display in reversed(self.displays):
            if display.kind == kind and display.role != "also":
                return display.items[0] if len(display.items) == 1 else None
        return None

    def everything(self, kind: str) -> list[Item]:
        """Every item of ``kind`` shown, most recent first, each once."""
        found: dict[str, Item] = {}
        for display in reversed(self.displays):
            if display.kind == kind:
                for item in display.items:
                    found.setdefault(item.id, item)
        return list(found.values())


def resolve(text: str, shown: Shown, kind: str, *, ignore: Iterable[str] = ()) -> Resolution:
    """The ``kind`` ids that ``text`` refers to (``ignore``: stems that say what to do, not which)."""
    everything = shown.everything(kind)
    if not everything:
        return Resolution(anything_shown=False)
    last = shown.last_list(kind)
    focus = shown.focus(kind)
    describing = set(stems(text)) - set(ignore) - set(_CUE_WORDS)

    position = ordinal(text)
    if position is not None:
        base = _described(shown, kind, last, describing)
        if not base:
            return _one_or_ask((focus,) if focus else (), everything, "position")
        index = position - 1 if position > 0 else len(base) + position
        if 0 <= index < len(base):
            return Resolution((base[index].id,), how="position")
        return Resolution(choices=base, how="position")
    if _BOTH.search(text):
        base = _described(shown, kind, last, describing)
        asked = set(stems(shown.last_about(kind)))
        named = [item for item in base if asked and asked <= set(stems(item.label))]
        if len(base) != 2 and len(named) == 2:
            base = tuple(named)
        if len(base) == 2:
            return Resolution(tuple(item.id for item in base), how="both")
        return Resolution(choices=base or tuple(everything), how="both")
    cheapest, dearest = bool(_CHEAPEST.search(text)), bool(_DEAREST.search(text))
    if cheapest != dearest:
        base = _described(shown, kind, last, describing)
        priced = [item for item in base if item.price is not None]
        if not priced:
            return Resolution(choices=base, how="price")
        target = min if cheapest else max
        best = target(item.price for item in priced if item.price is not None)
        return _one_or_ask(tuple(item for item in priced if item.price == best), base, "price")
    if describing:
        near = tuple(dict.fromkeys([*last, *((focus,) if focus else ())]))
        matched = _narrow(near, describing) or _narrow(tuple(everything), describing)
        if matched:
            return _one_or_ask(matched, matched, "named")
        if not _PRONOUN.search(text):
            # Describing words that fit nothing shown ("the black one" with nothing black): ask.
            return Resolution(choices=last or tuple(everything), how="unmatched")
    if focus is not None:
        return Resolution((focus.id,), how="focus")
    return Resolution(choices=last or tuple(everything), how="focus")


def naming(text: str, *, ignore: Iterable[str] = ()) -> set[str]:
    """The stems of ``text`` that name a thing ("glide", "mous", "black"): not what to do with it
    (``ignore``), not which one of those shown ("the first", "both"), and no bare numbers."""
    return {w for w in stems(text) if not w.isdigit()} - set(ignore) - set(_CUE_WORDS)


def named_by(items: Sequence[Item], words: set[str]) -> tuple[Item, ...]:
    """The items whose names have every one of ``words``."""
    return tuple(item for item in items if words and words <= set(stems(item.label)))


def points_at(text: str) -> bool:
    """Whether ``text`` picks among what was shown by position or price ("the second one",
    "which one is cheaper?", "both"), unlike "it" or "that", which also say nothing."""
    return any(p.search(text) for p in (_ORDINAL, _BOTH, _CHEAPEST, _DEAREST))


def mentions(text: str) -> bool:
    """Whether ``text`` points at something shown: "it", "that", "the first", "both", "the cheaper"."""
    return any(p.search(text) for p in (_PRONOUN, _ORDINAL, _BOTH, _CHEAPEST, _DEAREST))


def nothing_shown(kind: str) -> str:
    """The answer to a message that picks among ``kind``s when the thread has shown none."""
    return f"I haven't shown any {kind}s yet. Tell me what you are looking for and I will search."


def question(resolution: Resolution, kind: str, limit: int = 10) -> str:
    """The short question back when ``resolution`` is ambiguous or finds nothing."""
    if not resolution.anything_shown:
        return nothing_shown(kind)
    if not resolution.choices:
        return f"I'm not sure which {kind} you mean. Could you name it?"
    lines = [f"Which {kind} do you mean?"]
    for number, item in enumerate(resolution.choices[:limit], start=1):
        price = f" (${item.price:,.2f})" if item.price is not None else ""
        lines.append(f"{number}. {item.label}{price}")
    return "\n".join(lines)


def choices_data(resolution: Resolution, kind: str, limit: int = 10) -> dict[str, Any]:
    """What a question back keeps with its message, so that "the second one" counts in its list."""
    return {
        "kind": kind,
        "items": [
            {"id": item.id, "name": item.label, "price": item.price} for item in resolution.choices[:limit]
        ],
    }


def _one_or_ask(matched: tuple[Item, ...], choices: Sequence[Item], how: str) -> Resolution:
    if len(matched) == 1:
        return Resolution((matched[0].id,), how=how)
    return Resolution(choices=tuple(matched or choices), how=how)


def _described(shown: Shown, kind: str, last: tuple[Item, ...], describing: set[str]) -> tuple[Item, ...]:
    """What "the first", "both" or "the cheaper" counts in: the last list, or the items of it that
    the describing words fit; when they fit none of it, the latest list they fit ("add the first
    running shoes" after a kettle was shown since)."""
    if not describing:
        return last
    for items in shown.lists(kind):
        if narrowed := _narrow(items, describing):
            return narrowed
    return last


def _narrow(items: Sequence[Item], describing: set[str]) -> tuple[Item, ...]:
    """The items whose names have the most describing words (none when no name has any)."""
    if not describing or not items:
        return ()
    scored = [(len(describing & set(stems(item.label))), item) for item in items]
    best = max(score for score, _ in scored)
    if best == 0:
        return ()
    return tuple(dict.fromkeys(item for score, item in scored if score == best))


#: How many answers back a list still counts ("the last one?" after asking about the second).
LIST_WINDOW = 3
#: "the second one", "the 2nd candidate", "number 3": the words a ``listed`` reference replaces.
_ORDINAL_PHRASE = re.compile(
    rf"(?:\bthe\s+)?{_ORDINAL.pattern}(?:\s+(?:one|candidate|person|applicant|cv|document|result|match)\b)?",
    re.IGNORECASE,
)


def listed(text: str, messages: Sequence[Message]) -> tuple[str, str] | None:
    """The document "the second one" means in the list the last answers gave ("tell me more
    about the second one", after "who knows Python?"): ``text`` with those words replaced by
    its title, and its id; ``None`` when ``text`` counts nothing or none of the last
    ``LIST_WINDOW`` answers is a list."""
    position = ordinal(text)
    if position is None:
        return None
    answers = [m.data or {} for m in reversed(messages) if m.role == "assistant"][:LIST_WINDOW]
    data = next((d for d in answers if d.get("composed") == "list"), None)
    if data is None:
        return None
    titles: dict[str, str] = {}
    for source in data.get("sources") or []:
        if isinstance(source, dict) and source.get("title") and source.get("document"):
            titles.setdefault(str(source["document"]), str(source["title"]))
    documents = list(titles.items())
    index = position - 1 if position > 0 else len(documents) + position
    if not 0 <= index < len(documents):
        return None
    document, title = documents[index]
    return _ORDINAL_PHRASE.sub(title, text, count=1), document


def ordinal(text: str) -> int | None:
    """The position ``text`` counts to ("the second one" → 2, "the last" → -1), if any."""
    match = _ORDINAL.search(text)
    if match is None:
        return None
    if match.group("word"):
        return _ORDINALS[match.group("word").casefold()]
    value = int(match.group("nth") or match.group("number"))
    return value if value > 0 else None


def _shows(data: Mapping[str, Any]) -> bool:
    return bool(data.get("tool_calls")) or bool(data.get("choices"))


def _items(raw: Iterable[Any]) -> list[Item]:
    items = []
    for entry in raw:
        if isinstance(entry, Mapping) and entry.get("id"):
            price = entry.get("price")
            items.append(
                Item(
                    str(entry["id"]), str(entry.get("name", "")), float(price) if price is not None else None
                )
            )
    return items


def _prices(output: Any) -> dict[str, float]:
    """id -> price of every object in a tool's output that has both (``price`` or ``unit_price``)."""
    found: dict[str, float] = {}

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            ref = node.get("id") or node.get("product_id")
            price = node.get("price", node.get("unit_price"))
            if isinstance(ref, str) and isinstance(price, int | float) and not isinstance(price, bool):
                found.setdefault(ref, float(price))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(output)
    return found


def _query(arguments: object) -> str:
    """The ``query`` of a call's JSON arguments, if any."""
    try:
        values = json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError:
        return ""
    query = values.get("query") if isinstance(values, dict) else None
    return query if isinstance(query, str) else ""
