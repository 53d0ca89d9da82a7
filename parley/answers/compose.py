"""Grounded answers composed by the server from the sources, not written by a small model.

Given the passages retrieved for a question (numbered [1], [2] … as in the ``retrieval``
event), an answer is, in this order:

1. **declined** when the question names something no source mentions (a name, number or
   identifier: "PayPal", "Peru", "Rust"): the sources cannot be about it, however close their
   words are. The reply says so and names the closest topics the knowledge base does cover;
2. a **list** for "who knows X" / "which candidates …" questions: one line per matching
   document (its title, e.g. the candidate's name) with the sentence that matched, cited.
   The caller retrieves every matching document for these (``list_terms``), not the top few;
3. the **entry's answer** when the best source is a question/answer pair (an FAQ entry). Unless
   the question is clearly that entry's own question in other words (``paraphrased``), the
   answer first names the entry it is ("The closest entry I have is "Can other people see my
   conversations?": No. …"), and then the next entries the search found, so a reader whose
   question the entry does not answer sees so at once, and what else to ask;
4. a **summary** of an attached file or document when the message asks for one: its first
   sentences;
5. otherwise **extractive**: the sources' sentences that share the most words with the
   question, each cited.

A capable model may instead rephrase (``parley.agent``): its sentences pass through
``SentenceGate``, which keeps a sentence only when a cited source (or, uncited, the source
that supports it best) supports it (``parley.answers.check``) and drops the rest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from parley.answers.attachments import wants_summary
from parley.answers.check import (
    boundaries,
    citations,
    clean_citations,
    facts,
    judge,
    sentences,
    strip_citations,
)
from parley.knowledge.search import Hit
from parley.tools.choice import content_stems, stems

#: Content-word share a model's sentence needs in its source (``check.judge``); calibrated on
#: the demo FAQ's calibration split by ``bench.answers`` (docs/ANSWERS.md).
SUPPORT_THRESHOLD = 0.6
#: A source at least this similar (cosine) to the question is about it even when it shares
#: none of its words (``unrelated``); calibrated by ``bench.answers`` (docs/ANSWERS.md).
TRUST_SIMILARITY = 0.6
#: Words of a question no chunk has that ``unfamiliar`` needs at least: in the calibration
#: split of ``bench.answers``, every question with one such word is answerable (docs/ANSWERS.md).
UNKNOWN_WORDS = 2
#: How much nearer an FAQ entry's own question must be than every other entry's for the user's
#: question to count as its paraphrase (``paraphrased``): above the 0.06 of the calibration
#: split's unanswerable questions (docs/ANSWERS.md).
QUESTION_MARGIN = 0.1
#: At most this many sentences in an extractive answer, and this many characters.
EXTRACT_SENTENCES = 3
EXTRACT_CHARS = 400
#: Lines in a list answer at most (a list question retrieves every matching document).
LIST_LIMIT = 25
#: Other FAQ entries a named entry's answer offers ("Also close: …").
ALSO_CLOSE = 2

_QA = re.compile(r"^\s*Q:\s*(?P<q>.+?)\s+A:\s*(?P<a>.+)$", re.DOTALL)
_LIST_QUESTION = re.compile(
    r"^\s*(?:(?:and|so|ok|okay|hi|hello|please)[,\s]+)*"
    r"(?:who\b|which\s+(?:candidates?|people|persons?|applicants?|ones?|of\s+them|cvs?|documents?)\b|"
    r"(?:list|name|find|show)\s+(?:me\s+)?(?:all\s+|every\s*one\s+|everybody\s+|the\s+)?"
    r"(?:candidates?|people|persons?|applicants?|cvs?|everyone|anyone|documents?)\b|"
    r"(?:(?:is|are)\s+there\s+(?:any\s+)?(?:candidates?|people|persons?|applicants?|cvs?|one|some\s*one)\b|"
    r"do\s+we\s+have\s+(?:any\s+)?(?:candidates?|people|applicants?|cvs?|one|some\s*one)\b|"
    r"does\s+anyone\b|anyone\b|any\s+candidates?\b))",
    re.IGNORECASE,
)
#: Words of a list question that say "who", not "what about": dropped from its terms.
_LIST_WORDS = frozenset(
    stems(
        "who which whom whose candidate candidates people person persons applicant applicants cv cvs "
        "document documents list name find show everyone anyone anybody everybody someone somebody "
        "there have has had knows know knowing skill skills skilled experience experienced "
        "background worked works working work job jobs role roles speak speaks speaking "
        "use uses used using years year good strong expert familiar with do does did done doing been ever can could "
        "any all every one ones them us our me please "
        "best better fit fits fitting suited suitable ideal right perfect strongest top most qualified "
        "match matches matching position positions opening vacancy"
    )
)
_ACRONYM = re.compile(r"[A-Z][A-Z0-9]+s?")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


@dataclass(slots=True)
class Composed:
    """A composed answer: its text and the kind of composition (recorded on the message)."""

    text: str
    kind: str


def qa_pair(text: str) -> tuple[str, str] | None:
    """``(question, answer)`` of an FAQ chunk (``Q: … A: …``), else ``None``."""
    found = _QA.match(text)
    return (found["q"].strip(), found["a"].strip()) if found else None


def is_list_question(text: str) -> bool:
    return bool(_LIST_QUESTION.search(text))


def list_terms(question: str) -> list[str]:
    """The stems a list question is about ("who knows Python?" → ``["python"]``)."""
    return [s for s in dict.fromkeys(content_stems(question)) if s not in _LIST_WORDS]


def list_words(question: str) -> list[str]:
    """The question's own words behind ``list_terms`` ("Who knows Rust?" → ``["Rust"]``)."""
    terms = set(list_terms(question))
    return [w for w in dict.fromkeys(re.findall(r"[\w+#.-]*\w[+#]*", question)) if set(stems(w)) & terms]


