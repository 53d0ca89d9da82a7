"""Receiving an upload: a multipart body streamed to a temporary file and checked on the way.

Nothing is trusted and nothing is kept until every check has passed:

- the size is counted while the body streams in: a declared ``Content-Length`` over the
  limit is refused before a byte is read, and a body (the file, or the whole multipart
  body with its other parts) that grows past it is refused as soon as it does (413);
- the type comes from the first bytes of the content (magic numbers, then strict UTF-8
  for text), never from the name; the name's extension must agree and be on the
  allow-list (415), and the kind one the route takes (knowledge documents: text,
  Markdown, PDF);
- names with path parts or control characters (NUL, CR, LF...) are refused (422), names
  without an extension too (415); other names are cleaned for display;
- the per-user quota is checked before and during the upload.

Every route that takes a file goes through ``receive``: ``/v1/files`` and seed 001's
``/files`` (then ``parley.files.extract``) and knowledge documents (then
``parley.knowledge.ingest``); PDFs are read by ``parley.pdf`` in both. On any failure the
temporary file is removed.

``UPLOAD_PATHS`` lists those routes: ``parley.http.BodyLimit`` lets their multipart bodies
through to ``receive`` (which applies the upload limit) and holds every other body, whatever
its Content-Type, to ``PARLEY_MAX_REQUEST_BYTES``.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import puremagic
from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from parley import text
from parley.errors import ApiError

#: kind -> (media type, extensions a name of that kind may have)
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "txt": ("text/plain", ("txt", "text", "log")),
    "md": ("text/markdown", ("md", "markdown")),
    "csv": ("text/csv", ("csv",)),
    "json": ("application/json", ("json",)),
    "pdf": ("application/pdf", ("pdf",)),
    "png": ("image/png", ("png",)),
    "jpg": ("image/jpeg", ("jpg", "jpeg")),
}
TEXT_KINDS = ("txt", "md", "csv", "json")
_BY_EXTENSION = {ext: kind for kind, (_, exts) in KINDS.items() for ext in exts}
ALLOWED_TEXT = "txt, md, csv, json, pdf, png, jpg"

#: The routes whose ``multipart/form-data`` bodies are read by ``receive``.
UPLOAD_PATHS = re.compile(r"^(/v1/files|/files|/v1/knowledge-bases/[^/]+/documents(/batch)?)/?$")

SNIFF_BYTES = 4096
MULTIPART_OVERHEAD = 64 * 1024
MAX_FIELD_BYTES = 1024
MAX_FIELDS = 8
MAX_NAME_CHARS = 200
PARSE_TIMEOUT_SECONDS = 30.0

T = TypeVar("T")


@dataclass
class Received:
    """An upload that passed the streaming checks, waiting in a temporary file."""

    path: Path
    name: str
    kind: str
    size: int
    sha256: str
    text: str | None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def media_type(self) -> str:
        return KINDS[self.kind][0]

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


async def parse_received(parse: Callable[[Received], T], received: Received) -> T:
    """Run ``parse`` (CPU-bound, over hostile bytes) in a worker thread, within a time limit."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(parse, received), timeout=PARSE_TIMEOUT_SECONDS)
    except TimeoutError:
        raise ApiError(422, "file_too_complex", "the file took too long to read and was refused") from None


def display_name(raw: str) -> str:
    """A clean display name, or 422 for names that try to be paths."""
    name = unicodedata.normalize("NFC", raw)
    if "/" in name or "\\" in name or name.strip() in (".", ".."):
        raise ApiError(
            422, "invalid_file_name", "file names may not contain path separators ('/', '\\') or be '..'"
        )
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise ApiError(
            422, "invalid_file_name", "file names may not contain control characters (NUL, CR, LF, ...)"
        )
    # Format characters (incl. right-to-left overrides that disguise extensions).
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = " ".join(name.split()).strip(" .")
    if not name:
        raise ApiError(422, "invalid_file_name", "the file name is empty once cleaned")
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        name = (
            f"{stem[: MAX_NAME_CHARS - len(ext) - 1]}.{ext}"
            if dot and len(ext) <= 10
            else name[:MAX_NAME_CHARS]
        )
    return name


def extension(name: str) -> str | None:
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem else None


def sniff(head: bytes, name: str, *, complete: bool, accepted: Collection[str] = tuple(KINDS)) -> str:
    """The kind of a file from its first bytes; 415 when it is not on the allow-list."""
    kind = _sniff(head, name, complete=complete)
    if kind not in accepted:
        allowed = ", ".join(sorted(accepted))
        raise ApiError(
            415, "unsupported_file_type", f"this endpoint takes {allowed} files, not {kind.upper()}"
        )
    return kind


