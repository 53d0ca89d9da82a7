"""Checking what a model wrote against what the conversation has really seen.

A sentence is *supported* by some evidence (a source's text, a tool's result) when

1. every fact in it appears in the evidence: numbers (prices, counts, years, times,
   percentages), code spans, paths and URLs, identifiers (``AUD-105``, ``run_…``,
   ``PARLEY_MODEL``) and names (capitalised words that do not start the sentence); and
2. enough of its content words (stemmed, stopwords dropped) appear in the evidence:
   ``overlap >= threshold``. The threshold is calibrated by ``bench.answers``; the
   default is in ``parley.answers.compose``.

Facts are what a small model gets wrong ("DELETE /v1/threads/{id}" for a cancel, a price
that contradicts the card, "PayPal" when the FAQ names only cards), and what a reader acts
on, so a single missing fact drops the sentence whatever its overlap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from parley.tools.choice import stems

# A sentence ends at . ! or ? followed by a space (not inside a number or a path), at a blank
# line, or at a line break after a stop; list items are sentences of their own.
_SENTENCE_END = re.compile(
    r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9`*\[])"  # a full stop, then a capital or a number
    r"|\n\s*\n\s*"  # a blank line
    r"|(?<=[.!?:;])[ \t]*\n\s*"  # a line that ends a sentence
    r"|\n(?=\s*(?:[-*\u2022]|\d+[.)])\s)"  # a list item
)
#: In what a model writes, every line break ends a sentence too (a document's text, such as a
#: PDF's, wraps its lines mid-sentence).
_LINE_END = re.compile(_SENTENCE_END.pattern + r"|\n+\s*")
_ABBREVIATION = re.compile(r"(?:\b(?:e\.g|i\.e|etc|vs|approx|incl|Dr|Mr|Mrs|Ms|No)\.)$", re.IGNORECASE)
_CITATION = re.compile(r"\[(\d+)\]")
_CODE = re.compile(r"`([^`]+)`")
_URL_OR_PATH = re.compile(r"(?:https?://\S+|(?<![\w.])/[\w{}.\-]+(?:/[\w{}.\-]*)*)")
_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?::\d\d)?")
_IDENTIFIER = re.compile(
    r"\b(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z][\w]*(?:-[\w]+)+\b|\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b|\b[a-z]+_[\w]+\b"
)
_WORD = re.compile(r"[A-Za-z][\w'\u2019-]*")
_POSSESSIVE = re.compile(r"['\u2019]s$", re.IGNORECASE)
_JSON = re.compile(r"\{\s*\"[^\"]+\"\s*:|\"[\w ]+\"\s*:\s*[\[{\"\d]|\[\s*\{")
#: Capitalised words that are not names wherever they stand.
_NOT_NAMES = frozenset(
    [
        "i",
        "i'm",
        "i've",
        "i'll",
        "i'd",
        "a",
        "an",
        "the",
        "yes",
        "no",
        "ok",
        "okay",
        "you",
        "your",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "we",
        "our",
        "they",
        "their",
        "he",
        "she",
        "his",
        "her",
        "if",
        "when",
        "then",
        "so",
        "and",
        "or",
        "but",
        "also",
        "for",
        "with",
        "from",
        "to",
        "in",
        "on",
        "at",
        "by",
        "of",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "can",
        "could",
        "should",
        "would",
        "will",
        "may",
        "might",
        "must",
        "do",
        "does",
        "did",
        "not",
    ]
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a sentence is supported, and if not, why (for logs, tests and the evaluation)."""

    supported: bool
    missing: tuple[str, ...] = ()
    overlap: float = 1.0


def boundaries(text: str, *, lines: bool = True) -> list[tuple[int, int]]:
    """Where sentences end in ``text``: ``(end of the sentence, start of the next)`` pairs.

    A stop after an abbreviation ("e.g.", "Dr.") is no end; an end needs what follows to
    have begun, so a streamed text's last sentence stays open until more arrives. ``lines``:
    a line break ends a sentence (a model's text); else only after a stop, at a blank line or
    before a list item (a document's wrapped lines).
    """
    pattern = _LINE_END if lines else _SENTENCE_END
    return [
        (m.start(), m.end()) for m in pattern.finditer(text) if not _ABBREVIATION.search(text[: m.start()])
    ]