def absent_facts(question: str, hits: Sequence[Hit]) -> list[str]:
    """The question's facts (names, numbers, identifiers) that no retrieved source mentions.

    Acronyms ("RAM", "API", "POSTs") are left out: people write them where the sources spell
    the thing out ("1 GB of memory")."""
    text = "\n".join(f"{h.document_title}\n{h.title}\n{h.text}" for h in hits).casefold()
    missing = []
    for fact in sorted(facts(question)):
        found = re.search(re.escape(fact), question, re.IGNORECASE)
        spelled = found.group(0) if found else fact
        if fact not in text and not _ACRONYM.fullmatch(spelled):
            missing.append(spelled)
    return missing


def named_document(question: str, hits: Sequence[Hit]) -> str | None:
    """The one document among ``hits`` whose title has the names the question gives that are
    in titles ("summarise Amelia Hartley's CV", "does Amelia know Kubernetes?"): the question
    is about that document. ``None`` when the hits come from one document only (an FAQ's
    entries: its title names the product every question names), or no or several titles fit."""
    titles = {h.document_id: set(re.findall(r"[\w'-]+", h.document_title.casefold())) for h in hits}
    if len(titles) < 2:
        return None
    names = {f for f in facts(question) if f.isalpha()}
    titled = {name for name in names if any(name in words for words in titles.values())}
    fits = [document for document, words in titles.items() if titled and titled <= words]
    return fits[0] if len(fits) == 1 else None


def unrelated(
    question: str,
    best: Hit,
    found: Sequence[Hit],
    trust: float = 1.0,
    everywhere: Collection[str] | None = None,
) -> bool:
    """Whether the best source shares none of the question's own words (stemmed), leaving out
    words that most of what the search found has and, when ``everywhere`` is given, at least
    half of the knowledge base has too (the product's name, in an FAQ about it): "How many
    employees does the company behind Parley have?" is near the FAQ entry on where Parley keeps
    its data by meaning, and about nothing in it. A word the search found everywhere only
    because the question is about it stays ("assistants", in "what assistants are built in?").
    A source at least ``trust`` similar to the question is trusted whatever its words ("define
    a custom assistant" and "create my own assistant")."""
    asked = set(content_stems(question))
    if not asked or (best.similarity is not None and best.similarity >= trust):
        return False  # close enough by meaning to be trusted whatever the words
    pool = [set(stems(f"{h.title} {h.text}")) for h in found] or [set()]
    common = {w for w in asked if sum(w in words for words in pool) >= max(2, len(pool) * 3 / 4)}
    if everywhere is not None:
        common &= set(everywhere)
    return not (asked - common) & set(stems(f"{best.document_title} {best.title} {best.text}"))


