"""Uploads: limits while streaming, types from content, clean names, quota, parsing; nothing kept on refusal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from parley.files import File
from tests import corpus
from tests.conftest import Server, serve
from tests.identity import client_as

LIMIT = 256 * 1024


async def stored(server: Server) -> tuple[list[str], int]:
    """What an upload left behind: files in the data dir, and rows."""
    directory = server.parley.files.directory
    names = sorted(p.name for p in directory.rglob("*") if p.is_file()) if directory.exists() else []
    async with server.parley.db.session() as session:
        rows = await session.scalar(select(func.count()).select_from(File))
    return names, int(rows or 0)


async def upload(server: Server, name: str, content: bytes, **data: str):
    return await server.client.post("/v1/files", files={"file": (name, content)}, data=data)


@pytest.fixture
async def small_server(settings_for) -> AsyncIterator[Server]:
    async with serve(settings_for(max_upload_bytes=LIMIT, upload_quota_bytes=4 * LIMIT)) as server:
        yield server


ALLOWED = [
    ("notes.txt", "Grüße, world\nline two".encode(), "txt", "Grüße, world"),
    ("README.md", b"# Title\n\nSome *markdown*.", "md", "# Title"),
    ("table.csv", b"name,qty\napple,3\npear,5\n", "csv", "apple,3"),
    ("data.json", json.dumps({"items": [1, 2, 3]}).encode(), "json", '"items"'),
    ("paper.pdf", corpus.text_pdf("Hello from a PDF"), "pdf", "Hello from a PDF"),
    ("photo.png", corpus.image("PNG"), "png", None),
    ("photo.jpeg", corpus.image("JPEG"), "jpg", None),
]


HOSTILE = [
    ("report.pdf", corpus.WINDOWS_EXE, 415, "unsupported_file_type"),
    ("notes.txt", corpus.WINDOWS_EXE, 415, "unsupported_file_type"),
    ("tool.txt", corpus.LINUX_ELF, 415, "unsupported_file_type"),
    ("setup.exe", b"MZ but text really", 415, "unsupported_file_type"),
    ("run.sh", b"#!/bin/sh\nrm -rf /\n", 415, "unsupported_file_type"),
    ("../../etc/passwd.txt", b"root:x:0:0", 422, "invalid_file_name"),
    ("..\\..\\boot.ini.txt", b"[boot loader]", 422, "invalid_file_name"),
    ("..", b"dots", 422, "invalid_file_name"),
    ("no-extension", b"plain words", 415, "unsupported_file_type"),
    ("empty.txt", b"", 422, "empty_file"),
    (
        "broken.pdf",
        b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R\n" + b"\x00garbage" * 100,
        422,
        "corrupt_file",
    ),
    ("bomb.pdf", corpus.pdf_bomb(), 422, "file_too_complex"),
    ("bomb.pdf", corpus.gzip_bomb(), 415, "unsupported_file_type"),
    ("photo.jpg", corpus.image("PNG"), 415, "file_type_mismatch"),
    ("paper.pdf", b"just some text", 415, "file_type_mismatch"),
    ("photo.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 422, "corrupt_file"),
    ("data.json", b'{"unterminated": ', 422, "corrupt_file"),
    ("latin1.txt", "café".encode("latin-1"), 415, "unsupported_file_type"),
]


async def test_allowed_files_are_stored_under_random_names_with_their_text(small_server: Server) -> None:
    for name, content, kind, expected in ALLOWED:
        response = await upload(small_server, name, content)
        assert response.status_code == 201, (name, response.text)
        file = response.json()
        assert (file["kind"], file["name"], file["size"]) == (kind, name, len(content))
        if expected is None:
            assert file["preview"] is None
            assert file["meta"] == {"width": 32, "height": 16}
        else:
            assert expected in file["preview"], name
        assert (await small_server.client.get(f"/v1/files/{file['id']}")).json() == file
    names, rows = await stored(small_server)
    assert rows == len(names) == len(ALLOWED)
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in names)
    contents = {(small_server.parley.files.directory / n).read_bytes() for n in names}
    assert contents == {content for _, content, _, _ in ALLOWED}


async def test_hostile_and_broken_files_are_refused_and_nothing_is_kept(server: Server) -> None:
    wrong = {}
    for name, content, status, code in HOSTILE:
        response = await upload(server, name, content)
        error = response.json()["error"]
        if (response.status_code, error["code"]) != (status, code) or len(error["message"]) < 15:
            wrong[f"{name} ({content[:12]!r})"] = (response.status_code, error)
    assert wrong == {}
    assert await stored(server) == ([], 0)


async def test_the_size_limit_answers_413_while_the_body_still_streams(small_server: Server) -> None:
    """A raw client keeps sending a 64 MB chunked upload and watches for the answer."""
    host, port = small_server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        "POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n\r\n"
    )
    part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
    writer.write(head.encode() + b"%x\r\n%s\r\n" % (len(part), part))
    answered = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    chunk = b"a" * 65536
    sent = 0
    while not answered.done() and sent < 64 * 1024 * 1024:
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sent += len(chunk)
        await asyncio.wait([answered], timeout=0.001)
    status_line = (await answered).split(b"\r\n")[0]
    writer.close()
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
    # The answer came long before the end of the body (what was sent includes socket buffers).
    assert sent < 8 * 1024 * 1024
    assert await stored(small_server) == ([], 0)


async def test_a_declared_length_over_the_limit_is_refused_before_reading(small_server: Server) -> None:
    response = await upload(small_server, "big.txt", b"a" * (LIMIT * 2))
    assert response.status_code == 413
    assert await stored(small_server) == ([], 0)


async def test_the_per_user_quota_holds(small_server: Server) -> None:
    content = b"x" * (LIMIT - 1000)
    codes = [(await upload(small_server, f"f{i}.txt", content)).status_code for i in range(5)]
    assert codes == [201, 201, 201, 201, 413]
    names, rows = await stored(small_server)
    assert (len(names), rows) == (4, 4)
    async with client_as(small_server, "other") as other:
        response = await other.post("/v1/files", files={"file": ("mine.txt", content)})
        assert response.status_code == 201
    first = (await small_server.client.get("/v1/files")).json()["data"][-1]
    assert (await small_server.client.delete(f"/v1/files/{first['id']}")).status_code == 204
    assert (await upload(small_server, "again.txt", content)).status_code == 201
    me = (await small_server.client.get("/v1/me")).json()["storage"]
    assert me == {"used_bytes": 4 * len(content), "quota_bytes": 4 * LIMIT}


async def test_display_names_are_cleaned(server: Server) -> None:
    response = await upload(server, "  invoice\u202egnp.txt  ", b"numbers")
    assert response.status_code == 201
    assert response.json()["name"] == "invoicegnp.txt"
    long = "a" * 300 + ".txt"
    assert (await upload(server, long, b"x")).json()["name"] == "a" * 196 + ".txt"


MALFORMED = [
    ({"json": {"file": "hello"}}, 415, "expected_multipart"),
    ({"data": {"thread_id": "thr_x"}, "files": {"other": ("a.txt", b"hi")}}, 422, "invalid_multipart"),
    ({"data": {"note": "no file"}, "files": {}}, 415, "expected_multipart"),
    ({"data": {"note": "no file"}, "files": {"file": ("", b"")}}, 422, "missing_file"),
    (
        {
            "content": b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhalf',
            "headers": {"Content-Type": "multipart/form-data; boundary=b"},
        },
        400,
        "invalid_multipart",
    ),
]


NAMELESS_PART = (
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nstray data\r\n--b--\r\n"
)


async def test_a_part_without_a_name_is_ignored(server: Server) -> None:
    response = await server.client.post(
        "/v1/files", content=NAMELESS_PART, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["preview"] == "hello"


async def test_malformed_upload_requests_are_clear_4xx(server: Server) -> None:
    for kwargs, status, code in MALFORMED:
        response = await server.client.post("/v1/files", **kwargs)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), kwargs
    assert await stored(server) == ([], 0)


async def test_files_are_never_served_statically(server: Server, tmp_path: Path) -> None:
    file = (await upload(server, "secret.txt", b"top secret")).json()
    names, _ = await stored(server)
    for path in (f"/files/{names[0]}", f"/data/files/{names[0]}", f"/v1/files/{file['id']}/content"):
        response = await server.client.get(path)
        assert response.status_code in (404, 405)
        assert b"top secret" not in response.content


async def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(settings_for) -> None:
    async with serve(settings_for(auth="required")) as server:
        host, port = server.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/files HTTP/1.1\r\nHost: test\r\nContent-Length: 104857600\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n--xyz\r\n"
        )
        # Only a few bytes of the announced 100 MB were sent: the answer must not wait for the rest.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 401 ")
        assert await stored(server) == ([], 0)
