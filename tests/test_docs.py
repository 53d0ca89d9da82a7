"""The docs' commands and examples, run as written: only the port of ``localhost:8000`` differs
(each test's server listens on a free one)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from parley.config import Settings
from parley.providers.registry import Providers
from parley.startup import load_env_file
from tests.conftest import Server, serve
from tests.sse import new_thread, read_events, start_run

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def block_after(text: str, heading: str, fence: str = "```bash") -> str:
    """The first fenced block after ``heading``."""
    start = text.index(fence, text.index(heading)) + len(fence)
    return text[start : text.index("```", start)].strip()


def on_port(commands: str, server: Server) -> str:
    port = server.url.rsplit(":", 1)[1]
    return commands.replace("localhost:8000", f"localhost:{port}").replace(
        "127.0.0.1:8000", f"127.0.0.1:{port}"
    )


async def bash(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def sse_events(text: str) -> list[str]:
    return [line.removeprefix("event:").strip() for line in text.splitlines() if line.startswith("event:")]


async def test_the_readme_quick_tour_runs_as_written(settings_for: Callable[..., Settings]) -> None:
    tour = block_after(README, "## Quick tour")
    async with serve(settings_for()) as server:
        # Each command as written; the markers only split the output.
        script = "\n".join(
            f"echo '### {n}'\n{command}"
            for n, command in enumerate(re.split(r"\n(?=[A-Z]+=|curl|#)", tour))
            if not command.startswith("#")
        )
        result = await bash("set -euo pipefail\n" + on_port(script, server) + '\necho "### $THREAD $RUN"')
        assert result.returncode == 0, result.stderr
        parts = result.stdout.split("### ")
        thread, run = parts[-1].split()
        assert thread.startswith("thr_")
        assert run.startswith("run_")
        outputs = [part.split("\n", 1)[1] if "\n" in part else "" for part in parts[1:-1]]
        streams = [sse_events(out) for out in outputs if "event:" in out]
        assert streams[0][0] == "run.started"  # replay + follow
        assert streams[0][-1] == "run.completed"
        assert streams[-1][-1] == "run.completed"  # streamed from the POST
        cancelled = next(json.loads(out) for out in outputs if out.startswith("{") and '"status"' in out)
        assert cancelled["id"] == run
        assert cancelled["status"] == "completed"  # it had finished: cancel changes nothing
        threads = (await server.client.get("/v1/threads")).json()["data"]
        assert [t["id"] for t in threads] == [thread]


def test_the_readme_says_how_to_get_the_parley_command() -> None:
    activate = block_after(README, "command used below lives in `.venv`")
    assert activate == "source .venv/bin/activate"
    venv = Path(sys.prefix)
    result = subprocess.run(
        ["bash", "-c", activate.replace(".venv", str(venv)) + " && command -v parley && parley --help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(venv / "bin" / "parley")
    assert "serve" in result.stdout


def test_the_readme_one_line_real_provider_start_names_a_route_that_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = block_after(README, "With a real provider's key")
    assert line == "PARLEY_MODEL=openai:gpt-4o-mini OPENAI_API_KEY=sk-... make run"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-...")
    settings = Settings(_env_file=None, model="openai:gpt-4o-mini")  # type: ignore[call-arg]
    route = Providers(settings).route(settings.model)
    assert [p.name for p in route.providers] == ["openai:gpt-4o-mini"]


def test_env_example_is_loaded_into_the_settings_and_the_providers_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("PARLEY_")] + ["OPENAI_API_KEY"]:
        monkeypatch.delenv(name, raising=False)
    load_env_file()
    settings = Settings()
    assert settings.model == "openai:gpt-4o-mini,local:smollm2"
    assert os.environ["OPENAI_API_KEY"] == "sk-your-key-here"
    route = Providers(settings).route("openai:gpt-4o-mini")  # the local model is built on first use
    assert [p.name for p in route.providers] == ["openai:gpt-4o-mini"]


async def test_examples_parley_toml_serves_its_assistant_experiment_and_limits(
    settings_for: Callable[..., Settings],
) -> None:
    config = ROOT / "examples" / "parley.toml"
    async with serve(settings_for(config_file=config, embeddings="hash", knowledge=None)) as server:
        parley = server.parley
        gardener = parley.assistants.get("gardener")
        assert gardener.knowledge_bases == ["garden-notes"]
        assert len(gardener.examples) == 3
        bases = {
            b["name"]: b["documents"] for b in (await server.client.get("/v1/knowledge-bases")).json()["data"]
        }
        assert bases == {"parley-faq": 1, "demo-cvs": 10, "garden-notes": 2}
        experiment = await parley.experiments.get("answer-style")
        assert (experiment.status, experiment.assistant) == ("running", "general")
        assert parley.budgets.per_user == {"alice": 200000}
        thread = await new_thread(server.client, "gardener")
        run = await start_run(server.client, thread, gardener.examples[0])
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
        response = await server.client.post(f"/v1/threads/{thread}/runs", json={"input": "hi"})
    assert frames[1].event == "retrieval"
    assert frames[1].json["sources"][0]["title"] == "Roses > Pruning"
    assert response.headers["ratelimit-policy"].startswith("30;w=60")  # [rate_limits] runs


async def test_the_providers_doc_openai_sdk_example_runs_as_written(
    settings_for: Callable[..., Settings],
) -> None:
    pytest.importorskip("openai")
    docs = (ROOT / "docs" / "PROVIDERS.md").read_text()
    example = block_after(docs, "## OpenAI-compatible API", "```python")
    async with serve(settings_for()) as server:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", on_port(example, server)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Hi", "0.0"]  # scripted:echo, at no cost
