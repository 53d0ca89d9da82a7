"""Structure-aware chunking: FAQ pairs, Markdown sections, paragraphs, with overlap.

Sizes are in characters. all-MiniLM-L6-v2 reads 256 word pieces (about 1,000 characters
of English), so a chunk of ~900 characters is embedded whole.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

CHUNK_CHARS = 900
OVERLAP_CHARS = 150

_QUESTION = re.compile(r"^\s*Q:\s*(.*)$")
_ANSWER = re.compile(r"^\s*A:\s*(.*)$")
#: An FAQ entry's questions: ``Q:`` lines up to its ``A:``; and those after the first.
_ENTRY = re.compile(r"\s*(?:Q:[^\n]*\n\s*)+(?=A:)")
_QUESTIONS = re.compile(r"Q:([^\n]*)")
_ALIASES = re.compile(r"^(\s*Q:[^\n]*\n)(?:\s*Q:[^\n]*\n)+(?=\s*A:)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    #: The FAQ question, the heading path or the page: what a citation shows.
    title: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.title}\n{self.text}".encode()).hexdigest()

    @property
    def indexed_text(self) -> str:
        """What search sees: the title carries meaning the body often leaves implicit."""
        return f"{self.title}\n{self.text}" if self.title and self.title not in self.text else self.text


def is_faq(text: str) -> bool:
    """The seed-004 format: ``Q:`` lines each followed by an ``A:`` line."""
    lines = text.splitlines()
    return any(
        _QUESTION.match(line) and any(_ANSWER.match(nxt) for nxt in lines[i + 1 : i + 3] if nxt.strip())
        for i, line in enumerate(lines)
    )


def split_faq(text: str) -> list[Chunk]:
    """One chunk per entry; multi-line answers run to the next ``Q:``.

    An entry may have several ``Q:`` lines before its ``A:``: the first is its own question
    (its title, what a citation shows), the others are other ways people ask it, which only
    help the search find the entry (``entry_questions``; ``shown`` leaves them out)."""
    chunks: list[Chunk] = []
    questions: list[str] = []
    answer: list[str] = []

    def close() -> None:
        body = "\n".join(answer).strip()
        if questions and body:
            asked = "".join(f"Q: {q}\n" for q in questions)
            chunks.append(Chunk(f"{asked}A: {body}", questions[0]))

    in_answer = False
    for line in text.splitlines():
        if m := _QUESTION.match(line):
            if questions and not in_answer:
                questions.append(m.group(1).strip())  # another way to ask the same entry
                continue
            close()
            questions, answer, in_answer = [m.group(1).strip()], [], False
        elif questions and not in_answer and (m := _ANSWER.match(line)):
            answer, in_answer = [m.group(1)], True
        elif in_answer and not _HEADING.match(line):
            answer.append(line)
    close()
    return chunks


def entry_questions(text: str) -> list[str]:
    """An FAQ entry's questions (its chunk reads ``Q: … [Q: …] A: …``): its own first, then the
    other ways to ask it; ``[]`` for any other chunk."""
    found = _ENTRY.match(text)
    return [q.strip() for q in _QUESTIONS.findall(found[0])] if found else []


def shown(text: str) -> str:
    """A chunk's text as an answer or a citation shows it: an FAQ entry under its own question
    only (the other ways to ask it are for the search)."""
    return _ALIASES.sub(r"\1", text, count=1)


def split_markdown(text: str, *, size: int = CHUNK_CHARS, overlap: int = OVERLAP_CHARS) -> list[Chunk]:
    """Sections under their heading path (``Install > Docker``), each cut into overlapping windows."""
    path: list[str] = []
    body: list[str] = []
    chunks: list[Chunk] = []
    in_fence = False

    def close() -> None:
        title = " > ".join(path)
        chunks.extend(
            Chunk(piece, title) for piece in split_text("\n".join(body), size=size, overlap=overlap)
        )

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING.match(line)
        if heading:
            close()
            body = []
            level = len(heading.group(1))
            path = [*path[: level - 1], heading.group(2).strip()]
        else:
            body.append(line)
    close()
    return chunks


def split_text(text: str, *, size: int = CHUNK_CHARS, overlap: int = OVERLAP_CHARS) -> list[str]:
    """Pack paragraphs (then sentences, then words) into windows of at most ``size`` characters.

    Each window after the first starts with the last units of the previous one, up to
    ``overlap`` characters, so a fact cut at a boundary is still whole in one chunk.
    """
    units = [u for para in re.split(r"\n\s*\n", text) for u in _units(para.strip(), size)]
    windows: list[str] = []
    current: list[str] = []
    length = 0
    for unit in units:
        if current and length + len(unit) + 1 > size:
            windows.append(_join(current))
            current = _tail(current, overlap)
            length = sum(len(u) + 1 for u in current)
        current.append(unit)
        length += len(unit) + 1
    if current and (not windows or length > sum(len(u) + 1 for u in _tail(current, overlap))):
        windows.append(_join(current))
    return [w for w in windows if w.strip()]


def _units(paragraph: str, size: int) -> list[str]:
    if not paragraph:
        return []
    if len(paragraph) <= size:
        return [paragraph + "\n"]
    units: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        if len(sentence) <= size:
            units.append(sentence)
            continue
        words = sentence.split()
        piece: list[str] = []
        for word in words:
            if piece and sum(len(w) + 1 for w in piece) + len(word) > size:
                units.append(" ".join(piece))
                piece = []
            piece.append(word[:size])
        if piece:
            units.append(" ".join(piece))
    units[-1] += "\n"
    return units


def _tail(units: list[str], overlap: int) -> list[str]:
    tail: list[str] = []
    length = 0
    for unit in reversed(units):
        if length + len(unit) > overlap:
            break
        tail.insert(0, unit)
        length += len(unit) + 1
    return tail


def _join(units: list[str]) -> str:
    out = ""
    for unit in units:
        out += unit if not out or out.endswith("\n") else " " + unit
    return out.strip()
