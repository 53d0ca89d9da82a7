"""Knowledge ingest over HTTP, as a user loading a corpus would (issue #22).

    python -m bench.ingest_http growth [--sizes 10,10000] [--probe 30] [--embeddings hash]
    python -m bench.ingest_http scifact [--limit 0] [--embeddings minilm]
    python -m bench.ingest_http encoder [--texts 512]
    python -m bench.ingest_http precision [--only scifact,stackfaq]

- ``growth``: one ``parley serve`` subprocess, one knowledge base per size grown to it by batch
  uploads (zip archives of abstracts, reused under new names past SciFact's 5,183); then the
  N-th document of each and the ones after, uploaded singly (``POST …/documents``, an abstract
  each), the bases in turn so each is timed under the same load. Per-upload time should not
  depend on the size: the index is updated in place.
- ``scifact``: SciFact's abstracts (or the first ``--limit``) as one zip through
  ``POST …/documents/batch``; the time until the job completes, chunks and chunks/s.
- ``encoder``: MiniLM (ONNX Runtime) chunks/s on SciFact abstracts, by batch size, in this
  process: the model's own throughput, without HTTP or the database, float32 and int8.
- ``precision``: retrieval quality with chunks embedded by the float32 model and by its int8
  copy (questions as the server embeds them, int8), through ``bench.retrieval``'s SciFact
  (nDCG@10, recall@100, 809 train queries) and StackFAQ (top-1/top-5) runs. Vectors are cached
  per precision under ``.cache/bench/`` so a rerun skips the embedding.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

from bench._util import ServerProcess, machine, pct

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("PARLEY_DATASETS", ROOT.parent / "shared" / "datasets"))
if not (DATASETS / "scifact").exists():
    DATASETS = Path("/work/shared/datasets")


def abstracts() -> list[tuple[str, str, str]]:
    rows = [json.loads(line) for line in (DATASETS / "scifact" / "corpus.jsonl").read_text().splitlines()]
    return [(r["_id"], r["title"][:300] or r["_id"], r["text"]) for r in rows]


def document(i: int, corpus: list[tuple[str, str, str]]) -> tuple[str, str, str]:
    """The i-th document: SciFact's abstracts, then again under new names."""
    doc_id, title, text = corpus[i % len(corpus)]
    return (f"{doc_id}-{i // len(corpus)}" if i >= len(corpus) else doc_id), title, text


