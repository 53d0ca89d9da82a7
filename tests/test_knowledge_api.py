"""The knowledge API over HTTP: create, upload (JSON and multipart), search, delete, refuse, 404."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fastapi import Request

from parley.config import Settings
from parley.users import Principal, create_user
from tests.conftest import Server, serve
from tests.knowledge_data import FAQ, GUIDE, pdf_bytes


@pytest.fixture
async def kserver(settings_for: Callable[..., Settings]) -> AsyncIterator[Server]:
    async with serve(settings_for(embeddings="hash", knowledge_max_upload_bytes=64 * 1024)) as handle:
        yield handle


async def new_kb(server: Server, name: str = "help") -> str:
    response = await server.client.post("/v1/knowledge-bases", json={"name": name, "description": "docs"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def documents(server: Server, kb: str) -> list[dict[str, Any]]:
    response = await server.client.get(f"/v1/knowledge-bases/{kb}/documents")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def test_create_upload_search_delete(kserver: Server) -> None:
    c = kserver.client
    kb = await new_kb(kserver)
    assert (await c.post("/v1/knowledge-bases", json={"name": "help"})).status_code == 409

    text = await c.post(f"/v1/knowledge-bases/{kb}/documents", json={"title": "Acme help", "text": FAQ})
    assert text.status_code == 201, text.text
    assert (text.json()["status"], text.json()["chunks"], text.json()["format"]) == ("created", 3, "faq")
    upload = await c.post(
        f"/v1/knowledge-bases/{kb}/documents",
        files={"file": ("guide.md", GUIDE.encode(), "text/markdown")},
    )
    assert upload.status_code == 201, upload.text
    assert (upload.json()["source"], upload.json()["title"]) == ("guide.md", "Gardening guide")
    pdf = await c.post(
        f"/v1/knowledge-bases/{kb}/documents",
        files={"file": ("cv.pdf", pdf_bytes("Alice Smith knows Kubernetes."), "application/pdf")},
        data={"title": "Alice's CV"},
    )
    assert pdf.status_code == 201, pdf.text
    assert (pdf.json()["format"], pdf.json()["title"]) == ("pdf", "Alice's CV")

    same = await c.post(f"/v1/knowledge-bases/{kb}/documents", json={"title": "Acme help", "text": FAQ})
    assert (same.status_code, same.json()["status"], same.json()["id"]) == (
        200,
        "unchanged",
        text.json()["id"],
    )

    listed = (await c.get("/v1/knowledge-bases")).json()["data"]
    assert [(b["name"], b["documents"]) for b in listed] == [("help", 3)]

    found = await c.get(
        f"/v1/knowledge-bases/{kb}/search", params={"q": "how do I reset my password", "k": 2}
    )
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["mode"] == "hybrid"
    assert len(body["data"]) == 2
    top = body["data"][0]
    assert top["title"] == "How do I reset my password?"
    assert top["document"] == text.json()["id"]
    assert top["chunk"].startswith("chk_")
    assert top["score"] > 0
    assert top["bm25"] > 0
    assert top["similarity"] > 0

    k8s = await c.get(f"/v1/knowledge-bases/{kb}/search", params={"q": "kubernetes", "mode": "bm25"})
    assert [h["document"] for h in k8s.json()["data"]] == [pdf.json()["id"]]
    filtered = await c.get(
        f"/v1/knowledge-bases/{kb}/search",
        params={"q": "password", "mode": "dense", "document": upload.json()["id"]},
    )
    assert {h["document"] for h in filtered.json()["data"]} == {upload.json()["id"]}

    deleted = await c.delete(f"/v1/knowledge-bases/{kb}/documents/{pdf.json()['id']}")
    assert deleted.status_code == 204
    k8s = await c.get(f"/v1/knowledge-bases/{kb}/search", params={"q": "kubernetes", "mode": "bm25"})
    assert k8s.json()["data"] == []
    assert (await c.delete(f"/v1/knowledge-bases/{kb}/documents/{pdf.json()['id']}")).status_code == 404

    assert (await c.delete(f"/v1/knowledge-bases/{kb}")).status_code == 204
    assert (await c.get(f"/v1/knowledge-bases/{kb}/search", params={"q": "password"})).status_code == 404


@pytest.mark.parametrize(
    ("files", "status", "code"),
    [
        (
            {"file": ("cv.pdf", b"MZ\x90\x00 this is an executable", "application/pdf")},
            415,
            "unsupported_file_type",
        ),
        ({"file": ("tool.exe", b"MZ\x90\x00", "application/octet-stream")}, 415, "unsupported_file_type"),
        ({"file": ("notes.txt", b"\x00\x01binary", "text/plain")}, 415, "unsupported_file_type"),
        ({"file": ("big.txt", b"a" * (64 * 1024 + 1), "text/plain")}, 413, "file_too_large"),
        ({"file": ("data.csv", b"a,b\n1,2\n", "text/csv")}, 415, "unsupported_file_type"),
        ({"other": ("x.txt", b"hello", "text/plain")}, 422, "invalid_multipart"),
    ],
)
async def test_bad_uploads_are_refused_and_nothing_is_stored(
    kserver: Server, files: dict[str, Any], status: int, code: str
) -> None:
    kb = await new_kb(kserver)
    response = await kserver.client.post(f"/v1/knowledge-bases/{kb}/documents", files=files)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert await documents(kserver, kb) == []


async def test_bad_json_bodies_are_refused(kserver: Server) -> None:
    c = kserver.client
    kb = await new_kb(kserver)
    url = f"/v1/knowledge-bases/{kb}/documents"
    bad = await c.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_json")
    assert (await c.post(url, json={"title": "x"})).status_code == 422
    assert (await c.post(url, json={"title": "x", "text": "y", "extra": 1})).status_code == 422
    assert (await c.post(url, json={"title": "x", "text": "   "})).status_code == 422  # no text in it
    assert (await c.post("/v1/knowledge-bases", json={"name": ""})).status_code == 422
    assert (await c.post("/v1/knowledge-bases", json={"name": "../etc"})).status_code == 422
    search = f"/v1/knowledge-bases/{kb}/search"
    assert (await c.get(search)).status_code == 422
    assert (await c.get(search, params={"q": "x", "mode": "magic"})).status_code == 422
    assert (await c.get(search, params={"q": "x", "k": 0})).status_code == 422
    assert await documents(kserver, kb) == []
    assert (
        await c.post("/v1/knowledge-bases/kb_missing/documents", json={"title": "a", "text": "b"})
    ).status_code == 404


async def test_another_user_gets_404_for_every_knowledge_base_endpoint(kserver: Server) -> None:
    db = kserver.parley.db
    users = {"alice": await create_user(db, "alice"), "bob": await create_user(db, "bob")}

    async def as_header_user(request: Request) -> Principal:
        return users[request.headers["x-test-user"]]

    kserver.parley.authenticate = as_header_user  # type: ignore[method-assign]
    c = kserver.client
    alice, bob = {"x-test-user": "alice"}, {"x-test-user": "bob"}
    created = await c.post("/v1/knowledge-bases", json={"name": "alice-kb"}, headers=alice)
    kb = created.json()["id"]
    doc = await c.post(f"/v1/knowledge-bases/{kb}/documents", json={"title": "h", "text": FAQ}, headers=alice)
    doc_id = doc.json()["id"]

    attempts = [
        c.get(f"/v1/knowledge-bases/{kb}", headers=bob),
        c.get(f"/v1/knowledge-bases/{kb}/documents", headers=bob),
        c.get(f"/v1/knowledge-bases/{kb}/search", params={"q": "password"}, headers=bob),
        c.post(f"/v1/knowledge-bases/{kb}/documents", json={"title": "x", "text": "intruder"}, headers=bob),
        c.post(f"/v1/knowledge-bases/{kb}/documents", files={"file": ("x.md", b"# x\n\ny")}, headers=bob),
        c.delete(f"/v1/knowledge-bases/{kb}/documents/{doc_id}", headers=bob),
        c.delete(f"/v1/knowledge-bases/{kb}", headers=bob),
    ]
    for attempt in attempts:
        response = await attempt
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
    assert (await c.get("/v1/knowledge-bases", headers=bob)).json()["data"] == []
    mine = await c.get(f"/v1/knowledge-bases/{kb}/documents", headers=alice)
    assert [d["id"] for d in mine.json()["data"]] == [doc_id]
