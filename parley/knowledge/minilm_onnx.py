"""all-MiniLM-L6-v2 through ONNX Runtime: the same vectors as torch, a question in ~6 ms.

The packaged weights are exported once (torch's exporter: transformer, mean pooling and
normalization in one graph) into a cache folder, checked against torch on a few texts, and
reused by every later start. A manifest beside the model records the weights' and the
model's SHA-256: a missing, partial or altered file is exported again, never trusted.

Questions, by default, are embedded by an int8 copy of that float32 model
(ONNX Runtime's dynamic quantization of the MatMul weights, made from the exported model in
a few seconds and kept beside it with its own manifest): a forward pass takes ~40 % less
time, the question's vector stays within cosine 0.97 of the float32 one (checked on the
probe texts; ~0.99 on SciFact's questions), and retrieval quality is unchanged (SciFact
nDCG@10 and StackFAQ hit rates in docs/BENCHMARKS.md). ``questions="float32"`` keeps them exact.
Chunks run on the same int8 copy with ``chunks="int8"`` (``PARLEY_CHUNK_EMBEDDING=int8``: ~1.6x
the float32 model's chunks/s, for a small loss of retrieval quality measured by
``bench.ingest_http precision``), else, by default, on the float32 model. The two give the same model's vectors within cosine ~0.98, so vectors of
either precision are searched together (questions already cross them).

A question runs on one intra-op thread (a short input gains nothing from a second, and the
thread pool's hand-offs cost more than they save on a busy machine); batches of chunks run
on a second session that uses every core, created on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import structlog

#: Bumped when the exported graph changes: older cached models are exported again.
EXPORT_FORMAT = 1
MAX_TOKENS = 256
#: Cosine to the torch vector every exported model must reach on the probe texts.
MIN_COSINE = 0.999
#: Bumped when the quantization changes: older int8 copies are made again.
QUANTIZE_FORMAT = 1
#: Cosine to the float32 vector the int8 question model must reach on every probe text.
MIN_QUESTION_COSINE = 0.97
Precision = Literal["int8", "float32"]
QuestionPrecision = Precision
PROBES = (
    "How do I reset my password?",
    "Tomatoes need six hours of sun a day and deep watering twice a week.",
    "0-dimensional biomaterials show inductive properties.",
    "Café, naïve résumé: ünïcödé 東京 🙂",
    "word " * 300,
)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")

log = structlog.get_logger(__name__)


class OnnxUnavailable(RuntimeError):
    pass


class OnnxMiniLM:
    """Tokenizer and ONNX Runtime sessions for one exported model. Thread-safe.

    ``question_path``: the model ``embed_query`` runs (an int8 copy), else ``onnx_path``;
    ``chunk_path``: the model ``embed`` runs, else ``onnx_path``."""

    def __init__(
        self,
        model_dir: Path,
        onnx_path: Path,
        question_path: Path | None = None,
        *,
        chunk_path: Path | None = None,
    ) -> None:
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise OnnxUnavailable(f"onnxruntime or tokenizers is not installed ({exc})") from exc
        self.model_dir = model_dir
        self.onnx_path = onnx_path
        self.question_path = question_path or onnx_path
        self.chunk_path = chunk_path or onnx_path
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()
        self._ort = onnxruntime
        self._query = self._session(threads=1, path=self.question_path)
        self._batch: Any = None
        self._batch_lock = threading.Lock()

    @property
    def question_precision(self) -> QuestionPrecision:
        return "float32" if self.question_path == self.onnx_path else "int8"

    @property
    def chunk_precision(self) -> Precision:
        return "float32" if self.chunk_path == self.onnx_path else "int8"

    def _session(self, threads: int, path: Path | None = None) -> Any:
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return self._ort.InferenceSession(
            str(path or self.onnx_path), options, providers=["CPUExecutionProvider"]
        )

    def count_tokens(self, texts: Sequence[str]) -> int:
        """The word pieces the model reads of ``texts`` (each cut at ``MAX_TOKENS``)."""
        return sum(len(e.ids) for e in self._tokenizer.encode_batch(list(texts)))

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        ids = np.array([self._tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        out = self._query.run(None, feeds)[0]
        return np.asarray(out[0], dtype=np.float32)

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> npt.NDArray[np.float32]:
        """Shortest texts batched together, so little of each batch is padding."""
        with self._batch_lock:
            if self._batch is None:
                self._batch = self._session(threads=os.cpu_count() or 1, path=self.chunk_path)
        out = np.zeros((len(texts), 384), dtype=np.float32)
        tokens = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(texts)), key=lambda i: len(tokens[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(tokens[i]) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for row, i in enumerate(rows):
                ids[row, : len(tokens[i])] = tokens[i]
                mask[row, : len(tokens[i])] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out[rows] = self._batch.run(None, feeds)[0]
        return out


def load(
    model_dir: Path, cache_dir: Path, *, questions: Precision = "int8", chunks: Precision = "float32"
) -> OnnxMiniLM:
    """The cached ONNX model of the weights in ``model_dir``, exported first if need be, and
    (``questions`` or ``chunks`` ``"int8"``) its cached int8 copy, made first if need be. Where the
    int8 copy cannot be made or disagrees with the float32 model, everything runs on float32."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise OnnxUnavailable(f"onnxruntime is not installed ({exc})") from exc
    for precision in (questions, chunks):
        if precision not in ("int8", "float32"):
            raise ValueError(f"unknown precision {precision!r}: use int8 or float32")
    weights = _sha256(model_dir / "model.safetensors")
    stem = cache_dir / f"all-minilm-l6-v2-{weights[:16]}-f{EXPORT_FORMAT}"
    onnx_path, manifest = stem.with_suffix(".onnx"), stem.with_suffix(".json")
    model = None
    if _valid(onnx_path, manifest, weights_sha256=weights, format=EXPORT_FORMAT):
        try:
            model = OnnxMiniLM(model_dir, onnx_path)
        except OnnxUnavailable:
            raise
        except Exception:  # noqa: S110  an unloadable file is exported again below
            pass
    if model is None:
        export(model_dir, onnx_path, manifest, weights)
        model = OnnxMiniLM(model_dir, onnx_path)
    if questions == "float32" and chunks == "float32":
        return model
    try:
        # The float32 model's digest, as its manifest (just checked or just written) records it.
        source = json.loads(manifest.read_text())["onnx_sha256"]
        int8 = question_model(model, stem, source)
        return OnnxMiniLM(
            model_dir,
            onnx_path,
            int8 if questions == "int8" else None,
            chunk_path=int8 if chunks == "int8" else None,
        )
    except Exception as exc:  # no onnx package, a full disk, a copy that disagrees
        log.warning("embeddings_int8_unavailable", reason=str(exc), fallback="float32")
        return model


