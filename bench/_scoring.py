"""The answer bench's judges: plain functions over the text a user was shown.

They are the bench's own, independent of Parley's answer pipeline: a check written in
``parley/`` and scored by itself would prove nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from bm25s.stopwords import STOPWORDS_EN

#: Scaffolding of Parley's prompts (and of chat templates) that must never reach a user.
ECHOES = [
    re.compile(p, re.IGNORECASE | re.MULTILINE)
    for p in (
        r"^\s*Question:",
        r"^\s*Sources:\s*$",  # the prompt's header alone on its line; "Sources: [1] title" is a list
        r"Answer briefly, using only the sources above",
        r"If (they|the sources|the excerpts) do not answer the question",
        r"Results of the tools",
        r"<\|im_(start|end)\|>",
        r"^\s*<?\|?(system|user|assistant)\|?>?\s*:?\s*$",
        r"You are (Parley's|a recruiting|Parley,)",
    )
]

#: A JSON object or a key/value fragment of one, as a model dumping a tool result writes it.
JSON_FRAGMENT = re.compile(r"\{\s*\"|\"[\w .-]{1,40}\"\s*:\s*[\[{\"\d\-tfn]|\[\s*\{")

_APOS = "['\u2019]?"
DECLINE = re.compile(
    rf"\b(i\s+(don{_APOS}t|do\s+not)\s+know|i\s+(couldn{_APOS}t|could\s+not|can{_APOS}t|cannot)\s+find"
    r"|i\s+found\s+nothing|no\s+(relevant\s+)?(information|sources?|candidates?|results?)\s+(about|on|for|match)"
    r"|(is|are)\s+not\s+(covered|mentioned)\s+in)",
    re.IGNORECASE,
)

STOP = frozenset(STOPWORDS_EN) | {
    # Words any fluent reply adds around facts; they carry no claim to check.
    "also",
    "can",
    "could",
    "would",
    "may",
    "might",
    "one",
    "ones",
    "here",
    "found",
    "sure",
    "yes",
    "let",
    "like",
    "know",
    "help",
    "please",
    "just",
    "get",
    "use",
    "using",
    "used",
    "via",
    "need",
    "needs",
    "want",
    "see",
    "added",
    "add",
    "cart",
    "product",
    "products",
    "shown",
    "show",
    "which",
    "mean",
    "anything",
    "else",
    "sorry",
    "okay",
    "the",
    "according",
    "source",
    "sources",
    "faq",
    "short",
    # Pronouns and the words of a "who knows X" question.
    *("you", "your", "yours", "we", "our", "has", "have", "experience", "worked", "knows", "who"),
}
COURTESY = re.compile(r"\s*(please|try|ask|let me know|feel free|tell me)\b", re.IGNORECASE)
CITATION = re.compile(r"\[(\d+)\]")
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,:]\d+)*")
#: Identifiers: code spans, paths, dotted/underscored/CamelCase tokens, words with digits.
IDENTIFIER = re.compile(
    r"`([^`]+)`|(?<!\w)(/[\w{}./-]+|\w+(?:[._]\w+)+|[a-z]+[A-Z]\w*|[A-Za-z]+\d\w*|[A-Z]{2,}[\w-]*)"
)
WORD = re.compile(r"[a-zà-ÿ0-9]+", re.IGNORECASE)
NAME = re.compile(r"\b[A-Z][a-zà-ÿ]+(?:[ \t]+[A-Z][a-zà-ÿ]+){1,2}\b")


def normal(text: str) -> str:
    """Lower case, no backticks or markdown emphasis, one space between words."""
    return re.sub(r"\s+", " ", re.sub(r"[`*_]", "", text)).strip().lower()


def echoes(text: str) -> list[str]:
    """The prompt-scaffolding patterns found in ``text``."""
    return [p.pattern for p in ECHOES if p.search(text)]


#: An inline code span: where a source's answer quotes a request field (`"stream": true`).
_INLINE_CODE = re.compile(r"(?<!`)`[^`\n]{1,80}`(?!`)")


def has_json(text: str) -> bool:
    """Whether ``text`` dumps JSON. A short inline code span quoting a field (an FAQ's answer
    "send `"multitask": "enqueue"`") is how the sources themselves write a request, not a dump."""
    return bool(JSON_FRAGMENT.search(_INLINE_CODE.sub("", text)))


def declined(text: str) -> bool:
    """The reply says it doesn't know (in its first two sentences: a refusal leads)."""
    return bool(DECLINE.search(" ".join(sentences(text)[:2]) or text))


#: The server's framing of a composed answer, which states no fact about the sources: a list's
#: head ("3 matches in the documents I have:"), a decline's pointer to the topics it does cover,
#: a named FAQ entry's pointer to the next ones ("Also close: "…" [2] and "…" [3]."), a cut
#: list's tail ("…and 3 more.").
FRAMING = re.compile(
    r"^(\d+ match(es)? in the documents|no document mentions .* the closest i have:$"
    r"|the closest topics i can answer about:|also close:|(\u2026|\.\.\.)and \d+ more\.?$)",
    re.IGNORECASE,
)


def _bare(line: str) -> str:
    """A line without its list bullet and surrounding space."""
    return line.strip().lstrip("-*• ").strip()


