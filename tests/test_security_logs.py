"""PII-safe logs: keys, emails and phone numbers never reach the log output."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from parley.logs import configure
from parley.redact import redact_text
from tests.conftest import serve
from tests.identity import key_for

SECRET_KEY = "prl_" + "A1b2C3d4" * 5


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The server's log configuration, writing to a buffer instead of stderr."""
    buffer = io.StringIO()
    configure("INFO", json_logs=True, file=buffer)
    yield buffer
    structlog.reset_defaults()


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"calling with {SECRET_KEY} now", "calling with [key] now"),
        ("Authorization: Bearer abc.def-123_456789", "Authorization: [key]"),
        ("openai key sk-proj-abcdefghijklmnop1234", "openai key [key]"),
        ("mail jane.doe+work@example.co.uk please", "mail [email] please"),
        ("call +44 20 7946 0958 or (555) 123-4567", "call [phone] or [phone]"),
        ("or 555-123-4567, or 06 12 34 56 78, or +14155552671", "or [phone], or [phone], or [phone]"),
        # Numbers that are not phone numbers stay.
        ("2026-11-21T20:51:33Z took 375.27 ms", "2026-11-21T20:51:33Z took 375.27 ms"),
        (
            "from 192.168.100.200 run_01jd9x4m2k order 12345678",
            "from 192.168.100.200 run_01jd9x4m2k order 12345678",
        ),
        (
            "at 1763758293.123 id 9f86d081884c7d659a2feaa0c55ad015",
            "at 1763758293.123 id 9f86d081884c7d659a2feaa0c55ad015",
        ),
    ],
)
def test_redaction_of_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_the_log_output_never_contains_secrets_or_personal_data(json_logs: io.StringIO) -> None:
    log = structlog.get_logger("test")
    log.info(
        "user jane@example.com signed in",
        api_key=SECRET_KEY,
        headers={"Authorization": f"Bearer {SECRET_KEY}", "accept": "text/plain"},
        note=["phone +1 415 555 2671", {"password": "hunter2"}],
        input_tokens=1234,
    )
    try:
        raise ValueError(f"bad key {SECRET_KEY} for bob@example.org")
    except ValueError:
        log.exception("failed")
    out = json_logs.getvalue()
    for leaked in (SECRET_KEY, "jane@example.com", "bob@example.org", "415 555 2671", "hunter2"):
        assert leaked not in out
    first, second = lines(out)
    assert first["event"] == "user [email] signed in"
    assert first["api_key"] == "[redacted]"
    assert first["headers"] == {"Authorization": "[redacted]", "accept": "text/plain"}
    assert first["note"] == ["phone [phone]", {"password": "[redacted]"}]
    assert first["input_tokens"] == 1234
    assert "bad key [key] for [email]" in second["exception"]


async def test_a_request_for_a_path_with_an_email_is_logged_redacted(
    settings_for, json_logs: io.StringIO
) -> None:
    async with serve(settings_for(auth="required")) as server:
        secret = await key_for(server, "alice")
        await server.client.get("/v1/threads/jane@example.com", headers={"X-API-Key": secret})
        await server.client.get("/v1/threads", headers={"Authorization": "Bearer " + SECRET_KEY})
    out = json_logs.getvalue()
    requests = [line for line in lines(out) if line["event"] == "request"]
    assert any(line["path"] == "/v1/threads/[email]" and line["status"] == 404 for line in requests)
    assert "jane@example.com" not in out
    assert secret not in out
    assert SECRET_KEY not in out
