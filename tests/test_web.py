"""The web UI is served by the API server: the page at /, its files under /static, nothing else."""

from __future__ import annotations

from tests.conftest import Server


async def test_the_page_is_served_at_the_root_with_a_strict_policy(server: Server) -> None:
    response = await server.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="static/js/main.js">' in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "object-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_static_files_have_the_right_types_and_revalidate(server: Server) -> None:
    for path, kind in [
        ("/static/js/main.js", "text/javascript"),
        ("/static/vendor/purify.es.js", "text/javascript"),
        ("/static/vendor/marked.esm.js", "text/javascript"),
        ("/static/app.css", "text/css"),
        ("/static/icon.svg", "image/svg+xml"),
    ]:
        response = await server.client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(kind), (path, response.headers["content-type"])
        assert response.headers["cache-control"] == "no-cache"
        again = await server.client.get(path, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304


async def test_nothing_outside_the_static_folder_is_reachable(server: Server) -> None:
    for path in [
        "/static/../__init__.py",
        "/static/%2e%2e/__init__.py",
        "/static/..%2f..%2fconfig.py",
        "/static/",
        "/static/js/",
        "/parley.db",
        "/static/parley.db",
    ]:
        response = await server.client.get(path)
        assert response.status_code == 404, (path, response.status_code, response.text[:80])
        assert "def " not in response.text


async def test_the_api_answers_as_before_next_to_the_page(server: Server) -> None:
    missing = await server.client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert (await server.client.post("/", json={})).status_code == 405
    schema = (await server.client.get("/openapi.json")).json()
    assert "/" not in schema["paths"]
    assert not any(p.startswith("/static") for p in schema["paths"])


async def test_the_dashboard_is_served_with_the_same_policy(server: Server) -> None:
    response = await server.client.get("/dashboard")
    assert response.status_code == 200
    assert '<script type="module" src="static/js/dashboard.js">' in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    for path in ("/static/js/dashboard.js", "/static/js/charts.js", "/static/dashboard.css"):
        assert (await server.client.get(path)).status_code == 200, path
    assert 'href="dashboard"' in (await server.client.get("/")).text
