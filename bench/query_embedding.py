"""What one query embedding costs on the CPU, and what makes it cheaper. SciFact questions.

    python -m bench.query_embedding [--queries 200]

A hybrid search's latency is the MiniLM forward pass of the question plus the index
(< 1 ms). Variants, all on the same local all-MiniLM-L6-v2 weights, timed interleaved
(each question runs every variant, in a rotating order) so load hits them alike:

- ``encode``: ``SentenceTransformer.encode([q])``, what ``MiniLMEmbedder`` does;
- ``forward``: tokenize + the model's forward pass directly (no ``encode`` bookkeeping);
- ``int8``: the same forward on a dynamically int8-quantized copy (``torch.ao``, no extra
  package), with its agreement with the float32 vectors (cosine);
- ``embed_query (torch)``: ``MiniLMEmbedder(runtime="torch")``, ``encode`` on one thread;
- ``embed_query (onnx)``: what a search runs now, ``MiniLMEmbedder()`` on ONNX Runtime
  (``parley.knowledge.minilm_onnx``: one thread, the fast tokenizer directly, the int8 copy
  with per-channel MatMul weights); ``embed_query (onnx float32)``: the same on the exported
  float32 model (``PARLEY_QUESTION_EMBEDDING=float32``);
- ``forward`` and ``int8`` also with ``torch.set_num_threads(1)``;
- ``lru hit``: a repeated question answered from ``QueryVectors`` (no forward pass);
- ``onnx`` and ``onnx int8``: the model Parley exports to ONNX (mean pooling and normalization
  inside) run by onnxruntime through transformers' tokenizer call, float32 and dynamically
  int8-quantized, on two threads and on one. Only when ``MiniLMEmbedder`` runs on ONNX Runtime.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._util import pct
from bench.retrieval import DATASETS, jsonl
from parley.knowledge.embeddings import MiniLMEmbedder, QueryVectors, Vectors
from parley.knowledge.minilm_onnx import INPUTS


def forward(
    model: torch.nn.Module, tokenize: Callable[[list[str]], dict[str, torch.Tensor]]
) -> Callable[[str], Vectors]:
    def embed(query: str) -> Vectors:
        with torch.inference_mode():
            out = model(tokenize([query]))["sentence_embedding"]
            out = torch.nn.functional.normalize(out, dim=1)
        return np.asarray(out[0].numpy(), dtype=np.float32)

    return embed


def onnx_variants(st: Any, fp32: Path, folder: Path) -> dict[str, Callable[[str], Vectors]]:
    """``fp32``: the model Parley exported (``parley.knowledge.minilm_onnx``); int8 is quantized from it."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tokenizer = st.tokenizer
    int8 = folder / "minilm-int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    variants: dict[str, Callable[[str], Vectors]] = {}
    for name, path in (("onnx", fp32), ("onnx int8 per tensor", int8)):
        for threads in (2, 1):
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

            def embed(query: str, session: Any = session) -> Vectors:
                inputs = tokenizer([query], return_tensors="np", truncation=True, max_length=256)
                out = session.run(None, {n: inputs[n].astype(np.int64) for n in INPUTS})[0]
                return np.asarray(out[0], dtype=np.float32)

            variants[name if threads == 2 else f"{name}, 1 thread"] = embed
    return variants


def one_thread(fn: Callable[[str], Vectors]) -> Callable[[str], Vectors]:
    def embed(query: str) -> Vectors:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(query)
        finally:
            torch.set_num_threads(before)

    return embed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    queries = [q["text"] for q in jsonl(DATASETS / "scifact" / "queries.jsonl")][: args.queries + args.warmup]
    embedder = MiniLMEmbedder(runtime="torch")
    onnx = MiniLMEmbedder()
    st = embedder._model
    quantized = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(st), {torch.nn.Linear}, dtype=torch.qint8
    )
    cache = QueryVectors(embedder, size=1024)
    for q in queries:
        cache.get(q)
    variants: dict[str, Callable[[str], Vectors]] = {
        "encode": lambda q: embedder.embed([q])[0],
        "forward": forward(st, st.tokenize),
        "int8": forward(quantized, st.tokenize),
        "lru hit": cache.get,
    }
    variants["embed_query (torch)"] = embedder.embed_query
    if onnx.runtime == "onnx":
        variants["embed_query (onnx)"] = onnx.embed_query
        variants["embed_query (onnx float32)"] = MiniLMEmbedder(questions="float32").embed_query
    for name in ("forward", "int8"):
        variants[f"{name}, 1 thread"] = one_thread(variants[name])
    exported = tempfile.TemporaryDirectory()
    if onnx._onnx is not None:
        variants |= onnx_variants(st, onnx._onnx.onnx_path, Path(exported.name))
    timings: dict[str, list[float]] = {name: [] for name in variants}
    vectors: dict[str, list[Vectors]] = {name: [] for name in variants}
    names = list(variants)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    for i, q in enumerate(queries):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            started = time.perf_counter()
            vector = variants[name](q)
            elapsed = (time.perf_counter() - started) * 1000
            if i >= args.warmup:
                timings[name].append(elapsed)
                vectors[name].append(vector)
    print(f"load after: {os.getloadavg()[0]:.2f}; {len(queries) - args.warmup} SciFact questions each\n")
    base = np.vstack(vectors["encode"])
    print(
        f"{'variant':32} {'p50 ms':>7} {'p95 ms':>7} {'vs encode p50':>14} {'cosine to fp32 (mean/min)':>26}"
    )
    for name in names:
        cos = np.sum(np.vstack(vectors[name]) * base, axis=1)
        ratio = pct(timings[name], 50) / pct(timings["encode"], 50)
        print(
            f"{name:32} {pct(timings[name], 50):7.2f} {pct(timings[name], 95):7.2f} {ratio:14.2f} "
            f"{cos.mean():17.4f}/{cos.min():.4f}"
        )
    exported.cleanup()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