def _sniff(head: bytes, name: str, *, complete: bool) -> str:
    ext = extension(name)
    if ext is None:
        raise ApiError(
            415,
            "unsupported_file_type",
            f"the file name has no extension; name it for what it is (allowed: {ALLOWED_TEXT})",
        )
    if ext not in _BY_EXTENSION:
        raise ApiError(
            415, "unsupported_file_type", f"files of type .{ext} are not accepted; allowed: {ALLOWED_TEXT}"
        )
    if head.startswith(b"%PDF-"):
        kind = "pdf"
    elif head.startswith(b"\x89PNG\r\n\x1a\n"):
        kind = "png"
    elif head.startswith(b"\xff\xd8\xff"):
        kind = "jpg"
    elif _is_text(head, complete=complete):
        declared = _BY_EXTENSION[ext]
        if declared not in TEXT_KINDS:
            raise ApiError(
                415,
                "file_type_mismatch",
                f"the name says .{ext} but the content is plain text; name it .txt (or .md, .csv, .json)",
            )
        return declared
    else:
        raise ApiError(
            415,
            "unsupported_file_type",
            f"the content is {_describe(head)}, which is not accepted; allowed: {ALLOWED_TEXT}",
        )
    if _BY_EXTENSION[ext] != kind:
        raise ApiError(
            415,
            "file_type_mismatch",
            f"the name says .{ext} but the content is {kind.upper()}; rename it or upload the right file",
        )
    return kind


def _is_text(head: bytes, *, complete: bool) -> bool:
    if b"\x00" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=complete)
    except UnicodeDecodeError:
        return False
    return True


_EXECUTABLES = (
    (b"MZ", "a Windows executable"),
    (b"\x7fELF", "a Linux (ELF) executable"),
    (b"\xcf\xfa\xed\xfe", "a macOS executable"),
    (b"\xca\xfe\xba\xbe", "a macOS or Java executable"),
)


def _describe(head: bytes) -> str:
    for magic, name in _EXECUTABLES:
        if head.startswith(magic):
            return name
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        matches = []
    if matches:
        return f"{matches[0].name} data"
    return "binary data of an unknown type"


class _Sink:
    """Where the file part goes: counted, sniffed, hashed and written as it arrives."""

    def __init__(
        self, directory: Path, name: str, max_bytes: int, quota_left: int, accepted: Collection[str]
    ) -> None:
        self.name = name
        self.accepted = accepted
        self.max_bytes = max_bytes
        self.quota_left = quota_left
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f".incoming-{secrets.token_hex(16)}"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.size = 0
        self.kind: str | None = None
        self._head = bytearray()
        self._sha = hashlib.sha256()
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self._text: list[str] = []

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise ApiError(
                413, "file_too_large", f"the file is larger than the limit of {self.max_bytes} bytes"
            )
        if self.size > self.quota_left:
            raise ApiError(
                413,
                "quota_exceeded",
                f"this upload would exceed your storage quota ({self.quota_left} bytes left); "
                "delete files you no longer need",
            )
        self._sha.update(data)
        os.write(self._fd, data)
        if self.kind is None:
            self._head += data
            if len(self._head) >= SNIFF_BYTES:
                self._classify(complete=False)
        else:
            self._decode(data)

    def _classify(self, *, complete: bool) -> None:
        self.kind = sniff(bytes(self._head), self.name, complete=complete, accepted=self.accepted)
        head, self._head = bytes(self._head), bytearray()
        self._decode(head)

    def _decode(self, data: bytes, *, final: bool = False) -> None:
        if self.kind not in TEXT_KINDS:
            return
        try:
            self._text.append(self._decoder.decode(data, final=final))
        except UnicodeDecodeError:
            raise ApiError(
                415, "unsupported_file_type", "the file starts as text but is not valid UTF-8 further on"
            ) from None
        if "\x00" in self._text[-1]:
            raise ApiError(415, "unsupported_file_type", "the file starts as text but contains binary data")

    def finish(self) -> Received:
        os.close(self._fd)
        self._fd = -1
        if self.size == 0:
            raise ApiError(422, "empty_file", "the file is empty")
        if self.kind is None:
            self._classify(complete=True)
        self._decode(b"", final=True)
        assert self.kind is not None
        text = "".join(self._text) if self.kind in TEXT_KINDS else None
        return Received(self.path, self.name, self.kind, self.size, self._sha.hexdigest(), text)

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.path.unlink(missing_ok=True)