def sentences(text: str, *, lines: bool = True) -> list[str]:
    """``text`` split into sentences and list items, stripped (a document's also with its
    whitespace collapsed); empty pieces dropped."""
    pieces: list[str] = []
    start = 0
    for end, following in [*boundaries(text, lines=lines), (len(text), len(text))]:
        piece = text[start:end].strip() if lines else " ".join(text[start:end].split())
        if piece:
            pieces.append(piece)
        start = following
    return pieces


def citations(text: str) -> list[int]:
    """The source numbers ``text`` cites (``[2]`` → 2), in order, without repeats."""
    return list(dict.fromkeys(int(n) for n in _CITATION.findall(text)))


def strip_citations(text: str) -> str:
    return re.sub(r"\s*\[\d+\]", "", text).strip()


def clean_citations(text: str, count: int) -> str:
    """Drop citation numbers that match no source (``[0]``, ``[7]`` of 3 sources)."""
    return re.sub(r"\s*\[(\d+)\]", lambda m: m.group(0) if 1 <= int(m.group(1)) <= count else "", text)


def has_json(text: str) -> bool:
    """Whether ``text`` contains a JSON object or an array of objects (raw tool output)."""
    return bool(_JSON.search(text))


def _number(raw: str) -> str:
    value = raw.replace(",", "")
    if "." in value and ":" not in value:
        value = value.rstrip("0").rstrip(".")
    return value


def facts(sentence: str) -> set[str]:
    """The checkable facts of a sentence, normalised: numbers, code, paths, identifiers, names."""
    text = strip_citations(sentence)
    found: set[str] = set()
    for code in _CODE.findall(text):
        found.add(code.strip().casefold())
    bare = _CODE.sub(" ", text)
    for path in _URL_OR_PATH.findall(bare):
        found.add(path.rstrip(".,;:").casefold())
    bare = _URL_OR_PATH.sub(" ", bare)
    for ident in _IDENTIFIER.findall(bare):
        found.add(ident.casefold())
    bare = _IDENTIFIER.sub(" ", bare)
    for number in _NUMBER.findall(bare):
        found.add(_number(number))
    words = _WORD.findall(bare)
    for index, word in enumerate(words):
        if index == 0 or word.casefold() in _NOT_NAMES:
            continue
        if word[0].isupper() and not _starts_clause(bare, word):
            # "Hartley's CV" names Hartley: the possessive is not part of the name.
            found.add(_POSSESSIVE.sub("", word).casefold().strip("'\u2019-"))
    return {f for f in found if f}


def _starts_clause(text: str, word: str) -> bool:
    """A capitalised word right after ``:`` or a list marker starts a clause, it is not a name."""
    at = text.find(word)
    before = text[:at].rstrip()
    return not before or before[-1] in ":;-•*(\"'" or bool(re.search(r"(?:^|\s)\d+[.)]$", before))


@lru_cache(maxsize=4096)
def _evidence(text: str) -> tuple[str, frozenset[str], frozenset[str]]:
    folded = text.casefold()
    numbers = frozenset(_number(n) for n in _NUMBER.findall(_CODE.sub(" ", text)))
    return folded, numbers, frozenset(stems(text))


def missing_facts(sentence: str, evidence: str) -> list[str]:
    """The facts of ``sentence`` that ``evidence`` does not contain."""
    folded, numbers, _ = _evidence(evidence)
    missing = []
    for fact in sorted(facts(sentence)):
        if fact[0].isdigit():
            if fact not in numbers and fact not in folded:
                missing.append(fact)
        elif fact not in folded:
            missing.append(fact)
    return missing


def overlap(sentence: str, evidence: str) -> float:
    """The share of the sentence's content stems that the evidence has (1.0 for none)."""
    words = set(stems(strip_citations(sentence)))
    if not words:
        return 1.0
    return len(words & _evidence(evidence)[2]) / len(words)


def judge(sentence: str, evidence: str, threshold: float) -> Verdict:
    """Whether ``evidence`` supports ``sentence``: every fact in it, and enough of its words."""
    missing = tuple(missing_facts(sentence, evidence))
    share = overlap(sentence, evidence)
    return Verdict(not missing and share >= threshold, missing, share)


def best_support(sentence: str, evidence: Iterable[str], threshold: float) -> tuple[int, Verdict] | None:
    """The index of the first piece of evidence that supports ``sentence`` best, or ``None``."""
    best: tuple[int, Verdict] | None = None
    for index, text in enumerate(evidence):
        verdict = judge(sentence, text, threshold)
        if verdict.supported and (best is None or verdict.overlap > best[1].overlap):
            best = (index, verdict)
    return best
