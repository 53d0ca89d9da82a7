"""Replies after tools: the tools' own summaries, or a capable model's text checked against the results.

A model that has read tool results writes prices, ids and counts, and a wrong one contradicts
the cards the user sees beside it. So once tools have run, a model's text is released sentence
by sentence, and only a sentence whose facts (numbers, ids, names: ``check.missing_facts``)
all appear in the run's tool calls and results, with no JSON in it. The tools' summaries are
the reply when nothing the model wrote survives, and the whole reply for a small model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from parley.answers.check import has_json, missing_facts, overlap, sentences
from parley.answers.compose import SUPPORT_THRESHOLD
from parley.tools.calls import Outcome
from parley.tools.choice import stems


def summaries(outcomes: Iterable[Outcome]) -> str:
    """The outcomes' summaries as one reply, each once, in order."""
    return "\n\n".join(dict.fromkeys(o.summary for o in outcomes if o.summary))


def evidence(outcomes: Iterable[Outcome]) -> str:
    """What a reply after these outcomes may state: their arguments, outputs and summaries."""
    parts: list[str] = []
    for outcome in outcomes:
        parts.append(outcome.call.arguments)
        parts.append(json.dumps(outcome.output, ensure_ascii=False, default=str))
        parts.append(outcome.summary)
    return "\n".join(parts)


def supported(sentence: str, evidence: str) -> bool:
    """Whether a sentence may be shown after tools: plain prose whose every fact is in ``evidence``
    and enough of whose words are."""
    if has_json(sentence) or "{" in sentence or "}" in sentence:
        return False
    if not any(ch.isalpha() for ch in sentence):
        return False
    if missing_facts(sentence, evidence):
        return False
    # "Here you go." and "Enjoy!" state nothing to check; a longer claim ("You can undo this later
    # from the billing page") needs its words there, as a grounded sentence does in its source.
    return len(set(stems(sentence))) < 3 or overlap(sentence, evidence) >= SUPPORT_THRESHOLD


@dataclass(slots=True)
class Gate:
    """Lets a streamed text through one complete sentence at a time, when ``supported``.

    ``feed`` returns the text to show now (supported sentences joined by the line breaks or
    spaces that separated them); ``flush`` ends a turn and returns what its last sentence
    allows. ``dropped`` keeps what was held back, for logs and tests.
    """

    evidence: str = ""
    released: bool = False
    dropped: list[str] = field(default_factory=list)
    _buffer: str = ""
    _cursor: int = 0
    _turn_started: bool = False

    def add_evidence(self, text: str) -> None:
        self.evidence = f"{self.evidence}\n{text}" if self.evidence else text

    def begin_turn(self) -> None:
        self._buffer, self._cursor, self._turn_started = "", 0, False

    def feed(self, text: str) -> str:
        self._buffer += text
        pieces = sentences(self._buffer[self._cursor :])
        return self._release(pieces[:-1])

    def flush(self) -> str:
        """End a turn: what its last sentence allows."""
        out = self._release(sentences(self._buffer[self._cursor :]))
        self.begin_turn()
        return out

    def _release(self, pieces: list[str]) -> str:
        out = ""
        for piece in pieces:
            start = self._buffer.find(piece, self._cursor)
            gap = self._buffer[self._cursor : start] if start >= 0 else " "
            self._cursor = start + len(piece) if start >= 0 else self._cursor
            if not supported(piece, self.evidence):
                self.dropped.append(piece)
                continue
            if self._turn_started:
                out += "\n\n" if "\n\n" in gap else "\n" if "\n" in gap else " "
            out += piece
            self._turn_started = True
            self.released = True
        return out