def archive(docs: list[tuple[str, str, str]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for doc_id, title, text in docs:
            z.writestr(f"{doc_id}.txt", f"{title}\n\n{text}\n")
    return out.getvalue()


def wait_job(client: httpx.Client, kb: str, job: dict[str, Any], *, show: bool = False) -> dict[str, Any]:
    last = -1
    while True:
        state = client.get(f"/v1/knowledge-bases/{kb}/jobs/{job['id']}").json()
        if show and state["progress"] // 10 != last:
            last = state["progress"] // 10
            print(
                f"  job {state['status']} {state['progress']} % ({state['done']}/{state['total']} files)",
                flush=True,
            )
        if state["status"] != "running":
            return dict(state)
        time.sleep(0.5)


def batch(
    client: httpx.Client, kb: str, docs: list[tuple[str, str, str]], *, show: bool = False
) -> dict[str, Any]:
    response = client.post(
        f"/v1/knowledge-bases/{kb}/documents/batch",
        files={"file": ("docs.zip", archive(docs), "application/zip")},
    )
    response.raise_for_status()
    state = wait_job(client, kb, response.json(), show=show)
    assert state["status"] == "completed", state
    return state


def growth(args: argparse.Namespace) -> None:
    """One knowledge base per size, grown to it by batches; then single uploads to each in turn,
    so that every size is timed under the same load (this machine is shared)."""
    corpus = abstracts()
    sizes = [int(s) for s in args.sizes.split(",")]
    env = {"PARLEY_EMBEDDINGS": args.embeddings, "PARLEY_KNOWLEDGE_MAX_BATCH_BYTES": str(1 << 30)}
    print(f"{machine()}; load average {os.getloadavg()[0]:.2f}; embeddings {args.embeddings}")
    times: dict[int, list[float]] = {size: [] for size in sizes}
    with ServerProcess(env, code=ROOT) as server, httpx.Client(base_url=server.url, timeout=600) as client:
        bases: dict[int, str] = {}
        for size in sizes:
            kb = client.post("/v1/knowledge-bases", json={"name": f"size-{size}"}).json()["id"]
            bases[size] = kb
            started = time.perf_counter()
            for start in range(0, size - 1, 2000):
                batch(client, kb, [document(i, corpus) for i in range(start, min(start + 2000, size - 1))])
            print(f"  {kb}: {size - 1} documents in {time.perf_counter() - started:.1f} s", flush=True)
        for probe in range(args.probe):
            for size in sizes:
                doc_id, title, text = document(size - 1 + probe, corpus)
                started = time.perf_counter()
                response = client.post(
                    f"/v1/knowledge-bases/{bases[size]}/documents",
                    json={"title": title, "text": text, "source": doc_id},
                )
                times[size].append((time.perf_counter() - started) * 1000)
                assert (response.status_code, response.json()["status"]) == (201, "created"), response.text
    base = statistics.median(times[sizes[0]])
    print(f"\n{'document':>10} {'median ms':>10} {'mean ms':>9} {'p90 ms':>8} {'vs first':>9}")
    for size in sizes:
        t = times[size]
        print(
            f"{size:>10} {statistics.median(t):10.1f} {statistics.fmean(t):9.1f} "
            f"{pct(t, 90):8.1f} {statistics.median(t) / base:9.2f}"
        )
    print(
        f"(the N-th document and the {args.probe - 1} after it, uploaded singly, the sizes in turn; "
        f"load average at end {os.getloadavg()[0]:.2f})"
    )


def scifact(args: argparse.Namespace) -> None:
    corpus = abstracts()
    docs = corpus[: args.limit] if args.limit else corpus
    env = {"PARLEY_EMBEDDINGS": args.embeddings, "PARLEY_KNOWLEDGE_MAX_BATCH_BYTES": str(1 << 30)}
    print(
        f"{machine()}; load average {os.getloadavg()[0]:.2f}; embeddings {args.embeddings}; {len(docs)} abstracts"
    )
    with ServerProcess(env, code=ROOT) as server, httpx.Client(base_url=server.url, timeout=600) as client:
        kb = client.post("/v1/knowledge-bases", json={"name": "scifact"}).json()["id"]
        started = time.perf_counter()
        state = batch(client, kb, docs, show=True)
        seconds = time.perf_counter() - started
        chunks = sum(r["chunks"] for r in state["results"])
        embedded = sum(r["embedded"] for r in state["results"])
        statuses = statistics.multimode(r["status"] for r in state["results"])
        found = client.get(
            f"/v1/knowledge-bases/{kb}/search", params={"q": "vitamin D and bone density"}
        ).json()
    print(
        f"{len(docs)} abstracts ({statuses}) in {seconds:.1f} s over HTTP: {len(docs) / seconds:.1f} docs/s, "
        f"{chunks} chunks ({embedded} embedded), {chunks / seconds:.1f} chunks/s; search mode {found['mode']}"
    )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


def encoder(args: argparse.Namespace) -> None:
    from parley.knowledge.embeddings import MiniLMEmbedder
    from parley.knowledge.ingest import parse_text

    texts = []
    for _, title, text in abstracts():
        texts += [
            c.indexed_text for c in parse_text(f"{title}\n\n{text}", title=title, markdown=False).chunks
        ]
        if len(texts) >= args.texts:
            break
    texts = texts[: args.texts]
    models = {p: MiniLMEmbedder(runtime="onnx", chunks=p) for p in ("float32", "int8")}
    for model in models.values():
        model.embed(texts[:32])  # the batch session, created on first use
    print(f"{machine()}; load average {os.getloadavg()[0]:.2f}; {len(texts)} SciFact chunks")
    print("chunks/s by batch size; the two precisions take turns, so both see the same load")
    for size in (8, 16, 32, 64):
        rates = {}
        for precision, model in models.items():
            assert model._onnx is not None
            started = time.perf_counter()
            model._onnx.embed(texts, batch_size=size)
            rates[precision] = len(texts) / (time.perf_counter() - started)
        print(
            f"  batch {size:3}: float32 {rates['float32']:6.1f}, int8 {rates['int8']:6.1f} "
            f"(x{rates['int8'] / rates['float32']:.2f})",
            flush=True,
        )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


def precision(args: argparse.Namespace) -> None:
    import asyncio
    import tempfile

    from bench import retrieval
    from parley.knowledge.embeddings import MiniLMEmbedder

    async def run(chunks: str) -> dict[str, Any]:
        embedder = retrieval.CachedEmbedder(
            MiniLMEmbedder(chunks=chunks),  # type: ignore[arg-type]
            retrieval.CACHE / f"minilm-chunks-{chunks}.npz",
        )
        results: dict[str, Any] = {}
        try:
            with tempfile.TemporaryDirectory() as tmp:
                bench = retrieval.Bench(Path(tmp), embedder)
                await bench.start()
                try:
                    if "scifact" in args.only:
                        results["scifact"] = await retrieval.scifact(bench, 2, compare="none")
                    if "stackfaq" in args.only:
                        results["stackfaq"] = await retrieval.stackfaq(bench, "none")
                finally:
                    await bench.db.close()
        finally:
            embedder.save()
        results["embedded"], results["embed_s"] = embedder.computed, embedder.seconds
        return results

    print(f"{machine()}; load average {os.getloadavg()[0]:.2f}")
    sides = {chunks: asyncio.run(run(chunks)) for chunks in ("float32", "int8")}
    print(f"\n{'chunks':8} {'SciFact nDCG@10 bm25/dense/hybrid':>36} {'StackFAQ top-1 dense/hybrid':>28}")
    for chunks, r in sides.items():
        sci = r.get("scifact", {}).get("quality", {})
        faq = r.get("stackfaq", {})
        print(
            f"{chunks:8} "
            + " / ".join(f"{sci[m]['ndcg@10']:.4f}" for m in ("bm25", "dense", "hybrid") if m in sci).rjust(
                36
            )
            + " "
            + " / ".join(f"{faq[m]['top1']:.3f}" for m in ("dense", "hybrid") if m in faq).rjust(28)
        )
        if r["embedded"]:
            print(
                f"         ({r['embedded']} chunks embedded now, {r['embedded'] / r['embed_s']:.1f} chunks/s)"
            )
    print(
        json.dumps(
            {c: {k: v for k, v in r.items() if k != "embedded"} for c, r in sides.items()}, default=str
        )
    )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    g = sub.add_parser("growth")
    g.add_argument("--sizes", default="10,10000")
    g.add_argument("--probe", type=int, default=30)
    g.add_argument("--embeddings", default="hash")
    s = sub.add_parser("scifact")
    s.add_argument("--limit", type=int, default=0)
    s.add_argument("--embeddings", default="minilm")
    e = sub.add_parser("encoder")
    e.add_argument("--texts", type=int, default=512)
    q = sub.add_parser("precision")
    q.add_argument("--only", default="scifact,stackfaq")
    args = parser.parse_args()
    {"growth": growth, "scifact": scifact, "encoder": encoder, "precision": precision}[args.what](args)


if __name__ == "__main__":
    main()
