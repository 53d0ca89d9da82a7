"""Grounded answers: retrieve before the model answers, cite, and decline when nothing fits.

The retrieved passages go into the user's turn, numbered, right before the question
(``parley.context.grounded``, within the prompt's token budget): small local models follow
context there far better than in a long system prompt, and every model can cite ``[1]``,
``[2]`` from it. When no passage
reaches the relevance floor, the assistant says it does not know without calling the
model, so nothing is invented; a greeting, a thank-you or a goodbye, which no knowledge base
is about, gets a short reply that says what the assistant is for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from parley.answers.compose import TRUST_SIMILARITY, list_terms
from parley.answers.compose import decline as composed_decline
from parley.knowledge.search import Hit
from parley.tools.choice import stems

if TYPE_CHECKING:
    from parley.assistants import Assistant
    from parley.knowledge.bases import Knowledge

DEFAULT_TOP_K = 4
#: How many passages a question's search reads: the declines look at them all (the words most of
#: them share, the facts none of them has), the answer keeps the top ``top_k``.
SEARCH_DEPTH = 8
#: How many chunks a list question ("who knows Python?") reads to find every matching document.
LIST_DEPTH = 500
#: How many of the closest topics a declined question names.
CLOSEST_TOPICS = 3
NO_ANSWER = (
    "I don't know: I found nothing about that in my knowledge base. "
    "Try rephrasing the question, or ask about something it covers."
)
#: Characters of a source's text kept as its ``snippet``: enough to recognise the passage.
SNIPPET_CHARS = 240

_WORD = re.compile(r"[a-z']+")
_GREETINGS = {"hello", "hi", "hey", "hiya", "howdy", "greetings", "yo", "morning", "afternoon", "evening"}
_THANKS = {"thanks", "thank", "thx", "ty", "cheers", "appreciated"}
_FAREWELLS = {"bye", "goodbye", "farewell", "later", "goodnight", "night"}
#: Words that may come with those and leave a message small talk ("hi there, how are you?").
_FILLER = {
    "there", "you", "all", "everyone", "good", "great", "ok", "okay", "so", "very", "much", "a", "lot",
    "how", "are", "is", "it", "going", "doing", "today", "see", "ya", "again", "for", "that", "the",
    "help", "and", "bot", "assistant", "nice", "cool", "oh", "well", "dear", "friend", "now",
    "that's", "it's", "perfect", "awesome",
}  # fmt: skip


#: Asking what the assistant is ("hi, who are you?", "what can you do?"): answered by its greeting.
_ASKS_WHO = re.compile(
    r"^\W*(?:(?:hi|hello|hey)\W+)?(?:so\W+)?(?:who|what)\s*(?:are|r)\s*(?:you|u)"
    r"(?:\s+(?:exactly|really|for))?\W*$"
    r"|^\W*(?:(?:hi|hello|hey)\W+)?what\s+(?:can|do)\s+you\s+do(?:\s+for\s+me)?\W*$"
    r"|^\W*(?:(?:hi|hello|hey)\W+)?what(?:'s|\s+is)\s+your\s+name\W*$",
    re.IGNORECASE,
)


def asks_who(text: str) -> bool:
    """Whether ``text`` only asks what the assistant is or does ("who are you?")."""
    return bool(_ASKS_WHO.match(text.strip()))


def small_talk(text: str) -> str | None:
    """``"greeting"``, ``"thanks"`` or ``"farewell"`` when ``text`` is only that (a few words,
    each one of them or filler), or only asks what the assistant is (a greeting's reply says);
    else ``None``: a question, however short."""
    if asks_who(text):
        return "greeting"
    words = _WORD.findall(text.lower())
    seen = set(words)
    if not words or len(words) > 8 or ("?" in text and not {"how", "are"} <= seen):
        return None
    if not seen <= _GREETINGS | _THANKS | _FAREWELLS | _FILLER:
        return None
    for kind, vocabulary in (("farewell", _FAREWELLS), ("thanks", _THANKS), ("greeting", _GREETINGS)):
        if vocabulary & seen:
            return kind
    return "greeting" if {"how", "are"} <= seen else None


def small_talk_reply(kind: str, assistant: Assistant) -> str:
    """A reply to small talk; a greeting says what the assistant is for (its ``greeting``
    option, else its name and description)."""
    if kind == "farewell":
        return "Goodbye! Come back whenever you have a question."
    if kind == "thanks":
        return "You're welcome! Ask me anything else you need."
    greeting = assistant.options.get("greeting")
    if greeting:
        return str(greeting)
    return f"Hello! I'm the {assistant.name} assistant. {assistant.description} What would you like to know?"


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The start of a passage, whitespace collapsed, cut at a word and marked with an ellipsis."""
    clean = " ".join(text.split())
    if len(clean) <= limit:
        return clean
    cut = clean[: limit - 1]
    head, space, _ = cut.rpartition(" ")
    return (head if space and len(head) > limit // 2 else cut).rstrip(" ,;:") + "\u2026"


def source_json(hit: Hit) -> dict[str, Any]:
    return {
        "document": hit.document_id,
        "chunk": hit.chunk_id,
        "score": round(hit.score, 6),
        "title": hit.title or hit.document_title,
        "snippet": snippet(hit.text),
    }


def relevant(hits: Sequence[Hit], floor: float | None) -> list[Hit]:
    """Hits about the question: cosine similarity at or above the floor, or (BM25 only) any match."""
    if floor is None:
        return [h for h in hits if (h.bm25 or 0.0) > 0.0]
    return [h for h in hits if h.similarity is not None and h.similarity >= floor]


def prompt_source(hit: Hit) -> dict[str, str]:
    """A hit as the context builder numbers it in the prompt (``parley.context.grounded``)."""
    return {"title": _label(hit), "text": hit.text}


def _label(hit: Hit) -> str:
    if hit.title and hit.title in hit.text:
        return ""  # an FAQ pair names itself
    if hit.title and hit.document_title and hit.title.startswith(hit.document_title):
        return hit.title  # a heading path that starts with the document's title already
    return " > ".join(part for part in (hit.document_title, hit.title) if part)


@dataclass(slots=True)
class Retrieved:
    """What a question found: the relevant hits (the sources), and the closest ones regardless."""

    hits: list[Hit]
    closest: list[Hit]
    #: False when a list question's terms are in no document and ``hits`` are only the closest.
    exact: bool = True
    #: Everything the search returned, relevant or not.
    found: list[Hit] = field(default_factory=list)
    #: The question's content words, and those no chunk of the bases has, and how similar a
    #: passage must be to be about it anyway (``answers.compose.unfamiliar``; None: no such check).
    terms: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    #: The question's words that at least half of the bases' chunks have (``Knowledge.words_of``).
    common: list[str] = field(default_factory=list)
    familiar: float | None = None


async def retrieve(
    knowledge: Knowledge | None,
    assistant: Assistant,
    question: str,
    *,
    run_options: Mapping[str, Any] | None = None,
    listing: bool = False,
    attached: Sequence[Hit] = (),
    document: str | None = None,
) -> Retrieved:
    """Search the assistant's knowledge bases for the sources of an answer.

    ``attached``: passages of the files attached to the run (``parley.answers.attachments``),
    which come first: the user chose them for this question.

    ``listing``: the question asks for every document that matches ("who knows Python?"), so
    every chunk that has all of its terms is a candidate, and each document counts once.
    ``document``: the question is about this document only ("the second one" of a list, or
    the document it names), so its best passages are the sources, however close.
    """
    hits: list[Hit] = []
    found: list[Hit] = []
    exact = True
    words: tuple[list[str], list[str], list[str]] = ([], [], [])
    familiar = None
    if assistant.knowledge_bases and knowledge is not None and knowledge.owner_id is not None:
        options = assistant.options
        k = int(options.get("top_k", DEFAULT_TOP_K))
        bases = await knowledge.bases_named(knowledge.owner_id, assistant.knowledge_bases)
        kb_ids = [kb.id for kb in bases]
        terms = set(list_terms(question)) if listing else set()
        if kb_ids and (run_options or {}).get("retrieval") == "all":
            hits = found = await knowledge.first_chunks(kb_ids, k)
        elif kb_ids and terms:
            found = await knowledge.search_bases(kb_ids, question, mode="bm25", k=LIST_DEPTH)
            words = knowledge.words_of(kb_ids, question)
            hits = one_per_document(h for h in found if terms <= set(stems(f"{h.document_title} {h.text}")))
            if not hits:  # no document has every term: the closest ones, by meaning
                exact = False
                found = await knowledge.search_bases(
                    kb_ids, question, mode=options.get("retrieval", "hybrid"), k=k
                )
                # Only documents close by meaning: a list of people who do not match is noise.
                floor = (
                    options.get("trust_similarity", TRUST_SIMILARITY) if knowledge.dense_available else None
                )
                hits = one_per_document(relevant(found, None if floor is None else float(floor)))
        elif kb_ids:
            # FAQ entries rank by their own questions too (``parley.knowledge.search``).
            found = await knowledge.search_bases(
                kb_ids,
                question,
                mode=options.get("retrieval", "hybrid"),
                k=max(k, SEARCH_DEPTH),
                document=document,
            )
            floor = options.get("min_similarity", knowledge.relevance_floor())
            # The document the question is about is relevant as a whole: its best passages are.
            hits = (found if document else relevant(found, None if floor is None else float(floor)))[:k]
            familiar = options.get("familiar_similarity", knowledge.familiar_similarity())
            words = knowledge.words_of(kb_ids, question)
    return Retrieved(
        [*attached, *hits],
        found[:CLOSEST_TOPICS],
        exact,
        found,
        *words,
        None if familiar is None else float(familiar),
    )


def one_per_document(hits: Iterable[Hit]) -> list[Hit]:
    """The best hit of each document, best first."""
    best: dict[str, Hit] = {}
    for hit in hits:
        best.setdefault(hit.document_id, hit)
    return list(best.values())


def declined(
    assistant: Assistant,
    question: str,
    closest: Sequence[Hit] = (),
    missing: Sequence[str] = (),
    apart: Sequence[str] = (),
) -> tuple[str, str]:
    """ "I don't know", said without the model, and its kind: nothing retrieved is about the
    question, or the question names something no source mentions (``missing``), or words that
    no one document has together (``apart``); the reply names the closest topics covered. Small
    talk, which no knowledge base is about, gets a short reply instead."""
    kind = small_talk(question)
    if kind is not None:
        return small_talk_reply(kind, assistant), "small_talk"
    reply = str(assistant.options.get("no_answer", NO_ANSWER))
    return composed_decline(reply, closest, missing, apart).text, "declined"
