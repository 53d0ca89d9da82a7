"""all-MiniLM-L6-v2 through ONNX Runtime: the same vectors as torch, a cached export, rebuilt when bad."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from parley.knowledge.embeddings import EmbeddingsUnavailable, MiniLMEmbedder, load_embedder

pytest.importorskip("onnxruntime")
pytest.importorskip("sentence_transformers")

TEXTS = [
    "How do I reset my password?",
    "Annual plans are refunded in full within 30 days of purchase.",
    "Tomatoes need six hours of sun a day and deep watering twice a week.",
    "0-dimensional biomaterials show inductive properties.",
    "Café naïve résumé 東京",
    "x",
    "a long passage about cells and proteins " * 60,  # past 256 tokens: truncated alike
]


def minilm(**kwargs: object) -> MiniLMEmbedder:
    try:
        return MiniLMEmbedder(**kwargs)  # type: ignore[arg-type]
    except EmbeddingsUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export shared by the tests below (each export takes seconds)."""
    folder = tmp_path_factory.mktemp("models")
    minilm(runtime="onnx", cache_dir=folder)
    return folder


def model_files(folder: Path) -> tuple[Path, Path]:
    (onnx,) = folder.glob("*.onnx")
    (manifest,) = folder.glob("*.json")
    return onnx, manifest


def test_onnx_vectors_equal_torch_for_questions_and_batches(exported: Path) -> None:
    onnx = minilm(runtime="onnx", cache_dir=exported)
    torch = minilm(runtime="torch")
    assert (onnx.runtime, torch.runtime) == ("onnx", "torch")
    reference = torch.embed(TEXTS)
    batch = onnx.embed(TEXTS)
    assert batch.shape == (len(TEXTS), 384)
    assert np.min(np.sum(batch * reference, axis=1)) > 0.9999
    for text, expected in zip(TEXTS, reference, strict=True):
        single = onnx.embed_query(text)
        assert single.shape == (384,)
        assert float(single @ expected) > 0.9999
    assert float(onnx.embed_query(TEXTS[0]) @ reference[2]) < 0.5  # unrelated texts stay apart
    assert onnx.embed([]).shape == (0, 384)


def test_the_exported_model_is_reused(exported: Path, tmp_path: Path) -> None:
    cache = tmp_path / "models"
    shutil.copytree(exported, cache)
    onnx_path, manifest = model_files(cache)
    before = (onnx_path.stat().st_ino, onnx_path.stat().st_mtime_ns, manifest.read_text())
    embedder = minilm(runtime="onnx", cache_dir=cache)
    onnx_path, manifest = model_files(cache)
    assert (onnx_path.stat().st_ino, onnx_path.stat().st_mtime_ns, manifest.read_text()) == before
    assert json.loads(manifest.read_text())["min_cosine_to_torch"] >= 0.999
    assert embedder.embed_query("hello").shape == (384,)


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "missing model", "missing manifest"])
def test_a_damaged_or_missing_export_is_rebuilt(exported: Path, tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "models"
    shutil.copytree(exported, cache)
    onnx_path, manifest = model_files(cache)
    good = onnx_path.read_bytes()
    if damage == "corrupt":
        data = bytearray(good)
        data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # weights, not the graph: loads fine
        onnx_path.write_bytes(bytes(data))
    elif damage == "truncated":
        onnx_path.write_bytes(good[: len(good) // 3])
    elif damage == "missing model":
        onnx_path.unlink()
    else:
        manifest.unlink()
    embedder = minilm(runtime="onnx", cache_dir=cache)
    onnx_path, manifest = model_files(cache)
    assert onnx_path.read_bytes() != b""
    assert json.loads(manifest.read_text())["weights_sha256"]
    reference = minilm(runtime="torch").embed(TEXTS[:2])
    assert np.min(np.sum(embedder.embed(TEXTS[:2]) * reference, axis=1)) > 0.9999
    assert sorted(p.name for p in cache.iterdir()) == sorted([onnx_path.name, manifest.name])


def test_minilm_falls_back_to_torch_where_onnx_cannot_be_used(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    embedder = load_embedder("minilm", cache_dir=blocked / "models")
    assert isinstance(embedder, MiniLMEmbedder)
    assert embedder.runtime == "torch"
    assert embedder.embed_query("hello").shape == (384,)
    forced = load_embedder("minilm-torch", cache_dir=tmp_path)
    assert isinstance(forced, MiniLMEmbedder)
    assert forced.runtime == "torch"
    assert list(tmp_path.glob("*.onnx")) == []
