"""From files and uploads to chunks: Markdown (FAQ ``Q:``/``A:`` pairs or sections), text, PDF.

``parse`` never trusts a name: a PDF must start with ``%PDF-``, text must decode as UTF-8
and hold no NUL bytes. Anything else raises ``UnreadableDocument`` with the reason, so a
folder ingest reports the file and goes on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from parley.knowledge.chunking import Chunk, is_faq, split_faq, split_markdown, split_text
from parley.pdf import UnreadablePdf, read_pdf
from parley.uploads import Received

MARKDOWN = frozenset({".md", ".markdown", ".mdown"})
TEXT = frozenset({".txt", ".text", ""})
PDF = frozenset({".pdf"})
SUPPORTED = MARKDOWN | TEXT | PDF

_H1 = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


class UnreadableDocument(ValueError):
    """A file that cannot become text: wrong type, corrupt, encrypted, hostile, or empty."""

    def __init__(self, reason: str, *, unsupported: bool = False, code: str = "unreadable_document") -> None:
        super().__init__(reason)
        self.reason = reason
        self.unsupported = unsupported
        self.code = code


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    title: str
    format: str  # "faq", "markdown", "text" or "pdf"
    chunks: list[Chunk]
    sha256: str
    size: int


def parse(name: str, data: bytes, *, title: str | None = None) -> ParsedDocument:
    suffix = PurePosixPath(name).suffix.lower()
    stem = PurePosixPath(name).stem or name
    digest = hashlib.sha256(data).hexdigest()
    if suffix not in SUPPORTED:
        raise UnreadableDocument(
            f"unsupported file type {suffix!r}: use Markdown, plain text or PDF", unsupported=True
        )
    if suffix in PDF or data.startswith(b"%PDF-"):
        if not data.startswith(b"%PDF-"):
            raise UnreadableDocument("not a PDF: the file does not start with %PDF-")
        pdf_title, chunks = _pdf(data)
        return ParsedDocument(title or pdf_title or stem, "pdf", _nonempty(chunks), digest, len(data))
    text = _text(data)
    if suffix in MARKDOWN:
        if is_faq(text):
            fmt, chunks = "faq", split_faq(text)
        else:
            fmt, chunks = "markdown", split_markdown(text)
        heading = _H1.search(text)
        default = heading.group(1).strip() if heading else stem
    else:
        fmt, chunks, default = "text", [Chunk(piece) for piece in split_text(text)], stem
    return ParsedDocument(title or default, fmt, _nonempty(chunks), digest, len(data))


def parse_file(path: str, name: str, title: str | None = None) -> ParsedDocument:
    """``parse`` of a file on disk (a worker process reads it: only the path crosses over)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableDocument(f"cannot read: {exc}") from None
    return parse(name, data, title=title)


def parse_received(received: Received) -> ParsedDocument:
    """An upload that passed ``parley.uploads``' checks, parsed as the kind its content showed."""
    title = received.fields.get("title", "").strip()[:300] or None
    stem = PurePosixPath(received.name).stem
    return parse(f"{stem}.{received.kind}", received.path.read_bytes(), title=title)


def parse_text(text: str, *, title: str, markdown: bool = True) -> ParsedDocument:
    name = f"{title}.md" if markdown else f"{title}.txt"
    return parse(name, text.encode(), title=title)


def _text(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise UnreadableDocument("binary data where text was expected")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableDocument(f"not UTF-8 text (byte {exc.start})") from None


def _pdf(data: bytes) -> tuple[str | None, list[Chunk]]:
    try:
        pdf = read_pdf(data)
    except UnreadablePdf as exc:
        raise UnreadableDocument(exc.reason, code=exc.code) from None
    multi = len(pdf.pages) > 1
    chunks = [
        Chunk(piece, f"page {number}" if multi else "")
        for number, page in enumerate(pdf.pages, start=1)
        for piece in split_text(_tidy(page))
    ]
    return pdf.title, chunks


def _tidy(page: str) -> str:
    # PDF extraction breaks lines at the layout's width; keep blank lines as paragraph breaks.
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in page.splitlines()]
    return "\n".join(lines)


def _nonempty(chunks: list[Chunk]) -> list[Chunk]:
    chunks = [c for c in chunks if c.text.strip()]
    if not chunks:
        raise UnreadableDocument("no text could be extracted")
    return chunks


def iter_files(root: Path) -> Iterator[tuple[str, Path]]:
    """``(source, path)`` for each file under ``root`` (or ``root`` itself), hidden ones skipped.

    The source is the path relative to ``root``: the document's identity in its knowledge
    base, so ingesting the same folder again updates documents instead of adding copies.
    """
    if root.is_file():
        yield root.name, root
        return
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        yield relative.as_posix(), path
