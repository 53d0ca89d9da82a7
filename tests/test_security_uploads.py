"""Every file is hostile, the same way on every route: one corpus of bombs, polyglots, disguised
executables and poisoned names, generated here, against every upload route; each is a clear
4xx and nothing is left behind (no file on disk, no row, no job, no document)."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from parley.files import File
from parley.knowledge.schema import Document
from parley.store.schema import Run
from tests import corpus
from tests.conftest import Server, serve

LIMIT = 1024 * 1024


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    packed = zlib.compress(data, 9)
    head = b"<< /Length %d /Filter /FlateDecode%s >>\nstream\n" % (len(packed), extra)
    return head + packed + b"\nendstream"


def _pdf(objects: list[bytes]) -> bytes:
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


_TEXT = b"BT /F1 24 Tf 72 700 Td (Quarterly report) Tj ET"
_HEAD = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"]
_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def xobject_bomb() -> bytes:
    """Readable text on the page, and a form XObject that inflates to 64 MB: pypdf's
    ``extract_text()`` swallows the limit's error there and returned the text alone."""
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> /XObject << /X1 6 0 R >> >> >>"
    )
    form = _stream(b" " * (64 << 20), b" /Type /XObject /Subtype /Form /BBox [0 0 10 10]")
    return _pdf([*_HEAD, page, _stream(_TEXT + b" /X1 Do"), _FONT, form])


def spread_bomb() -> bytes:
    """Ten streams of 30 MB each: every one under the per-stream limit, 300 MB in all."""
    kids = b" ".join(b"%d 0 R" % (6 + n) for n in range(10))
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> /Thumbs [" + kids + b"] >>"
    )
    filler = _stream(b" " * (30 << 20))
    return _pdf([*_HEAD, page, _stream(_TEXT), _FONT, *[filler] * 10])


def font_bomb() -> bytes:
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>"
    )
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 6 0 R >>"
    return _pdf([*_HEAD, page, _stream(_TEXT), font, _stream(b" " * (64 << 20))])


@dataclass(frozen=True)
class Hostile:
    label: str
    filename: bytes
    content: bytes
    status: int
    code: str


def corpus_() -> list[Hostile]:
    text = b"quarterly numbers\n"
    return [
        Hostile("PDF bomb: one stream", b"bomb.pdf", corpus.pdf_bomb(), 422, "file_too_complex"),
        Hostile("PDF bomb: form XObject", b"report.pdf", xobject_bomb(), 422, "file_too_complex"),
        Hostile("PDF bomb: font", b"report.pdf", font_bomb(), 422, "file_too_complex"),
        Hostile("PDF bomb: spread", b"report.pdf", spread_bomb(), 422, "file_too_complex"),
        Hostile("gzip bomb as PDF", b"bomb.pdf", corpus.gzip_bomb(), 415, "unsupported_file_type"),
        Hostile("PDF head, EXE body", b"report.pdf", b"%PDF-1.4\n" + corpus.WINDOWS_EXE, 422, "corrupt_file"),
        Hostile("PNG named .txt", b"notes.txt", corpus.image("PNG"), 415, "file_type_mismatch"),
        Hostile("PDF named .md", b"notes.md", corpus.text_pdf("hi"), 415, "file_type_mismatch"),
        Hostile("text named .pdf", b"report.pdf", text, 415, "file_type_mismatch"),
        Hostile("EXE named .pdf", b"report.pdf", corpus.WINDOWS_EXE, 415, "unsupported_file_type"),
        Hostile("ELF named .txt", b"notes.txt", corpus.LINUX_ELF, 415, "unsupported_file_type"),
        Hostile(".exe", b"setup.exe", b"MZ but text really", 415, "unsupported_file_type"),
        Hostile("RTL-disguised .exe", "photo\u202egpj.exe".encode(), text, 415, "unsupported_file_type"),
        Hostile("shell script", b"run.sh", b"#!/bin/sh\nrm -rf /\n", 415, "unsupported_file_type"),
        Hostile("no extension", b"README", text, 415, "unsupported_file_type"),
        Hostile("traversal", b"../../etc/passwd", b"root:x:0:0\n", 422, "invalid_file_name"),
        Hostile("absolute path", b"/etc/passwd.txt", b"root:x:0:0\n", 422, "invalid_file_name"),
        Hostile("backslashes", b"..\\..\\boot.ini.txt", text, 422, "invalid_file_name"),
        Hostile("dot dot", b"..", text, 422, "invalid_file_name"),
        Hostile("NUL in name", b"a\x00.txt", text, 422, "invalid_file_name"),
        Hostile("tab in name", b"a\tb.txt", text, 422, "invalid_file_name"),
        Hostile("CRLF header injection", b"a\r\nX-Evil: 1.txt", text, 415, "unsupported_file_type"),
        Hostile("empty", b"empty.txt", b"", 422, "empty_file"),
        Hostile("over the limit", b"big.txt", b"a" * (LIMIT + 1), 413, "file_too_large"),
        Hostile("Latin-1 text", b"notes.txt", "café".encode("latin-1"), 415, "unsupported_file_type"),
        Hostile("NUL in text", b"notes.txt", b"hello\x00world", 415, "unsupported_file_type"),
        Hostile(
            "damaged PDF",
            b"x.pdf",
            b"%PDF-1.7\n1 0 obj << /Type /Catalog" + b"\x00" * 99,
            422,
            "corrupt_file",
        ),
    ]