class _Parts:
    """Collects python-multipart's callbacks; the async loop acts on them between writes."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []
        self._field = b""
        self._value = b""

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": lambda: self.events.append(("begin", b"")),
            "on_part_data": lambda data, start, end: self.events.append(("data", data[start:end])),
            "on_part_end": lambda: self.events.append(("end", b"")),
            "on_header_field": self._on_field,
            "on_header_value": self._on_value,
            "on_header_end": self._on_header_end,
            "on_end": lambda: self.events.append(("done", b"")),
        }

    def _on_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        if self._field.lower() == b"content-disposition":
            self.events.append(("disposition", self._value))
        self._field = self._value = b""


async def receive(
    request: Request,
    directory: Path,
    *,
    max_bytes: int,
    quota_left: int,
    accepted: Collection[str] = tuple(KINDS),
) -> Received:
    """Stream a ``multipart/form-data`` upload (one part named ``file``, of a kind in ``accepted``)
    into ``directory``.

    A refusal is answered at once; the server then discards whatever the client still
    sends (keeping the connection usable, so the client reads a clean 413).
    """
    media, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if media != b"multipart/form-data" or not boundary:
        raise ApiError(
            415,
            "expected_multipart",
            "upload a file as multipart/form-data with the file in a part named 'file'",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise ApiError(413, "file_too_large", f"the upload is larger than the limit of {max_bytes} bytes")
    if quota_left <= 0:
        raise ApiError(
            413, "quota_exceeded", "your storage quota is used up; delete files you no longer need"
        )
    parts = _Parts()
    parser = MultipartParser(boundary, parts.callbacks())  # type: ignore[arg-type]
    sink: _Sink | None = None
    received: Received | None = None
    fields: dict[str, str] = {}
    current: str | None = None  # "file", or the name of a text field
    done = False
    total = 0
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            # The whole body counts, not only the file part: a preamble, an ignored part or
            # endless part headers are refused as soon as they pass the limit too.
            total += len(chunk)
            if total > max_bytes + MULTIPART_OVERHEAD:
                raise ApiError(
                    413, "file_too_large", f"the upload is larger than the limit of {max_bytes} bytes"
                )
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise ApiError(400, "invalid_multipart", f"the multipart body is malformed: {exc}") from None
            for kind, data in parts.events:
                if kind == "begin":
                    current = None  # a part without a Content-Disposition is ignored
                elif kind == "disposition":
                    current, sink = _open_part(
                        data, sink, received, fields, directory, (max_bytes, quota_left), accepted
                    )
                elif kind == "data" and current == "file" and sink is not None:
                    sink.write(data)
                elif kind == "data" and current is not None:
                    fields[current] = fields.get(current, "") + data.decode("utf-8", "replace")
                    if len(fields[current]) > MAX_FIELD_BYTES:
                        raise ApiError(400, "invalid_multipart", f"form field {current!r} is too long")
                elif kind == "end" and current == "file" and sink is not None:
                    received = sink.finish()
                elif kind == "done":
                    done = True
            parts.events.clear()
        if not done:
            raise ApiError(400, "invalid_multipart", "the multipart body ended early")
        if received is None:
            raise ApiError(422, "missing_file", "no file: send it in a multipart part named 'file'")
        for name, value in fields.items():
            if not text.storable(name) or not text.storable(value):
                raise ApiError(422, "invalid_characters", f"form field {name!r}: {text.REASON}")
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    received.fields = fields
    return received


def _open_part(
    disposition: bytes,
    sink: _Sink | None,
    received: Received | None,
    fields: dict[str, str],
    directory: Path,
    limits: tuple[int, int],
    accepted: Collection[str],
) -> tuple[str | None, _Sink | None]:
    _, params = parse_options_header(disposition)
    name = params.get(b"name", b"").decode("utf-8", "replace")
    filename = params.get(b"filename")
    if filename is None:
        if len(fields) >= MAX_FIELDS:
            raise ApiError(400, "invalid_multipart", "too many form fields")
        fields.setdefault(name, "")
        return name, sink
    if name != "file":
        raise ApiError(422, "invalid_multipart", f"put the file in a part named 'file', not {name!r}")
    if sink is not None or received is not None:
        raise ApiError(422, "invalid_multipart", "send one file per upload")
    clean = display_name(filename.decode("utf-8", "replace"))
    return "file", _Sink(directory, clean, *limits, accepted)
