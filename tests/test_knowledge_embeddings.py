"""all-MiniLM-L6-v2 through ONNX Runtime: the same vectors as torch, a cached export, rebuilt when
bad; questions embedded by an int8 copy that agrees with float32 and ranks passages alike."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from parley.knowledge import minilm_onnx
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


def model_files(folder: Path, *, int8: bool = False) -> tuple[Path, Path]:
    """The exported float32 model and its manifest, or its int8 copy's."""
    (onnx,) = [p for p in folder.glob("*.onnx") if p.stem.endswith("-int8") == int8]
    (manifest,) = [p for p in folder.glob("*.json") if p.stem.endswith("-int8") == int8]
    return onnx, manifest


def test_onnx_vectors_equal_torch_for_questions_and_batches(exported: Path) -> None:
    onnx = minilm(runtime="onnx", cache_dir=exported, questions="float32")
    assert onnx.question_precision == "float32"
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


QUESTIONS = {
    "How do I get my money back?": "Annual plans are refunded in full within 30 days of purchase.",
    "I forgot my login, what now?": "Reset your password from the sign-in page: we email you a link.",
    "How much sun do tomato plants need?": "Tomatoes need six hours of sun a day and deep watering twice a week.",
    "Which materials induce bone growth?": "0-dimensional biomaterials show inductive properties.",
    "Do you ship abroad?": "We deliver to 30 countries; customs fees are paid on delivery.",
    "Can two people share one account?": "Each seat is one person; add seats from the billing page.",
}


def test_questions_run_on_an_int8_copy_that_agrees_with_float32(exported: Path) -> None:
    fast = minilm(runtime="onnx", cache_dir=exported)
    exact = minilm(runtime="onnx", cache_dir=exported, questions="float32")
    assert (fast.question_precision, exact.question_precision) == ("int8", "float32")
    passages = exact.embed(list(QUESTIONS.values()))
    assert np.array_equal(fast.embed(list(QUESTIONS.values())), passages)  # chunks stay float32
    for text in [*TEXTS, *QUESTIONS]:
        quick, precise = fast.embed_query(text), exact.embed_query(text)
        assert quick.shape == (384,)
        assert abs(float(np.linalg.norm(quick)) - 1) < 1e-4
        assert 0.97 < float(quick @ precise) < 0.99999  # close, and really another model
    for i, question in enumerate(QUESTIONS):  # each question still finds its own passage first
        assert int(np.argmax(passages @ fast.embed_query(question))) == i
    manifest = json.loads(model_files(exported, int8=True)[1].read_text())
    assert manifest["min_cosine_to_float32"] >= minilm_onnx.MIN_QUESTION_COSINE
    assert manifest["source_sha256"] == json.loads(model_files(exported)[1].read_text())["onnx_sha256"]


def test_an_int8_copy_that_disagrees_leaves_questions_on_float32(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "models"
    shutil.copytree(exported, cache)
    for path in model_files(cache, int8=True):
        path.unlink()
    monkeypatch.setattr(minilm_onnx, "MIN_QUESTION_COSINE", 1.01)  # no quantized model can pass
    embedder = minilm(runtime="onnx", cache_dir=cache)
    assert embedder.question_precision == "float32"
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in model_files(cache))
    reference = minilm(runtime="torch").embed(TEXTS[:1])[0]
    assert float(embedder.embed_query(TEXTS[0]) @ reference) > 0.9999


def test_the_exported_model_is_reused(exported: Path, tmp_path: Path) -> None:
    cache = tmp_path / "models"
    shutil.copytree(exported, cache)
    files = [*model_files(cache), *model_files(cache, int8=True)]
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in files]
    embedder = minilm(runtime="onnx", cache_dir=cache)
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in files] == before
    assert json.loads(files[1].read_text())["min_cosine_to_torch"] >= 0.999
    assert embedder.question_precision == "int8"
    assert embedder.embed_query("hello").shape == (384,)


@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
@pytest.mark.parametrize("damage", ["corrupt", "truncated", "missing model", "missing manifest"])
def test_a_damaged_or_missing_export_is_rebuilt(
    exported: Path, tmp_path: Path, damage: str, int8: bool
) -> None:
    cache = tmp_path / "models"
    shutil.copytree(exported, cache)
    onnx_path, manifest = model_files(cache, int8=int8)
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
    assert embedder.question_precision == "int8"
    files = [*model_files(cache), *model_files(cache, int8=True)]
    assert all(p.stat().st_size > 0 for p in files)
    assert json.loads(files[1].read_text())["weights_sha256"]
    assert (
        json.loads(files[3].read_text())["source_sha256"] == json.loads(files[1].read_text())["onnx_sha256"]
    )
    reference = minilm(runtime="torch").embed(TEXTS[:2])
    assert np.min(np.sum(embedder.embed(TEXTS[:2]) * reference, axis=1)) > 0.9999
    assert 0.97 < float(embedder.embed_query(TEXTS[0]) @ reference[0]) < 0.99999
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in files)


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


def test_making_the_int8_copy_leaves_the_process_logging_alone(exported: Path, tmp_path: Path) -> None:
    """The quantizer warns through the root logger, which would give it a stderr handler for good:
    a server's logs would then fill with every library's debug lines."""
    cache = tmp_path / "models"
    shutil.copytree(exported, cache)
    for path in model_files(cache, int8=True):
        path.unlink()
    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from parley.knowledge.embeddings import MiniLMEmbedder\n"
        f"embedder = MiniLMEmbedder(runtime='onnx', cache_dir=Path({str(cache)!r}))\n"
        "assert embedder.question_precision == 'int8'\n"
        "logging.getLogger('bm25s').setLevel(logging.DEBUG)\n"
        "logging.getLogger('bm25s').debug('a library debug line')\n"
        "print(len(logging.getLogger().handlers))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
    assert "a library debug line" not in done.stderr
    assert "pre-processing" not in done.stderr
    assert len(model_files(cache, int8=True)) == 2