def paraphrased(best: Hit, found: Sequence[Hit], familiar: float | None, *, own: bool = False) -> bool:
    """Whether the question is a paraphrase of the best source's FAQ question: at least
    ``familiar`` similar to it, and nearer than to any other entry's by ``QUESTION_MARGIN``.
    Such a question is about that entry whatever words it uses: "how do I get parley running
    on my laptop" shares only "Parley" and "run", which half the FAQ has, with "How do I
    install and start Parley?" (0.62, the next entry 0.46). A question about something else
    lands between several entries' questions ("How many employees does the company behind
    Parley have?" is 0.65 and 0.63 from two).

    An entry's questions are its own and the other ways to ask it; ``own``: its own question
    only, the one its answer is shown under, against the other entries' own. An answer is
    shown without naming its entry only then: "how do I stop a reply that takes forever?" is
    0.80 from "replies take forever, how can I speed them up?", a way of asking "Why are the
    answers slow?", and 0.41 from that question itself."""
    near = _question_similarity(best, own)
    if familiar is None or near is None or near < familiar:
        return False
    return _nearest_by_margin(best, found, own=own)


def stands_out(best: Hit, found: Sequence[Hit]) -> bool:
    """Whether the best source is an FAQ entry whose questions (its own, or another way to ask
    it) are nearer to the user's than any other entry's by ``QUESTION_MARGIN``: the question is
    about that entry, if in words the knowledge base never uses ("will it work on a box with no
    network access?" is 0.38 from "Does Parley need an internet connection?", the next entry
    0.23). A question about something else lands between several entries' questions."""
    return _nearest_by_margin(best, found)


def _nearest_by_margin(best: Hit, found: Sequence[Hit], *, own: bool = False) -> bool:
    near = _question_similarity(best, own)
    if near is None:
        return False
    others = [_question_similarity(h, own) for h in found if h.chunk_id != best.chunk_id]
    return near - max((s for s in others if s is not None), default=0.0) >= QUESTION_MARGIN


def _question_similarity(hit: Hit, own: bool) -> float | None:
    """An FAQ entry's cosine to the question: its own question's (``own``), or its nearest
    question's, the other ways to ask it included."""
    return hit.own_question_similarity if own else hit.question_similarity


def same_question(question: str, best: Hit) -> bool:
    """Whether the question has the same content words as the best source's own FAQ question
    ("What is your refund policy?" and "What is the refund policy?"): it needs no naming."""
    pair = qa_pair(best.text)
    asked = set(content_stems(question))
    return pair is not None and bool(asked) and asked == set(content_stems(pair[0]))


_POLAR = re.compile(r"\s*(?:yes|no)\b", re.IGNORECASE)


def answers_yes_or_no(best: Hit) -> bool:
    """Whether the best source is an FAQ entry whose answer opens with "Yes" or "No". Such an
    answer is only right under its own question: "does parley work offline?" is a paraphrase of
    "Does Parley need an internet connection?", whose answer is "No.", so unless the question
    has the entry's own words the reply names the question that "No" answers."""
    pair = qa_pair(best.text)
    return pair is not None and _POLAR.match(pair[1]) is not None


