"""Guards on a model's streamed reply: no echo of the prompt's scaffolding, no degenerate repetition.

Small local models (SmolLM2-135M) copy their prompt into the answer ("Question: ... Answer
briefly, using only the sources above ...") and loop ("1. Golden Retriever 2. Golden
Retriever ..."). ``Guard`` sits between the provider and the event log: it is fed the text
deltas in order and returns what is safe to show now. It holds back only the current unit
(a sentence, or a line) and only while that unit could still turn out to be an echo, a fake
turn or a repeat; everything else passes at once, so streaming stays token by token.

- Scaffolding: a unit that is (or begins) one of the prompt's own sentences is dropped; a line
  that opens with a turn label (``User:``, ``Question:``, ``Sources:``, a context header) is
  dropped when nothing has been shown yet (the model is copying its prompt) and otherwise ends
  the reply (the model is writing the next turn itself); a chat-template marker such as
  ``<|im_start|>`` ends it too.
- Repetition: a sentence, line or list item that repeats an earlier one (ignoring numbering,
  bullets, case and punctuation) ends the reply before the repeat is shown; so does a run of
  words that loops (the same n-gram again and again).
- Claims about the user (``said``: what the user wrote in the conversation): a sentence that
  says what the user told ("You told me you are in New York."), and the list items after a
  "You told me:", are held until complete and dropped unless the user's words support them
  (``CLAIM_SUPPORT``). SmolLM2 copies the server's "You told me …" replies
  (``parley.answers.remembered``) and fills them with whatever it likes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from parley.answers.check import judge
from parley.context import GROUNDING_INSTRUCTION, MEMORY_HEADER, SOURCES_HEADER, SUMMARY_HEADER

TOOL_RESULTS_HEADER = "Results of the tools the server ran:"
#: Labels that open a turn of the prompt: copied at the start they are dropped, later they end the reply.
TURN_LABELS = (
    "user:",
    "human:",
    "system:",
    "question:",
    "sources:",
    "context:",
    "assistant:",
)
#: Labels a model puts before its own answer: dropped, the answer after them is kept.
ANSWER_LABELS = ("answer:", "response:")
HEADERS = (SOURCES_HEADER, MEMORY_HEADER, SUMMARY_HEADER, TOOL_RESULTS_HEADER)

_MARKER = re.compile(r"<\|[^|<>\s]{1,40}\|>|</s>|\[/?INST\]")
_OPEN_MARKER = re.compile(r"(?:<\|?[^|<>\s]{0,40}\|?|</?s?|\[/?I?N?S?T?)$")
_BOUNDARY = re.compile(r"\n|(?<=[.!?])\s")
_LIST_MARKER = re.compile(r"^\s*(?:[-*•+]|\d{1,3}[.)]|[a-zA-Z][.)])\s+")
_ONLY_MARKER = re.compile(r"^\s*(?:[-*•+]|\d{1,3}[.)]?|[a-zA-Z][.)]?)?\s*$")
_NUMBERING = re.compile(r"\s*(?:\d{1,3}|[a-zA-Z])\.$")
_NON_WORD = re.compile(r"[^\w]+")
_DIGITS = re.compile(r"\d+")
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")

#: A claim about what the user said: "You told me …", "You said that …", "You mentioned …".
_CLAIM = re.compile(
    r"^\s*(?:[-*•+]\s*)?(?:you(?:['\u2019]ve|\s+have)?\s+(?:told|said\s+to)\s+me|you\s+(?:said|mentioned))"
    r"(?:\s+that)?\b[\s:,]*",
    re.IGNORECASE,
)
_CLAIM_OPENERS = ("you told me", "you've told me", "you have told me", "you said", "you mentioned")
#: The share of a claim's content words the user's own words must have (and every name or
#: number in it): "your name is Marta" after "Hi, I'm Marta." has "Marta", half its words.
CLAIM_SUPPORT = 0.5

#: A unit of this many words or more is a repeat wherever it appeared before; a shorter one
#: only when it repeats one of the last ``_SHORT_WINDOW`` units (headings like "Pros:" recur).
_LONG_UNIT = 4
_SHORT_WINDOW = 2
_LOOP_MAX_PERIOD = 16
_LOOP_WORDS = 6 * _LOOP_MAX_PERIOD
#: A prompt sentence shorter than this is too common to call an echo.
_ECHO_MIN_WORDS = 3


def _words(text: str) -> list[str]:
    return _NON_WORD.sub(" ", text.lower()).split()


def _plain(text: str) -> str:
    """Compare units without list numbering, bullets, case or punctuation."""
    return " ".join(_words(_LIST_MARKER.sub("", text, count=1)))


def _echo_form(text: str) -> str:
    """As ``_plain``, and numbers are alike: an echo of "cite them like [1]" may say [3]."""
    return _DIGITS.sub("0", _plain(text))


def scaffolding(instructions: str = "", system: Iterable[str] = ()) -> list[str]:
    """The scaffolding of a prompt: the assistant's instructions, the system messages up to the
    thread's summary (that is conversation, which a reply may restate) and the context's own text."""
    own = [text.split(SUMMARY_HEADER, 1)[0] for text in system]
    return [instructions, *own, GROUNDING_INSTRUCTION, *HEADERS]


def _loops(words: list[str]) -> bool:
    """Whether the words end in a loop: an n-gram repeated back to back."""
    for period in range(1, min(_LOOP_MAX_PERIOD, len(words) // 2) + 1):
        if words[-period:] != words[-2 * period : -period]:
            continue
        copies = 2
        while (
            len(words) >= (copies + 1) * period
            and words[-(copies + 1) * period : -copies * period] == words[-period:]
        ):
            copies += 1
        if copies >= (2 if period >= 5 else 3 if period >= 2 else 4):
            return True
    return False


class Guard:
    """Feed it a reply's text deltas in order; show what it returns; stop when ``stopped`` is set."""

    def __init__(self, scaffolding: Iterable[str] = (), *, said: str | None = None) -> None:
        self.stopped: str | None = None
        self.dropped = 0
        #: Claims about what the user said that the user's words do not support (dropped).
        self.claims = 0
        self._said = said
        self._claiming = False  # after "You told me:", its list items are claims too
        self._intro = ""  # that "You told me:", until one of them is shown
        self._echoes = [
            form
            for text in scaffolding
            for sentence in _SENTENCES.split(text)
            if len((form := _echo_form(sentence)).split()) >= _ECHO_MIN_WORDS
        ]
        self._labels = sorted({*TURN_LABELS, *ANSWER_LABELS, *(h.lower() for h in HEADERS)}, key=len)
        self._unit = ""  # the unfinished sentence or line, shown up to ``_released``
        self._released = 0
        self._line_start = True
        self._dropping_line = False
        self._shown = False
        self._in_code = False
        self._long: set[str] = set()
        self._recent: list[str] = []
        self._words: list[str] = []

    def feed(self, delta: str) -> str:
        """The text that can be shown now, given the next delta."""
        if self.stopped is not None:
            return ""
        shown: list[str] = []
        self._unit += delta
        start = self._released
        while self.stopped is None:
            found = _BOUNDARY.search(self._unit, start)
            if found is not None and found.group() != "\n" and _NUMBERING.match(self._unit, 0, found.start()):
                start = found.end()  # "2. " numbers a list item; it does not end a sentence
                continue
            if found is None:
                shown.append(self._partial())
                break
            end = found.end() if found.group() == "\n" else found.start()
            unit, self._unit = self._unit[:end], self._unit[end:]
            released, self._released = self._released, 0
            start = 0
            shown.append(self._complete(unit, released))
        return self._show("".join(shown))

    def flush(self) -> str:
        """What was held back, once the reply has ended (minus any echo)."""
        if self.stopped is not None or not self._unit:
            return ""
        unit, released = self._unit, self._released
        self._unit, self._released = "", 0
        return self._show(self._complete(unit, released))

    def report(self) -> dict[str, Any] | None:
        """What the guard did, for the message's data; ``None`` when it did nothing."""
        report: dict[str, Any] = {}
        if self.stopped is not None:
            report["stopped"] = self.stopped
        if self.dropped:
            report["dropped"] = self.dropped
        if self.claims:
            report["claims"] = self.claims
        return report or None

    def _show(self, text: str) -> str:
        if not self._shown:
            text = text.lstrip()
            self._shown = bool(text)
        return text

    def _stop(self, why: str) -> str:
        self.stopped = why
        self._unit, self._released = "", 0
        return ""

    def _partial(self) -> str:
        """Release what of the unfinished unit can no longer become an echo, a fake turn or a repeat."""
        unit = self._unit
        if self._dropping_line:
            self._released = len(unit)
            return ""
        marker = _MARKER.search(unit, self._released)
        if marker is not None:
            before = self._complete(unit[: marker.start()], self._released)
            return before + self._stop("echo") if self.stopped is None else ""
        if self._line_start and self._released == 0:
            label = self._label(unit)
            if label == "hold":
                return ""
            if label == "answer":
                self._unit = self._after_label(unit)
                return self._partial()
            if label == "turn":
                return self._turn(unit, final=False)
        if self._released == 0 and self._could_become(unit):
            return ""
        if not self._in_code and _loops(self._words + _plain(unit).split()[:-1]):
            return self._stop("repetition")
        hold = _OPEN_MARKER.search(unit, self._released)
        end = hold.start() if hold is not None and hold.group() else len(unit)
        text = unit[self._released : end]
        self._released = max(self._released, end)
        return text

    def _complete(self, unit: str, released: int) -> str:
        """Decide on a finished unit: a sentence, or a line with its newline."""
        line_start, self._line_start = self._line_start, unit.endswith("\n")
        if self._dropping_line:
            self._dropping_line = not self._line_start
            return ""
        if line_start and released == 0:
            label = self._label(unit, final=True)
            if label == "answer":
                unit = self._after_label(unit)
            elif label == "turn":
                return self._turn(unit, final=True)
        rest = unit[released:]
        stripped = unit.strip()
        if line_start and stripped.startswith("```"):
            self._in_code = not self._in_code
            return rest
        if not stripped:
            return rest
        if released == 0 and self._is_echo(unit):
            self.dropped += 1
            return ""
        intro = ""
        if released == 0 and self._said is not None:
            claim = self._claim(unit)
            if claim == "intro":  # shown with the first of its items the user's words support
                self._intro = unit
                return ""
            if claim == "unsupported":
                self.dropped += 1
                self.claims += 1
                return ""
            intro, self._intro = (self._intro, "") if claim == "supported" else ("", "")
        if self._in_code:
            return rest
        plain = _plain(unit)
        if not plain:
            return rest
        words = plain.split()
        if (len(words) >= _LONG_UNIT and plain in self._long) or plain in self._recent[-_SHORT_WINDOW:]:
            return self._stop("repetition")
        if len(words) >= _LONG_UNIT:
            self._long.add(plain)
        self._recent = [*self._recent[-_SHORT_WINDOW + 1 :], plain]
        self._words = [*self._words, *words][-_LOOP_WORDS:]
        if _loops(self._words):
            return self._stop("repetition")
        return intro + rest

    def _label(self, unit: str, *, final: bool = False) -> str | None:
        """The kind of label opening this line: "turn", "answer", "hold" (could still become one), or None."""
        head = unit.lstrip().lower()
        if not head:
            return None if final else "hold"
        for label in self._labels:
            if head.startswith(label):
                if label in ANSWER_LABELS or (label == "assistant:" and not self._shown):
                    return "answer"
                return "turn"
        if not final and any(label.startswith(head) for label in self._labels):
            return "hold"
        return None

    def _after_label(self, unit: str) -> str:
        head = unit.lstrip()
        return head[head.index(":") + 1 :].lstrip(" ")

    def _turn(self, unit: str, *, final: bool) -> str:
        """A line that opens a turn of the prompt: a copy of the prompt at the start, a fake turn later."""
        if self._shown:
            return self._stop("echo")
        self.dropped += 1
        if final:
            self._dropping_line = not unit.endswith("\n")
        else:
            self._dropping_line = True
            self._released = len(unit)
        return ""

    def _could_become(self, unit: str) -> bool:
        """Whether the unfinished unit is still the start of an echo, a repeat or a claim."""
        if _ONLY_MARKER.match(unit):
            return True
        if self._said is not None and self._could_claim(unit):
            return True
        echo = _echo_form(unit)
        if echo and any(sentence.startswith(echo) for sentence in self._echoes):
            return True
        if self._in_code:
            return False
        plain = _plain(unit)
        return bool(plain) and any(
            seen.startswith(plain) for seen in (*self._recent[-_SHORT_WINDOW:], *self._long)
        )

    def _could_claim(self, unit: str) -> bool:
        if self._claiming and _LIST_MARKER.match(unit):
            return True
        head = " ".join(_LIST_MARKER.sub("", unit).lower().split())
        return bool(head) and any(o.startswith(head) or head.startswith(o) for o in _CLAIM_OPENERS)

    def _claim(self, unit: str) -> str | None:
        """What a finished unit claims about what the user said: ``None`` (nothing), "intro"
        ("You told me:", opening a list of claims), "supported" or "unsupported" by the user's
        words."""
        claim = _CLAIM.match(unit)
        if claim is None:
            if not (self._claiming and _LIST_MARKER.match(unit)):
                self._claiming = bool(self._claiming and not unit.strip())
                return None
            body = _LIST_MARKER.sub("", unit)
        else:
            body = unit[claim.end() :]
            if not body.strip():
                self._claiming = True
                return "intro"
        assert self._said is not None
        return "supported" if judge(body.strip(), self._said, CLAIM_SUPPORT).supported else "unsupported"

    def _is_echo(self, unit: str) -> bool:
        echo = _echo_form(unit)
        if not echo:
            return False
        if len(echo.split()) >= _ECHO_MIN_WORDS and any(s.startswith(echo) for s in self._echoes):
            return True
        return any(sentence in echo for sentence in self._echoes)
