"""``parley ingest PATH --kb NAME``: a progress bar, a summary, bad files reported and skipped,
reruns incremental."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from parley.config import Settings
from tests.conftest import serve
from tests.knowledge_data import FAQ, GUIDE, pdf_bytes


def ingest(tmp_path: Path, *args: str, terminal: bool = False) -> subprocess.CompletedProcess[str]:
    """``terminal``: as in an interactive terminal (rich draws progress only there)."""
    env = {
        **os.environ,
        **({"TTY_INTERACTIVE": "1", "TTY_COMPATIBLE": "1"} if terminal else {}),
        "PARLEY_DATA_DIR": str(tmp_path / "data"),
        "PARLEY_EMBEDDINGS": "hash",
        "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'data' / 'parley.db'}",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "parley", "ingest", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )


@pytest.mark.timeout(600)  # two fresh interpreters; slow where bytecode is not cached
def test_ingest_a_folder_then_again(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "help.md").write_text(FAQ)
    (docs / "guide.md").write_text(GUIDE)
    (docs / "cv.pdf").write_bytes(pdf_bytes("Alice knows Python."))
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 truncated")
    (docs / "photo.png").write_bytes(b"\x89PNG\r\n")

    first = ingest(tmp_path, str(docs), "--kb", "handbook")
    assert first.returncode == 1, first.stderr  # some files were skipped
    assert "skipped broken.pdf: corrupt PDF" in first.stderr
    assert "skipped photo.png: unsupported file type '.png'" in first.stderr
    assert (
        "handbook: 3 added, 0 updated, 0 unchanged, 0 deleted, 2 skipped; 6 chunks (6 embedded)"
        in first.stderr
    )

    (docs / "broken.pdf").unlink()
    (docs / "photo.png").unlink()
    (docs / "guide.md").write_text(GUIDE + "\n## Herbs\n\nBasil likes warmth.\n")
    second = ingest(tmp_path, str(docs), "--kb", "handbook")
    assert second.returncode == 0, second.stderr
    assert (
        "handbook: 0 added, 1 updated, 2 unchanged, 0 deleted, 0 skipped; 7 chunks (1 embedded)"
        in second.stderr
    )


def test_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = ingest(tmp_path, str(tmp_path / "nope"), "--kb", "x")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_a_terminal_sees_a_progress_bar_per_file(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "help.md").write_text(FAQ)
    (docs / "guide.md").write_text(GUIDE)
    result = ingest(tmp_path, str(docs), "--kb", "handbook", terminal=True)
    assert result.returncode == 0, result.stderr
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stderr)
    assert "ingest into handbook" in shown
    assert "2/2" in shown  # files done of files found
    assert "handbook: 2 added, 0 updated, 0 unchanged, 0 deleted, 0 skipped" in shown


async def test_ingest_into_a_running_server_as_one_batch(
    tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "faq.md").write_text(FAQ)
    (docs / "sub" / "guide.md").write_text(GUIDE)
    (docs / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    async with serve(settings_for(embeddings="hash", ingest_workers="thread")) as server:
        result = await asyncio.to_thread(ingest, tmp_path, str(docs), "--kb", "handbook", "--url", server.url)
        assert result.returncode == 1, result.stderr  # the PNG was skipped, and said so
        assert "logo.png" in result.stderr
        assert re.search(r"handbook: 2 added, 0 updated, 0 unchanged, 1 skipped; \d+ chunks", result.stderr)
        listed = (await server.client.get("/v1/knowledge-bases")).json()["data"]
        assert [(b["name"], b["documents"]) for b in listed] == [("handbook", 2)]
        again = await asyncio.to_thread(ingest, tmp_path, str(docs), "--kb", "handbook", "--url", server.url)
        assert "handbook: 0 added, 0 updated, 2 unchanged, 1 skipped" in again.stderr