def unfamiliar(terms: Sequence[str], unknown: Sequence[str], best: Hit, trust: float) -> bool:
    """Whether at least half of the question's content words (``terms``), and at least
    ``UNKNOWN_WORDS`` of them, are ``unknown`` (no chunk of the knowledge bases has them) and
    the best source is not ``trust`` similar to it (its text, or an FAQ entry's own question):
    "Can I fine-tune the model on my own data?" ("fine" and "tune" are nowhere) is near "How do
    I create my own assistant?" by its other words, and about something the knowledge base
    never mentions. One word the base never uses is as often the user's synonym for one it
    does ("how do I listen on all interfaces?"). A paraphrase in the user's own words ("how can
    I load my own documents") is close to its entry's question however many of its words the
    base lacks."""
    if not terms or len(unknown) < UNKNOWN_WORDS or len(unknown) * 2 < len(terms):
        return False
    close = [s for s in (best.similarity, best.question_similarity) if s is not None]
    return max(close, default=0.0) < trust


def decline(
    reply: str, closest: Sequence[Hit], missing: Sequence[str] = (), apart: Sequence[str] = ()
) -> Composed:
    """ "I don't know", with what was not found (``missing``: words no source has; ``apart``:
    words no one document has together) and the closest topics the sources do cover."""
    text = reply
    if missing:
        text = f"I don't know: my knowledge base says nothing about {_join(missing)}."
    elif apart:
        text = f"I don't know: no document mentions {_join(apart, 'and')} together."
    topics = list(dict.fromkeys(_topic(h) for h in closest if _topic(h)))[:3]
    if topics:
        listed = "; ".join(topics)
        text += " The closest topics I can answer about: " + listed + ("" if listed[-1] in ".?!" else ".")
    return Composed(text, "declined")


def _topic(hit: Hit) -> str:
    pair = qa_pair(hit.text)
    if pair is not None:
        return pair[0]
    return " > ".join(
        part for part in (hit.document_title, hit.title) if part and part != hit.document_title
    ) or (hit.document_title)


