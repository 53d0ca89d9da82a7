"""docs/RESPONSES.md's SDK examples, run verbatim; and ``/v1/embeddings`` with the built-in
MiniLM through the SDK. Both load MiniLM, whose ONNX export (~30 s) is kept in one data
folder for the module."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import openai
import pytest

from parley.config import Settings
from tests.conftest import Server, serve
from tests.identity import key_for

pytest.importorskip("onnxruntime")
DOC = Path(__file__).resolve().parents[1] / "docs" / "RESPONSES.md"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("minilm")


@pytest.fixture
async def minilm_server(settings_for: Callable[..., Settings], data_dir: Path) -> AsyncIterator[Server]:
    from parley.knowledge.embeddings import EmbeddingsUnavailable, model_path

    try:
        model_path()
    except EmbeddingsUnavailable as exc:
        pytest.skip(str(exc))
    # Memory off: the echo model would repeat the remembered facts placed before the question.
    async with serve(settings_for(data_dir=data_dir, embeddings="minilm", memory=False)) as server:
        yield server


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


async def test_the_docs_examples_run_verbatim(minilm_server: Server) -> None:
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 6
    env = {
        **os.environ,
        "PARLEY_URL": minilm_server.url,
        "PARLEY_API_KEY": await key_for(minilm_server, "reader"),
    }
    # In a process of its own, as a user runs them: one script, the blocks in order.
    script = "\n".join(blocks)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].startswith("completed Hello there ")
    assert "one two three" in lines
    assert "completed Tell me a story" in lines
    assert "What is my name?" in lines  # the echo model repeats the last message
    assert "message user Remember the number 7." in lines
    assert "message assistant Remember the number 7." in lines
    assert "message user A note." in lines
    assert "Weather in Oslo?" in lines  # the echo model calls no tool
    assert lines[-1] == "2 384 " + lines[-1].rsplit(" ", 1)[1]


async def test_embeddings_with_the_sdk(minilm_server: Server) -> None:
    client = openai.AsyncOpenAI(
        base_url=f"{minilm_server.url}/v1", api_key=await key_for(minilm_server, "emb"), max_retries=0
    )
    try:
        assert "all-minilm-l6-v2" in [m.id for m in (await client.models.list()).data]
        texts = ["How do I reset my password?", "Steps to reset a forgotten password", "Ferries to Oslo"]
        # The SDK asks for base64 and decodes it; floats are served too.
        packed = await client.embeddings.create(model="all-minilm-l6-v2", input=texts)
        plain = await client.embeddings.create(model="all-minilm-l6-v2", input=texts, encoding_format="float")
        vectors = np.array([d.embedding for d in packed.data])
        assert vectors.shape == (3, 384)
        assert np.allclose(vectors, np.array([d.embedding for d in plain.data]), atol=1e-6)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
        assert similar > unrelated + 0.3
        assert packed.usage.prompt_tokens == packed.usage.total_tokens > len(texts)
        one = await client.embeddings.create(model="all-minilm-l6-v2", input=texts[0])
        assert np.allclose(one.data[0].embedding, vectors[0], atol=1e-5)
        with pytest.raises(openai.NotFoundError, match="all-minilm-l6-v2"):
            await client.embeddings.create(model="text-embedding-3-small", input="x")
        with pytest.raises(openai.UnprocessableEntityError):
            await client.embeddings.create(model="all-minilm-l6-v2", input="x", dimensions=256)
    finally:
        await client.close()