def question_model(model: OnnxMiniLM, stem: Path, source: str) -> Path:
    """The int8 copy of ``model``'s graph beside it: reused while its manifest holds, else made
    (ONNX Runtime's dynamic quantization) and checked against the float32 model on the probes.
    ``source``: the float32 model's SHA-256, which the copy's manifest must record."""
    path, manifest = stem.with_name(stem.name + "-int8.onnx"), stem.with_name(stem.name + "-int8.json")
    if _valid(path, manifest, source_sha256=source, format=QUANTIZE_FORMAT):
        return path
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=path.parent) as scratch, _root_logger_left_alone():
        draft = Path(scratch) / "model.onnx"
        quantize_dynamic(
            model.onnx_path,
            draft,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
        quantized = OnnxMiniLM(model.model_dir, model.onnx_path, draft)
        cosine = min(float(model.embed_query(t) @ quantized.embed_query(t)) for t in PROBES)
        if cosine < MIN_QUESTION_COSINE:
            raise OnnxUnavailable(f"the int8 model disagrees with float32 (cosine {cosine:.4f})")
        os.replace(draft, path)
    record = {
        "format": QUANTIZE_FORMAT,
        "source_sha256": source,
        "onnx_sha256": _sha256(path),
        "min_cosine_to_float32": round(cosine, 6),
    }
    _publish(manifest, record)
    return path


@contextmanager
def _root_logger_left_alone() -> Iterator[None]:
    """The quantizer logs through ``logging.warning``, which gives an unconfigured root logger a
    stderr handler for good (and every library's debug lines with it): a handler that drops its
    records stands in while it runs."""
    root = logging.getLogger()
    stand_in = logging.NullHandler()
    if not root.handlers:
        root.addHandler(stand_in)
    try:
        yield
    finally:
        root.removeHandler(stand_in)


def _valid(onnx_path: Path, manifest: Path, **expected: object) -> bool:
    """The manifest records ``expected`` and the model file's current SHA-256."""
    try:
        recorded = json.loads(manifest.read_text())
        return all(recorded.get(key) == value for key, value in expected.items()) and bool(
            recorded.get("onnx_sha256") == _sha256(onnx_path)
        )
    except (OSError, ValueError, AttributeError):
        return False


def _publish(manifest: Path, record: dict[str, Any]) -> None:
    draft = manifest.with_suffix(".json.tmp")
    draft.write_text(json.dumps(record, indent=2))
    os.replace(draft, manifest)


def export(model_dir: Path, onnx_path: Path, manifest: Path, weights: str) -> None:
    """Export with torch, check against torch, then publish model and manifest atomically."""
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise OnnxUnavailable(f"exporting to ONNX needs torch and transformers ({exc})") from exc
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    pooled = _Pooled(torch, model)
    sample = (
        torch.tensor([[101, 7592, 102, 0]]),
        torch.tensor([[1, 1, 1, 0]]),
        torch.zeros(1, 4, dtype=torch.long),
    )
    with tempfile.TemporaryDirectory(dir=onnx_path.parent) as scratch:
        draft = Path(scratch) / "model.onnx"
        with warnings.catch_warnings(), torch.inference_mode(False):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                pooled,
                sample,
                str(draft),
                input_names=list(INPUTS),
                output_names=["embedding"],
                dynamic_axes={n: {0: "batch", 1: "tokens"} for n in INPUTS},
                opset_version=17,
                dynamo=False,
            )
        exported = OnnxMiniLM(model_dir, draft)
        reference = _torch_vectors(torch, pooled, exported, PROBES)
        cosine = float(np.min(np.sum(reference * exported.embed(PROBES), axis=1)))
        single = float(min(float(reference[i] @ exported.embed_query(t)) for i, t in enumerate(PROBES)))
        if min(cosine, single) < MIN_COSINE:
            raise OnnxUnavailable(
                f"the exported model disagrees with torch (cosine {min(cosine, single):.5f})"
            )
        os.replace(draft, onnx_path)
    record = {
        "format": EXPORT_FORMAT,
        "weights_sha256": weights,
        "onnx_sha256": _sha256(onnx_path),
        "min_cosine_to_torch": round(min(cosine, single), 6),
        "torch": torch.__version__,
    }
    _publish(manifest, record)


def _torch_vectors(
    torch: Any, pooled: Any, exported: OnnxMiniLM, texts: Sequence[str]
) -> npt.NDArray[np.float32]:
    rows = []
    for text in texts:
        ids = torch.tensor([exported._tokenizer.encode(text).ids])
        with torch.inference_mode():
            rows.append(pooled(ids, torch.ones_like(ids), torch.zeros_like(ids))[0].numpy())
    return np.vstack(rows).astype(np.float32)


def _Pooled(torch: Any, transformer: Any) -> Any:
    class Pooled(torch.nn.Module):  # type: ignore[misc]
        """The transformer, mean pooling and normalization: one graph to export."""

        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)

    return Pooled().eval()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "parley" / "models"


def main() -> None:
    """``python -m parley.knowledge.minilm_onnx [CACHE_DIR]``: export (and quantize) the model now,
    at install, so that no server waits for it at its first upload or search."""
    import sys

    from parley.knowledge.embeddings import model_path

    cache_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default_cache_dir()
    model = load(model_path(), cache_dir)
    print(f"MiniLM for ONNX Runtime: {model.onnx_path} (questions: {model.question_precision})")


if __name__ == "__main__":
    main()