def spoken(items: Sequence[str], last: str = "and") -> str:
    """Items as a sentence lists them: "a", "a and b", "a, b and c" (``last``: "and" or "or")."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {last} " + items[-1]


def _join(items: Sequence[str], last: str = "or") -> str:
    return spoken([f'"{i}"' for i in items], last)


def compose(
    question: str,
    hits: Sequence[Hit],
    *,
    listing: bool = False,
    ranked: bool = True,
    exact: bool = True,
    named: bool = False,
) -> Composed | None:
    """The answer to ``question`` from ``hits`` (numbered from 1, as in the retrieval event), or
    ``None`` when no sentence of theirs shares a word with it.

    ``ranked``: the hits were found for this question (best first), so an FAQ entry on top
    answers it; unranked hits (``retrieval: all``) only offer their sentences. ``named``: the
    question is not clearly the top entry's own (``paraphrased``), so the answer names it.
    """
    if not hits:
        return None
    if listing:
        return list_answer(question, hits, exact=exact)
    if wants_summary(question):
        return summary_answer(hits)
    pair = qa_pair(hits[0].text) if ranked else None
    if pair is not None:
        return Composed(entry_answer(pair, hits[1:]) if named else cited_text([(1, pair[1])]), "faq")
    return extractive(question, hits)


def entry_answer(pair: tuple[str, str], others: Sequence[Hit]) -> str:
    """An FAQ entry's answer under its own question, then the other entries found next, cited
    (``others`` are the hits after the first: numbered from 2) so their answers are a click away."""
    text = f'The closest entry I have is "{pair[0]}": {cited_text([(1, pair[1])])}'
    close: dict[str, int] = {}
    for number, hit in enumerate(others, start=2):
        other = qa_pair(hit.text)
        if other is not None and other[0] != pair[0] and other[0] not in close:
            close[other[0]] = number
    if not close:
        return text
    named = [f'"{q}" [{n}]' for q, n in list(close.items())[:ALSO_CLOSE]]
    return f"{text}\n\nAlso close: {spoken(named)}."


def list_answer(question: str, hits: Sequence[Hit], *, exact: bool = True) -> Composed:
    """One line per matching document: its title and the sentence that matched, cited.

    ``exact`` False: no document has the question's words, and these are only the closest by
    meaning, which the answer says.
    """
    terms = set(list_terms(question)) or set(content_stems(question))
    lines: list[str] = []
    seen: set[str] = set()
    for number, hit in enumerate(hits, start=1):
        if hit.document_id in seen:
            continue
        seen.add(hit.document_id)
        evidence = _best_sentence(terms, hit)
        name = hit.document_title or hit.title or f"Document {number}"
        lines.append(f"- {name}: {evidence} [{number}]" if evidence else f"- {name} [{number}]")
        if len(lines) >= LIST_LIMIT:
            break
    count = len(lines)
    if exact:
        head = f"{count} match{'es' if count != 1 else ''} in the documents I have:"
    else:
        words = _join(list_words(question)) if list_words(question) else "those words"
        head = f"No document mentions {words} as such; the closest I have:"
    return Composed("\n".join([head, *lines]), "list")


def _best_sentence(terms: set[str], hit: Hit, before: int = 10, after: int = 22) -> str:
    """The words around the first match of ``terms`` in the hit's best sentence (a snippet, as a
    search page shows one); with no match, its first sentence that is not its title."""
    best, score = "", 0
    pieces = sentences(hit.text, lines=False)
    for sentence in pieces:
        have = len(terms & set(stems(sentence)))
        if have > score:
            best, score = sentence, have
    if not best:
        best = next((p for p in pieces if p.strip("# ") != hit.document_title and len(p) > 20), "")
        return _words_cut(_BULLET.sub("", best).split(), 0, before + after)
    words = _BULLET.sub("", best).split()
    at = next((i for i, w in enumerate(words) if set(stems(w)) & terms), 0)
    return _words_cut(words, max(0, at - before), at + after)


def _words_cut(words: Sequence[str], start: int, end: int) -> str:
    text = " ".join(words[start:end])
    return ("\u2026" if start > 0 else "") + text + ("\u2026" if end < len(words) else "")


def summary_answer(hits: Sequence[Hit], numbers: Sequence[int] | None = None) -> Composed:
    """The first sentences of the first document (in the order the hits came: a file's own).

    ``numbers``: the hits' own source numbers when they are a selection of the sources."""
    numbers = list(numbers or range(1, len(hits) + 1))
    first = hits[0].document_id
    picked: list[tuple[int, str]] = []
    size = 0
    for number, hit in zip(numbers, hits, strict=True):
        if hit.document_id != first:
            continue
        for sentence in sentences(hit.text, lines=False):
            if size + len(sentence) > EXTRACT_CHARS or len(picked) >= EXTRACT_SENTENCES + 1:
                break
            picked.append((number, _BULLET.sub("", sentence)))
            size += len(sentence)
    if not picked:
        picked = [(numbers[0], strip_citations(hits[0].text)[:EXTRACT_CHARS])]
    title = hits[0].document_title or "The document"
    return Composed(f"{title}: {cited_text(picked)}", "summary")


def extractive(question: str, hits: Sequence[Hit]) -> Composed | None:
    """The sources' sentences sharing the most (rarer) words with the question, cited.

    Words of a document's title (a candidate's name) pick the document, not the sentence: a
    question about a person with nothing else to match ("what has Amelia Hartley done?") gets
    the start of that person's document.
    """
    asked = set(content_stems(question))
    titled = set(stems(" ".join(h.document_title for h in hits)))
    named = [h for h in hits if asked & set(stems(h.document_title))]
    asked -= titled
    candidates: list[tuple[float, int, int, str]] = []
    pool = [(n, s) for n, hit in enumerate(hits, start=1) for s in sentences(hit.text, lines=False)]
    frequency: dict[str, int] = {}
    for _, sentence in pool:
        for word in set(stems(sentence)):
            frequency[word] = frequency.get(word, 0) + 1
    for order, (number, sentence) in enumerate(pool):
        words = set(stems(sentence))
        shared = asked & words
        if not shared or len(sentence) < 12:
            continue
        weight = sum(math.log(1 + len(pool) / frequency[w]) for w in shared)
        score = weight / (1 + 0.15 * (number - 1))  # earlier (better ranked) sources first on ties
        candidates.append((score, order, number, _BULLET.sub("", sentence)))
    if not candidates:
        if named:  # "what has Amelia Hartley done?", "tell me about the nurse"
            return summary_answer(named, numbers=[hits.index(h) + 1 for h in named])
        return None
    candidates.sort(key=lambda c: (-c[0], c[1]))
    top = candidates[0][0]
    chosen: list[tuple[int, int, str]] = []
    size = 0
    for score, order, number, sentence in candidates:
        if len(chosen) >= EXTRACT_SENTENCES or score < top * 0.5 or size + len(sentence) > EXTRACT_CHARS:
            break
        chosen.append((order, number, sentence))
        size += len(sentence)
    chosen.sort()  # in the order the sources tell it
    return Composed(cited_text([(n, s) for _, n, s in chosen]), "extractive")


def cited_text(parts: Sequence[tuple[int, str]]) -> str:
    """Sentences with their source numbers: one citation after each run of the same source,
    inside its last sentence's full stop ("… a week [1].")."""
    out: list[str] = []
    for index, (number, sentence) in enumerate(parts):
        sentence = sentence.strip()
        last = index + 1 == len(parts) or parts[index + 1][0] != number
        body = sentence.rstrip(".!?")
        stop = sentence[len(body) :] or "."
        out.append(f"{body} [{number}]{stop}" if last else f"{body}{stop}")
    return " ".join(out)


class SentenceGate:
    """A capable model's answer, let through a sentence at a time when the sources support it.

    ``feed`` takes streamed text and returns the checked sentences ready to show: a sentence
    that cites a source is shown when that source supports it; one that cites none (or only
    numbers that match no source) gets the citation of the source that supports it best;
    ``flush`` does the same for the rest at the end. ``dropped`` keeps what was refused.
    """

    def __init__(
        self,
        sources: Sequence[Mapping[str, str]],
        threshold: float = SUPPORT_THRESHOLD,
        *,
        fallback: str = "",
    ) -> None:
        #: What to show when nothing the model wrote is supported (the extractive answer).
        self.fallback = fallback
        self._texts = [f"{s.get('title', '')}\n{s.get('text', '')}" for s in sources]
        self._threshold = threshold
        self._buffer = ""
        self.shown: list[str] = []
        self.dropped: list[str] = []

    def feed(self, text: str) -> str:
        self._buffer += text
        ends = boundaries(self._buffer)
        if not ends:
            return ""
        end, following = ends[-1]
        complete, self._buffer = self._buffer[:end], self._buffer[following:]
        return self._release(sentences(complete))

    def flush(self) -> str:
        rest, self._buffer = self._buffer, ""
        return self._release(sentences(rest))

    def _release(self, pieces: Sequence[str]) -> str:
        out = []
        for sentence in pieces:
            checked = self.check(sentence)
            if checked is None:
                self.dropped.append(sentence)
            else:
                out.append(checked)
                self.shown.append(checked)
        if not out:
            return ""
        lead = " " if self.shown[: -len(out)] else ""
        return lead + " ".join(out)

    def check(self, sentence: str) -> str | None:
        """The sentence as shown (citations valid and present), or ``None`` when unsupported."""
        if not self._texts:
            return None
        sentence = clean_citations(sentence, len(self._texts)).strip()
        if not strip_citations(sentence):
            return None
        cited = citations(sentence)
        for number in cited:
            if judge(sentence, self._texts[number - 1], self._threshold).supported:
                return sentence
        if cited:  # it names its source, and that source does not say it
            return None
        best: tuple[int, float] | None = None
        for index, text in enumerate(self._texts):
            verdict = judge(sentence, text, self._threshold)
            if verdict.supported and (best is None or verdict.overlap > best[1]):
                best = (index, verdict.overlap)
        if best is None:
            return None
        bare = strip_citations(sentence)
        end = len(bare.rstrip(".!?"))
        return f"{bare[:end]} [{best[0] + 1}]{bare[end:]}"