def multipart(filename: bytes, content: bytes) -> tuple[bytes, dict[str, str]]:
    """Written by hand: HTTP clients escape the names an attacker sends raw."""
    body = (
        b'--hostile\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + content
        + b"\r\n--hostile--\r\n"
    )
    return body, {"Content-Type": "multipart/form-data; boundary=hostile"}


@pytest.fixture
async def target(settings_for) -> AsyncIterator[Server]:
    settings = settings_for(max_upload_bytes=LIMIT, knowledge_max_upload_bytes=LIMIT, embeddings="none")
    async with serve(settings) as server:
        yield server


async def leftovers(server: Server) -> dict[str, int]:
    directory = server.parley.files.directory
    on_disk = sum(1 for p in directory.rglob("*") if p.is_file()) if directory.exists() else 0
    async with server.parley.db.session() as session:
        counts = {
            name: int(await session.scalar(select(func.count()).select_from(model)) or 0)
            for name, model in (("files", File), ("runs", Run), ("documents", Document))
        }
    return {"on_disk": on_disk, **counts}


ROUTES = ["/v1/files", "/files", "knowledge documents"]


async def path_of(server: Server, route: str) -> str:
    if route != "knowledge documents":
        return route
    kb = await server.client.post("/v1/knowledge-bases", json={"name": "hostile"})
    return f"/v1/knowledge-bases/{kb.json()['id']}/documents"


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    """``{"code", "message"}`` of an error answer: Parley's shape, or seed 001's documented
    ``{"success": false, "error": message, "code"}`` on its ``/files``."""
    if body.get("success") is False:
        return {"code": body.get("code"), "message": body["error"]}
    error: dict[str, Any] = body.get("error", {})
    return error


@pytest.mark.parametrize("route", ROUTES)
async def test_every_upload_route_refuses_the_hostile_corpus_alike(target: Server, route: str) -> None:
    path = await path_of(target, route)
    wrong = {}
    for item in corpus_():
        body, headers = multipart(item.filename, item.content)
        response = await target.client.post(path, content=body, headers=headers)
        error = error_of(response.json())
        if (response.status_code, error.get("code")) != (item.status, item.code) or len(
            error["message"]
        ) < 15:
            wrong[item.label] = (response.status_code, error)
    assert wrong == {}
    assert await leftovers(target) == {"on_disk": 0, "files": 0, "runs": 0, "documents": 0}
    fine, headers = multipart(b"notes.md", b"# Notes\n\nThe quarterly numbers are fine.\n")
    accepted = await target.client.post(path, content=fine, headers=headers)
    assert accepted.status_code in (201, 202), accepted.text
