"""Reading a PDF's text without trusting it: every route and ``parley ingest`` read PDFs here.

pypdf caps what one stream may inflate to, but ``extract_text()`` catches the error its limit
raises inside a form XObject or a font and goes on with an empty page, so a compression bomb
came back as an empty (or nearly empty) document. Before any text is extracted, every stream
of the file that text extraction may decode (all but images) is decoded once here, under a
per-stream and a whole-document limit; a file over either is refused. It fails closed: a
bomb is an error, never an empty document.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import structlog

from parley import text

log = structlog.get_logger(__name__)

MAX_PAGES = 1000
MAX_TEXT_CHARS = 2_000_000
#: Per decoded stream: generous for text, fatal to a compression bomb.
STREAM_LIMIT = 32 * 1024 * 1024
#: All decoded streams of one document together (a bomb can spread over many small streams).
DOCUMENT_LIMIT = 256 * 1024 * 1024


class UnreadablePdf(ValueError):
    """A PDF refused: ``code`` is ``file_too_complex``, ``encrypted_file`` or ``corrupt_file``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PdfText:
    pages: list[str]
    title: str | None
    truncated: bool


_BOMB = "the PDF expands far beyond its size when decompressed (a compression bomb?) and was refused"


def read_pdf(source: Path | bytes) -> PdfText:
    """The text of each page; ``UnreadablePdf`` for a damaged, encrypted or hostile file."""
    import pypdf
    from pypdf.errors import LimitReachedError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        with pypdf.apply_configuration(
            maximum_declared_stream_length=STREAM_LIMIT,
            zlib_maximum_output_length=STREAM_LIMIT,
            lzw_maximum_output_length=STREAM_LIMIT,
            run_length_maximum_output_length=STREAM_LIMIT,
            array_based_stream_maximum_output_length=STREAM_LIMIT,
            brotli_maximum_output_length=STREAM_LIMIT,
        ):
            reader = pypdf.PdfReader(
                io.BytesIO(source) if isinstance(source, bytes) else source, strict=False
            )
            if reader.is_encrypted and not reader.decrypt(""):
                raise UnreadablePdf("encrypted_file", "the PDF is password-protected")
            pages = len(reader.pages)
            if pages == 0:
                raise UnreadablePdf("corrupt_file", "the PDF has no pages")
            if pages > MAX_PAGES:
                raise UnreadablePdf(
                    "file_too_complex", f"the PDF has {pages} pages; the limit is {MAX_PAGES}"
                )
            _decode_every_stream(reader)
            texts: list[str] = []
            total = 0
            for page in reader.pages:
                texts.append(text.clean(page.extract_text() or ""))  # PDFs may hold NULs
                total += len(texts[-1])
                if total > MAX_TEXT_CHARS:
                    break
            title = reader.metadata.title if reader.metadata else None
    except UnreadablePdf:
        raise
    except LimitReachedError:
        raise UnreadablePdf("file_too_complex", _BOMB) from None
    except Exception as exc:
        # pypdf raises many kinds of errors on damaged input; all of them mean the same to a user.
        log.info("pdf_rejected", error=type(exc).__name__)
        raise UnreadablePdf("corrupt_file", "corrupt PDF: it is damaged and cannot be read") from None
    return PdfText(
        texts,
        text.clean(title).strip() if isinstance(title, str) and text.clean(title).strip() else None,
        total > MAX_TEXT_CHARS,
    )


def _decode_every_stream(reader: object) -> None:
    """Decode each stream once (pypdf's per-stream limits raise here, not inside extract_text)."""
    from pypdf import PdfReader
    from pypdf.filters import decode_stream_data
    from pypdf.generic import IndirectObject, StreamObject

    assert isinstance(reader, PdfReader)
    numbers = {(idnum, gen) for gen, table in reader.xref.items() for idnum in table}
    numbers |= {(idnum, 0) for idnum in reader.xref_objStm}
    total = 0
    for idnum, gen in sorted(numbers):
        obj = reader.get_object(IndirectObject(idnum, gen, reader))
        if not isinstance(obj, StreamObject) or obj.get("/Subtype") == "/Image":
            continue
        # decode_stream_data, not obj.get_data(): that one keeps every decoded stream in memory.
        total += len(decode_stream_data(obj)) if obj.get("/Filter") else len(obj.get_data())
        if total > DOCUMENT_LIMIT:
            raise UnreadablePdf("file_too_complex", _BOMB)