def sentences(text: str) -> list[str]:
    """The reply's sentences, without a server-added "Sources: [1] ..." list line or the framing
    of a composed answer (``FRAMING``)."""
    out = []
    for line in map(_bare, text.splitlines()):
        if not line or re.match(r"sources?:\s*\[\d", line, re.IGNORECASE) or FRAMING.search(line):
            continue
        # A citation after the full stop stays with its sentence: "... 30 days. [1] Next ..."
        pieces = re.split(r"(?<=[.!?\]])\s+(?=[A-Z(\"`])", line)
        out += [s.strip() for s in pieces if s.strip() and not FRAMING.search(s.strip())]
    return out


def claims(text: str) -> str:
    """The reply without its framing lines: what it says, and cites, as its answer. An FAQ entry
    offered as "Also close" is cited there so its answer is a click away, not cited as the answer."""
    return "\n".join(line for line in text.splitlines() if not FRAMING.search(_bare(line)))


def cited(text: str) -> set[int]:
    return {int(n) for n in CITATION.findall(text)}


def _stem(word: str) -> str:
    return word[:5]


def content_words(text: str) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if len(w) >= 3 and w not in STOP and not w.isdigit()]


def unsupported_reason(sentence: str, reference: str) -> str | None:
    """Why ``sentence`` is not supported by ``reference`` (the cited sources' text), or None.

    A sentence is supported when every number, identifier and capitalised name in it occurs
    in the reference, and at least half its content words (compared on a 5-letter prefix,
    so "refunded" matches "refund") do. A refusal or a question is never an unsupported claim.
    """
    if declined(sentence) or sentence.rstrip().endswith("?") or COURTESY.match(sentence):
        return None  # a refusal, a question back or an invitation claims nothing
    body = CITATION.sub("", sentence)
    ref = normal(reference)
    ref_compact = ref.replace(" ", "")
    for number in NUMBER.findall(body):
        if number not in ref and number.replace(",", "") not in ref_compact:
            return f"number {number}"
    for groups in IDENTIFIER.findall(body):
        ident = normal(next(g for g in groups if g))
        if len(ident) > 2 and ident not in ref and ident.replace(" ", "") not in ref_compact:
            return f"identifier {ident}"
    for match in NAME.finditer(body):
        words = _trimmed(match.group(0))
        if len(words) >= 2 and normal(" ".join(words)) not in ref:
            return f"name {' '.join(words)}"
    words = content_words(body)
    if not words:
        return None
    ref_stems = {_stem(w) for w in WORD.findall(ref)}
    share = sum(_stem(w) in ref_stems for w in words) / len(words)
    return None if share >= 0.5 else f"content {share:.0%} found"


def unsupported(text: str, reference: str) -> list[str]:
    """The sentences of ``text`` the reference does not support."""
    return [s for s in sentences(text) if unsupported_reason(s, reference) is not None]


def has_fact(text: str, fact: str) -> bool:
    return normal(fact) in normal(text)


def key_span(answers: Sequence[str], words: int = 20) -> list[str]:
    """StackFAQ's gold fact: the content words (at most ``words``) of the first sentence of the
    entry's first answer that has four or more of them. The first answer is the thread's
    accepted/top one; its first substantial sentence is the answer's gist."""
    for answer in answers:
        for sentence in re.split(r"(?<=[.!?])\s+", answer):
            found = list(dict.fromkeys(content_words(sentence)))
            if len(found) >= 4:
                return found[:words]
    return list(dict.fromkeys(content_words(" ".join(answers))))[:words]


def covers(text: str, span: Iterable[str], share: float = 0.6) -> bool:
    """``text`` repeats at least ``share`` of the span's content words (5-letter prefixes)."""
    span = list(span)
    have = {_stem(w) for w in content_words(text)}
    return bool(span) and sum(_stem(w) in have for w in span) / len(span) >= share


def _trimmed(span: str) -> list[str]:
    """A capitalised run's words without the stop words at its ends ("Both Jordan Pike" →
    Jordan Pike). Words inside stay: the run is checked as written, and dropping "In" from
    "Women In Construction" would make a name that is nowhere."""
    words = span.split()
    while words and words[0].lower() in STOP:
        words = words[1:]
    while words and words[-1].lower() in STOP:
        words = words[:-1]
    return words


def people_named(text: str, known: Iterable[str]) -> set[str]:
    """The known candidates whose full name the text contains."""
    low = normal(text)
    return {name for name in known if normal(name) in low}


def invented_people(text: str, known: Iterable[str], reference: str) -> set[str]:
    """Person-like names (two or three capitalised words) that are neither a known candidate's
    name nor anywhere in the sources: people the answer made up."""
    known_low = [normal(k) for k in known]
    ref = normal(reference)
    out = set()
    for match in NAME.finditer(text):
        words = _trimmed(match.group(0))
        if normal(" ".join(words)) in ref:
            continue  # as written in a source ("Women In Construction"): not made up
        words = [w for w in words if w.lower() not in STOP]
        while len(words) >= 2:
            name = normal(" ".join(words))
            if any(name in k or k in name for k in known_low) or name in ref:
                break
            if len(words) == 2:
                out.add(" ".join(words))
                break
            words = words[1:]  # "Both Jordan Pike": drop a leading capitalised word
    return out
