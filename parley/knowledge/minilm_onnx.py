"""all-MiniLM-L6-v2 through ONNX Runtime: the same vectors as torch, a question in ~10 ms.

The packaged weights are exported once (torch's exporter: transformer, mean pooling and
normalization in one graph) into a cache folder, checked against torch on a few texts, and
reused by every later start. A manifest beside the model records the weights' and the
model's SHA-256: a missing, partial or altered file is exported again, never trusted.

A question runs on one intra-op thread (a short input gains nothing from a second, and the
thread pool's hand-offs cost more than they save on a busy machine); batches of chunks run
on a second session that uses every core, created on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

#: Bumped when the exported graph changes: older cached models are exported again.
EXPORT_FORMAT = 1
MAX_TOKENS = 256
#: Cosine to the torch vector every exported model must reach on the probe texts.
MIN_COSINE = 0.999
PROBES = (
    "How do I reset my password?",
    "Tomatoes need six hours of sun a day and deep watering twice a week.",
    "0-dimensional biomaterials show inductive properties.",
    "Café, naïve résumé: ünïcödé 東京 🙂",
    "word " * 300,
)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxUnavailable(RuntimeError):
    pass


class OnnxMiniLM:
    """Tokenizer and ONNX Runtime sessions for one exported model. Thread-safe."""

    def __init__(self, model_dir: Path, onnx_path: Path) -> None:
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise OnnxUnavailable(f"onnxruntime or tokenizers is not installed ({exc})") from exc
        self.onnx_path = onnx_path
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()
        self._ort = onnxruntime
        self._query = self._session(threads=1)
        self._batch: Any = None
        self._batch_lock = threading.Lock()

    def _session(self, threads: int) -> Any:
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return self._ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        ids = np.array([self._tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        out = self._query.run(None, feeds)[0]
        return np.asarray(out[0], dtype=np.float32)

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> npt.NDArray[np.float32]:
        """Shortest texts batched together, so little of each batch is padding."""
        with self._batch_lock:
            if self._batch is None:
                self._batch = self._session(threads=os.cpu_count() or 1)
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


def load(model_dir: Path, cache_dir: Path) -> OnnxMiniLM:
    """The cached ONNX model of the weights in ``model_dir``, exported first if need be."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise OnnxUnavailable(f"onnxruntime is not installed ({exc})") from exc
    weights = _sha256(model_dir / "model.safetensors")
    stem = cache_dir / f"all-minilm-l6-v2-{weights[:16]}-f{EXPORT_FORMAT}"
    onnx_path, manifest = stem.with_suffix(".onnx"), stem.with_suffix(".json")
    if _valid(onnx_path, manifest, weights):
        try:
            return OnnxMiniLM(model_dir, onnx_path)
        except OnnxUnavailable:
            raise
        except Exception:  # noqa: S110  an unloadable file is exported again below
            pass
    export(model_dir, onnx_path, manifest, weights)
    return OnnxMiniLM(model_dir, onnx_path)


def _valid(onnx_path: Path, manifest: Path, weights: str) -> bool:
    try:
        recorded = json.loads(manifest.read_text())
        return bool(
            recorded.get("weights_sha256") == weights
            and recorded.get("format") == EXPORT_FORMAT
            and recorded.get("onnx_sha256") == _sha256(onnx_path)
        )
    except (OSError, ValueError, AttributeError):
        return False


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
    draft_manifest = manifest.with_suffix(".json.tmp")
    draft_manifest.write_text(json.dumps(record, indent=2))
    os.replace(draft_manifest, manifest)


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
