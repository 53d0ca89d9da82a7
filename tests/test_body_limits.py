"""Every body limit holds while the body streams: an endless chunked body gets its 413 before the
server reads far past the limit, whatever its Content-Type, and nothing is stored or left behind."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from parley.config import Settings
from tests.conftest import serve

LIMIT = 64 * 1024  # PARLEY_MAX_REQUEST_BYTES in these tests
UPLOAD_LIMIT = 256 * 1024  # PARLEY_MAX_UPLOAD_BYTES and PARLEY_KNOWLEDGE_MAX_UPLOAD_BYTES
SLACK = 4 * 1024 * 1024  # what loopback socket buffers may hold beyond what the server read
GIVE_UP = 64 * 1024 * 1024  # the client stops here if the server never answers
BOUNDARY = "endless"
CHUNK = 16 * 1024


async def endless_post(url: str, path: str, content_type: str, head: bytes = b"") -> tuple[int, int]:
    """POST ``head`` then filler bytes for ever (chunked, no length) until the server answers;
    returns the status and how many body bytes were sent by then."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    writer.write(request.encode())
    answer = asyncio.create_task(reader.readline())
    sent = 0
    filler = b"x" * CHUNK
    try:
        for piece in itertools.chain([head] if head else [], itertools.repeat(filler)):
            if answer.done() or sent > GIVE_UP:
                break
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sent += len(piece)
            try:
                await asyncio.wait_for(writer.drain(), 5)
            except (ConnectionError, TimeoutError):
                break
        status_line = await asyncio.wait_for(answer, 10)
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return int(status_line.split()[1]), sent


def multipart_file(name: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()


JSON = "application/json"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"

CASES = [
    # (route class, path template, content type, head of the body, the limit that applies)
    ("json", "/v1/threads", JSON, b'{"metadata": {"note": "', LIMIT),
    ("json-as-multipart", "/v1/threads", MULTIPART, multipart_file("a.txt"), LIMIT),
    ("json-as-multipart-mixed", "/v1/threads", f"multipart/mixed; boundary={BOUNDARY}", b"", LIMIT),
    ("json-as-text", "/v1/threads/{thread}/runs", "text/plain", b"", LIMIT),
    ("openai-compat", "/v1/chat/completions", JSON, b'{"messages": [{"role": "user", "content": "', LIMIT),
    ("jobs-compat", "/messages", MULTIPART, multipart_file("a.txt"), LIMIT),
    ("upload", "/v1/files", MULTIPART, multipart_file("big.txt"), UPLOAD_LIMIT),
    ("upload-compat", "/files", MULTIPART, multipart_file("big.txt"), UPLOAD_LIMIT),
    (
        "knowledge-file",
        "/v1/knowledge-bases/{kb}/documents",
        MULTIPART,
        multipart_file("big.md"),
        UPLOAD_LIMIT,
    ),
    (
        "knowledge-ignored-part",
        "/v1/knowledge-bases/{kb}/documents",
        MULTIPART,
        f"--{BOUNDARY}\r\nX-Nothing: here\r\n\r\n".encode(),
        UPLOAD_LIMIT,
    ),
    ("knowledge-json", "/v1/knowledge-bases/{kb}/documents", JSON, b'{"title": "t", "text": "', LIMIT),
    (
        "knowledge-multipart-mixed",
        "/v1/knowledge-bases/{kb}/documents",
        f"multipart/mixed; boundary={BOUNDARY}",
        b"",
        LIMIT,
    ),
]


@pytest.mark.parametrize(("kind", "path", "content_type", "head", "limit"), CASES, ids=[c[0] for c in CASES])
async def test_an_endless_chunked_body_is_refused_at_the_limit(
    settings_for: Callable[..., Settings],
    kind: str,
    path: str,
    content_type: str,
    head: bytes,
    limit: int,
) -> None:
    settings = settings_for(
        max_request_bytes=LIMIT, max_upload_bytes=UPLOAD_LIMIT, knowledge_max_upload_bytes=UPLOAD_LIMIT
    )
    async with serve(settings) as server:
        client = server.client
        thread = (await client.post("/v1/threads", json={})).json()["id"]
        kb = (await client.post("/v1/knowledge-bases", json={"name": "docs"})).json()["id"]
        before = {
            "threads": len((await client.get("/v1/threads")).json()["data"]),
            "files": len((await client.get("/v1/files")).json()["data"]),
            "documents": len((await client.get(f"/v1/knowledge-bases/{kb}/documents")).json()["data"]),
        }
        status, sent = await endless_post(server.url, path.format(thread=thread, kb=kb), content_type, head)
        assert status == 413, kind
        assert sent < limit + SLACK, f"{kind}: the server read {sent} bytes before refusing"
        after = {
            "threads": len((await client.get("/v1/threads")).json()["data"]),
            "files": len((await client.get("/v1/files")).json()["data"]),
            "documents": len((await client.get(f"/v1/knowledge-bases/{kb}/documents")).json()["data"]),
        }
        assert after == before
        assert (await client.get("/healthz")).status_code == 200
    files = settings.data_dir / "files"
    leftovers = list(files.glob(".incoming-*")) if files.exists() else []
    assert leftovers == [], "a refused upload left its temporary file behind"
