"""Knowledge retrieval quality and speed, on the shared evaluation datasets.

    python -m bench.retrieval [--only scifact,stackfaq,cvs] [--latency-queries 300]
        [--compare float32|torch|none] [--pgvector postgresql+asyncpg://USER@HOST:PORT/DB]

- SciFact (5,183 abstracts, 809 train queries): nDCG@10 and recall@100 for bm25, dense
  and hybrid; ingest docs/s; search latency p50/p95 (warm), end to end and index only.
  End to end embeds each question with the model (the vector cache is bypassed): "new"
  is a question seen for the first time, embedded as the server does (ONNX Runtime where
  installed, questions on its int8 copy), "other" the same question embedded the
  ``--compare`` way (default ``float32``: the chunks' model; or ``torch``), interleaved with
  "new"; "again" the question repeated (answered from ``Knowledge``'s query-vector LRU: the
  search without the model). Quality is scored for both ways too.
- With ``--pgvector`` (a PostgreSQL server with the extension; a throwaway database is
  made on it): SciFact again with the vectors in pgvector, nDCG@10 / recall@100 through
  ``Knowledge.search_bases``, and the warm search ("again") interleaved with the in-app one.
- StackFAQ (125 FAQ entries, 625 paraphrased questions): top-1 / top-5 hit rate of the
  right entry, and how many questions clear the relevance floor.
- CVs (72 real PDFs, 24 categories of 3): every PDF ingests with text; precision@3 and
  @5 (at most 3/5) of the right category for one query per category.

Everything goes through ``parley.knowledge`` on a throwaway SQLite database, as the
server would. MiniLM vectors are cached by text hash under ``.cache/bench/`` (gitignored)
so reruns skip the minutes of embedding; the first run's ingest rate is the cold one.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parley.knowledge.bases import Knowledge
from parley.knowledge.embeddings import Embedder, MiniLMEmbedder, Vectors
from parley.knowledge.ingest import ParsedDocument, parse, parse_text
from parley.knowledge.search import MODES, Hit, Mode, tokenize
from parley.store.db import Database
from parley.users import ensure_local_user

DATASETS = Path(
    os.environ.get("PARLEY_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
)
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "bench"


class CachedEmbedder(Embedder):
    """Wraps an embedder; vectors are kept by text hash in an .npz file (unless ``live``)."""

    def __init__(self, inner: Embedder, path: Path) -> None:
        self.inner, self.path = inner, path
        self.name, self.dim, self.relevance_floor = inner.name, inner.dim, inner.relevance_floor
        self.vectors: dict[str, Vectors] = {}
        self.computed = 0
        self.seconds = 0.0
        #: Latency runs: every text goes through the model, as a new question would.
        self.live = False
        self._saved = time.monotonic()
        if path.exists():
            data = np.load(path)
            self.vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self.live:
            return self.inner.embed(texts)
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self.vectors}.items())
        if missing:
            started = time.perf_counter()
            fresh = self.inner.embed([t for _, t in missing])
            self.seconds += time.perf_counter() - started
            self.computed += len(missing)
            self.vectors.update({k: v for (k, _), v in zip(missing, fresh, strict=True)})
            if time.monotonic() - self._saved > 120:  # an interrupted run keeps what it embedded
                self.save()
        return np.vstack([self.vectors[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)

    def embed_query(self, text: str) -> Vectors:
        return self.inner.embed_query(text) if self.live else self.question(text)

    def question(self, text: str, embedder: Embedder | None = None) -> Vectors:
        """``text`` as a search embeds a question (by default an int8 copy of MiniLM), by
        ``embedder`` (else the wrapped one), cached by its runtime, precision and text: quality
        runs score the vectors a server would search with."""
        embedder = embedder or self.inner
        runtime = getattr(embedder, "runtime", "")
        precision = getattr(embedder, "question_precision", "float32")
        key = hashlib.sha1(f"question:{runtime}:{precision}:{text}".encode()).hexdigest()
        if key not in self.vectors:
            self.vectors[key] = embedder.embed_query(text)
        return self.vectors[key]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.vectors)
        partial = self.path.with_suffix(".tmp.npz")
        np.savez(partial, keys=np.array(keys), vectors=np.vstack([self.vectors[k] for k in keys]))
        partial.replace(self.path)
        self._saved = time.monotonic()


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, doc in enumerate(ranked[:k]) if doc in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def documents_in_order(hits: Sequence[Hit], sources: dict[str, str]) -> list[str]:
    """Chunk hits → the documents' sources, first occurrence wins."""
    seen: dict[str, None] = {}
    for hit in hits:
        seen.setdefault(sources[hit.document_id], None)
    return list(seen)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


class Bench:
    def __init__(self, root: Path, embedder: CachedEmbedder | None, url: str | None = None) -> None:
        self.root = root
        self.embedder = embedder
        self.modes: tuple[Mode, ...] = MODES if embedder is not None else ("bm25",)
        if url is not None:
            self.db = Database(url)
        else:
            self.db = Database(f"sqlite+aiosqlite:///{root / 'bench.db'}", sqlite_synchronous="OFF")
        self.knowledge = (
            Knowledge(self.db, embedder=embedder)
            if embedder is not None
            else Knowledge(self.db, embeddings="none")
        )
        self.owner = 0

    async def start(self) -> None:
        await self.db.upgrade()
        self.owner = (await ensure_local_user(self.db)).user_id
        await self.knowledge.start(owner_id=self.owner)

    async def ingest(
        self, name: str, items: list[tuple[str, ParsedDocument]]
    ) -> tuple[str, dict[str, str], float]:
        kb = await self.knowledge.ensure_base(self.owner, name)
        started = time.perf_counter()
        results = []
        for i in range(0, len(items), 256):
            results += await self.knowledge.add_documents(kb.id, items[i : i + 256])
        seconds = time.perf_counter() - started
        return kb.id, {r.document.id: r.document.source for r in results}, seconds

    def search_all(
        self, kb_id: str, queries: list[str], mode: Mode, k: int, questions: Embedder | None = None
    ) -> list[list[Hit]]:
        """Quality runs: the index searched directly, each question embedded as a search does
        (by ``questions`` in place of the server's embedder, for a side-by-side)."""
        index = self.knowledge._indexes[kb_id]
        embedder = self.embedder if mode != "bm25" else None
        vectors = [embedder.question(q, questions) if embedder else None for q in queries]
        tokens = tokenize(queries)
        entries = embedder.embed if embedder else None  # FAQ entries' own questions, as a search embeds them
        return [
            index.search(t, v, mode=mode, k=k, questions=entries)
            for t, v in zip(tokens, vectors, strict=True)
        ]


def compare_side(bench: Bench, compare: str) -> tuple[str, Embedder] | None:
    """The other way to embed a question, timed and scored beside the server's in one run:
    ``float32`` (the chunks' model, where questions run on the int8 copy), ``torch`` or ``none``."""
    inner = bench.embedder.inner if bench.embedder else None
    if not isinstance(inner, MiniLMEmbedder) or compare == "none":
        return None
    if compare == "torch" and inner.runtime != "torch":
        return "torch", MiniLMEmbedder(runtime="torch")
    if compare == "float32" and inner.question_precision == "int8":
        return "float32", MiniLMEmbedder(questions="float32")
    return None


async def scifact(
    bench: Bench, latency_queries: int, pg: Bench | None = None, *, compare: str = "float32"
) -> dict[str, Any]:
    root = DATASETS / "scifact"
    corpus = jsonl(root / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in jsonl(root / "queries.jsonl")}
    qrels: dict[str, set[str]] = {}
    with (root / "qrels" / "train.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels.setdefault(row["query-id"], set()).add(row["corpus-id"])
    started = time.perf_counter()
    items = [
        (
            d["_id"],
            parse_text(f"{d['title']}\n\n{d['text']}", title=d["title"][:300] or d["_id"], markdown=False),
        )
        for d in corpus
    ]
    parse_s = time.perf_counter() - started
    before = (bench.embedder.computed, bench.embedder.seconds) if bench.embedder else (0, 0.0)
    kb_id, sources, ingest_s = await bench.ingest("scifact", items)
    embedded = bench.embedder.computed - before[0] if bench.embedder else 0
    embed_s = bench.embedder.seconds - before[1] if bench.embedder else 0.0
    chunks = len(bench.knowledge._indexes[kb_id])
    ids = [q for q in qrels if q in queries]
    texts = [queries[q] for q in ids]
    other = compare_side(bench, compare)
    quality: dict[str, dict[str, float]] = {}
    for mode, label, questions in [
        *((m, m, None) for m in bench.modes),
        *((m, f"{m} ({other[0]})", other[1]) for m in bench.modes if other and m != "bm25"),
    ]:
        runs = bench.search_all(kb_id, texts, mode, k=300, questions=questions)
        ranked = [documents_in_order(hits, sources)[:100] for hits in runs]
        quality[label] = {
            "ndcg@10": statistics.mean(ndcg_at(r, qrels[q], 10) for r, q in zip(ranked, ids, strict=True)),
            "recall@100": statistics.mean(
                len(set(r) & qrels[q]) / len(qrels[q]) for r, q in zip(ranked, ids, strict=True)
            ),
        }
    sample, warmup = texts[:latency_queries], texts[-20:]
    latency: dict[str, dict[str, float]] = {}
    inner = bench.embedder.inner if bench.embedder else None
    if bench.embedder:
        bench.embedder.live = True

    async def timed(q: str, mode: Mode, *, forget: bool) -> float:
        if forget:
            bench.knowledge._queries = None
        t0 = time.perf_counter()
        await bench.knowledge.search_bases([kb_id], q, mode=mode, k=10)
        return (time.perf_counter() - t0) * 1000

    for mode in bench.modes:
        for q in warmup:
            await timed(q, mode, forget=True)
        sides = ["now", "other"] if other is not None and mode != "bm25" else ["now"]
        timings: dict[str, list[float]] = {"now": [], "other": [], "again": []}
        for i, q in enumerate(sample):
            for side in sides if i % 2 == 0 else sides[::-1]:
                if bench.embedder is not None and inner is not None and other is not None:
                    bench.embedder.inner = other[1] if side == "other" else inner
                timings[side].append(await timed(q, mode, forget=True))
            timings["again"].append(await timed(q, mode, forget=False))
        if bench.embedder is not None and inner is not None:
            bench.embedder.inner = inner
        index = bench.knowledge._indexes[kb_id]
        vectors = bench.embedder.embed(sample) if bench.embedder else [None] * len(sample)
        tokens = tokenize(sample)
        index_only = []
        for t, v in zip(tokens, vectors, strict=True):
            t0 = time.perf_counter()
            index.search(t, v, mode=mode, k=10)
            index_only.append((time.perf_counter() - t0) * 1000)
        latency[mode] = {
            "p50_ms": percentile(timings["now"], 50),
            "p95_ms": percentile(timings["now"], 95),
            "repeat_p50_ms": percentile(timings["again"], 50),
            "repeat_p95_ms": percentile(timings["again"], 95),
            "index_p50_ms": percentile(index_only, 50),
            "index_p95_ms": percentile(index_only, 95),
        }
        if timings["other"]:
            latency[mode]["other_p50_ms"] = percentile(timings["other"], 50)
            latency[mode]["other_p95_ms"] = percentile(timings["other"], 95)
    if bench.embedder:
        bench.embedder.live = False
    stores = await pgvector_side(bench, kb_id, pg, items, ids, texts, qrels, sample) if pg else None
    return {
        "runtime": getattr(inner, "runtime", None),
        "questions": getattr(inner, "question_precision", None),
        "other": other[0] if other else None,
        "stores": stores,
        "docs": len(corpus),
        "chunks": chunks,
        "queries": len(ids),
        "parse_s": parse_s,
        "ingest_s": ingest_s,
        "embedded_now": embedded,
        "embed_s": embed_s,
        "docs_per_s": len(corpus) / (parse_s + ingest_s),
        "quality": quality,
        "latency": latency,
        "latency_queries": len(sample),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


async def stackfaq(bench: Bench, compare: str = "float32") -> dict[str, Any]:
    root = DATASETS / "stackfaq"
    faq = jsonl(root / "faq.jsonl")
    queries = jsonl(root / "queries.jsonl")
    items = []
    for entry in faq:
        answer = "\n\n".join(a.strip() for a in entry["answers"] if a.strip())
        text = f"Q: {entry['question'].strip()}\nA: {answer}\n"
        items.append(
            (entry["faq_id"], parse(f"{entry['faq_id']}.md", text.encode(), title=entry["question"][:300]))
        )
    kb_id, sources, ingest_s = await bench.ingest("stackfaq", items)
    texts = [q["query"] for q in queries]
    result: dict[str, Any] = {"entries": len(faq), "queries": len(queries), "ingest_s": ingest_s}
    other = compare_side(bench, compare)
    for mode, label, questions in [
        *((m, m, None) for m in bench.modes),
        *((m, f"{m} ({other[0]})", other[1]) for m in bench.modes if other and m != "bm25"),
    ]:
        runs = bench.search_all(kb_id, texts, mode, k=20, questions=questions)
        ranked = [documents_in_order(hits, sources) for hits in runs]
        result.setdefault("modes", []).append(label)
        result[label] = {
            "top1": statistics.mean(r[:1] == [q["faq_id"]] for r, q in zip(ranked, queries, strict=True)),
            "top5": statistics.mean(q["faq_id"] in r[:5] for r, q in zip(ranked, queries, strict=True)),
        }
    if bench.embedder:
        floor = bench.embedder.relevance_floor
        dense = bench.search_all(kb_id, texts, "dense", k=1)
        result["above_floor"] = statistics.mean(bool(h) and (h[0].similarity or 0) >= floor for h in dense)
    return result


async def cvs(bench: Bench) -> dict[str, Any]:
    root = DATASETS / "resumes"
    with (root / "labels.csv").open() as f:
        labels = list(csv.DictReader(f))
    items, empty, failed = [], 0, []
    started = time.perf_counter()
    for row in labels:
        path = root / row["path"]
        try:
            parsed = parse(path.name, path.read_bytes())
        except ValueError as exc:
            failed.append(f"{row['path']}: {exc}")
            continue
        empty += not any(c.text.strip() for c in parsed.chunks)
        items.append((row["id"], parsed))
    parse_s = time.perf_counter() - started
    kb_id, sources, ingest_s = await bench.ingest("cvs", items)
    category = {row["id"]: row["category"] for row in labels}
    names = sorted({row["category"] for row in labels})
    result: dict[str, Any] = {
        "pdfs": len(labels),
        "ingested": len(items),
        "failed": failed,
        "empty": empty,
        "chunks": len(bench.knowledge._indexes[kb_id]),
        "ingest_s": parse_s + ingest_s,
    }
    queries = [f"{name.lower().replace('-', ' ')} resume" for name in names]
    for mode in bench.modes:
        runs = bench.search_all(kb_id, queries, mode, k=50)
        ranked = [documents_in_order(hits, sources) for hits in runs]
        result[mode] = {
            f"p@{k}": statistics.mean(
                sum(category[d] == name for d in r[:k]) / k for r, name in zip(ranked, names, strict=True)
            )
            for k in (3, 5)
        }
    return result


async def pgvector_side(
    app: Bench,
    app_kb: str,
    pg: Bench,
    items: list[tuple[str, ParsedDocument]],
    ids: list[str],
    texts: list[str],
    qrels: dict[str, set[str]],
    sample: list[str],
) -> dict[str, Any]:
    """SciFact with the vectors in pgvector: quality through search_bases, warm latency vs in-app."""
    kb_id, sources, ingest_s = await pg.ingest("scifact", items)
    assert pg.knowledge.vector_store == "pgvector", "the --pgvector database has no pgvector"
    out: dict[str, Any] = {"ingest_s": ingest_s, "quality": {}, "latency": {}}
    for mode in ("dense", "hybrid"):
        runs = [await pg.knowledge.search_bases([kb_id], t, mode=mode, k=300) for t in texts]
        ranked = [documents_in_order(hits, sources)[:100] for hits in runs]
        out["quality"][mode] = {
            "ndcg@10": statistics.mean(ndcg_at(r, qrels[q], 10) for r, q in zip(ranked, ids, strict=True)),
            "recall@100": statistics.mean(
                len(set(r) & qrels[q]) / len(qrels[q]) for r, q in zip(ranked, ids, strict=True)
            ),
        }
    sides = {"in-app": (app, app_kb), "pgvector": (pg, kb_id)}
    for mode in ("dense", "hybrid"):
        timings: dict[str, list[float]] = {side: [] for side in sides}
        for i, q in enumerate(sample):
            for side in list(sides) if i % 2 == 0 else list(sides)[::-1]:
                bench, kb = sides[side]
                await bench.knowledge.search_bases([kb], q, mode=mode, k=10)  # the question's vector cached
                t0 = time.perf_counter()
                await bench.knowledge.search_bases([kb], q, mode=mode, k=10)
                timings[side].append((time.perf_counter() - t0) * 1000)
        out["latency"][mode] = {side: (percentile(t, 50), percentile(t, 95)) for side, t in timings.items()}
    out["load"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return out


def report(results: dict[str, Any]) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    if "scifact" in results:
        s = results["scifact"]
        print(f"\nSciFact: {s['docs']} docs -> {s['chunks']} chunks, {s['queries']} train queries")
        print(f"{'mode':8} {'nDCG@10':>8} {'R@100':>7}")
        for mode in s["quality"]:
            q = s["quality"][mode]
            print(f"{mode:18} {q['ndcg@10']:8.4f} {q['recall@100']:7.4f}")
        if "hybrid" in s["quality"]:
            best = max(s["quality"]["bm25"]["ndcg@10"], s["quality"]["dense"]["ndcg@10"])
            print(f"hybrid / best single nDCG@10: {s['quality']['hybrid']['ndcg@10'] / best:.3f}")
        print(
            f"ingest: {s['docs_per_s']:.1f} docs/s ({s['parse_s'] + s['ingest_s']:.1f} s; "
            f"{s['embedded_now']} chunks embedded now in {s['embed_s']:.1f} s)"
        )
        print(
            f"search latency, ms ({s['latency_queries']} questions; new: {s['runtime']}, "
            f"{s['questions']} questions; interleaved with: {s['other']}; load {s['load']})"
        )
        print(
            f"{'mode':8} {'new p50':>8} {'new p95':>8} {'other p50':>10} {'other p95':>10} "
            f"{'again p50':>10} {'again p95':>10} {'index p50':>10} {'index p95':>10}"
        )
        for mode in s["latency"]:
            lat = s["latency"][mode]
            other = lat.get("other_p50_ms", math.nan), lat.get("other_p95_ms", math.nan)
            print(
                f"{mode:8} {lat['p50_ms']:8.2f} {lat['p95_ms']:8.2f} {other[0]:10.2f} {other[1]:10.2f} "
                f"{lat['repeat_p50_ms']:10.2f} {lat['repeat_p95_ms']:10.2f} "
                f"{lat['index_p50_ms']:10.2f} {lat['index_p95_ms']:10.2f}"
            )
        if s.get("stores"):
            st = s["stores"]
            print(
                f"\nSciFact with the vectors in pgvector (ingest {st['ingest_s']:.1f} s; load {st['load']})"
            )
            for mode, q in st["quality"].items():
                print(f"{mode:8} nDCG@10 {q['ndcg@10']:.4f}  R@100 {q['recall@100']:.4f}")
            print("warm search (question's vector cached), ms p50 / p95, interleaved:")
            for mode, sides in st["latency"].items():
                print(
                    f"{mode:8} "
                    + "  ".join(f"{side} {p50:.2f} / {p95:.2f}" for side, (p50, p95) in sides.items())
                )
    if "stackfaq" in results:
        s = results["stackfaq"]
        print(f"\nStackFAQ: {s['entries']} entries, {s['queries']} paraphrased questions")
        for mode in s["modes"]:
            print(f"{mode:18} top-1 {s[mode]['top1']:.3f}  top-5 {s[mode]['top5']:.3f}")
        if "above_floor" in s:
            print(f"questions whose best passage clears the relevance floor: {s['above_floor']:.3f}")
    if "cvs" in results:
        s = results["cvs"]
        print(
            f"\nCVs: {s['ingested']}/{s['pdfs']} PDFs ingested ({s['empty']} empty, {len(s['failed'])} failed), "
            f"{s['chunks']} chunks, {s['ingest_s']:.1f} s"
        )
        for mode in [m for m in MODES if m in s]:
            print(
                f"{mode:8} precision@3 {s[mode]['p@3']:.3f}  precision@5 {s[mode]['p@5']:.3f} (at most 0.6)"
            )
        for line in s["failed"]:
            print("  failed:", line)


async def throwaway_database(server: str, drop: str | None = None) -> str:
    import asyncpg  # type: ignore[import-untyped]

    dsn = server.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        if drop is not None:
            await conn.execute(f'DROP DATABASE IF EXISTS "{drop.rsplit("/", 1)[1]}" WITH (FORCE)')
            return drop
        name = f"bench_{os.getpid()}_{int(time.time())}"
        await conn.execute(f'CREATE DATABASE "{name}"')
        return server.rsplit("/", 1)[0] + "/" + name
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="scifact,stackfaq,cvs")
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument("--bm25-only", action="store_true", help="No embeddings: BM25 figures in seconds.")
    parser.add_argument("--pgvector", help="A PostgreSQL server with pgvector: SciFact there too.")
    parser.add_argument(
        "--compare",
        choices=["float32", "torch", "none"],
        default="float32",
        help="Embed each question a second way, interleaved (latency) and scored (quality) beside "
        "the server's: float32 (the chunks' model; the server's questions run on an int8 copy), "
        "torch, or none (only the server's path, as in a server).",
    )
    parser.add_argument("--no-torch", action="store_true", help="Older spelling of --compare none.")
    args = parser.parse_args()
    compare = "none" if args.no_torch else args.compare
    embedder = None if args.bm25_only else CachedEmbedder(MiniLMEmbedder(), CACHE / "minilm.npz")
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bench = Bench(Path(tmp), embedder)
            await bench.start()
            pg_url = await throwaway_database(args.pgvector) if args.pgvector and embedder else None
            pg = Bench(Path(tmp), embedder, pg_url) if pg_url else None
            if pg is not None:
                await pg.start()
            try:
                for name in args.only.split(","):
                    started = time.perf_counter()
                    runners = {
                        "scifact": lambda: scifact(bench, args.latency_queries, pg, compare=compare),
                        "stackfaq": lambda: stackfaq(bench, compare),
                        "cvs": lambda: cvs(bench),
                    }
                    results[name] = await runners[name]()
                    print(f"[{name}: {time.perf_counter() - started:.1f} s]", flush=True)
            finally:
                await bench.db.close()
                if pg is not None and pg_url is not None:
                    await pg.db.close()
                    await throwaway_database(args.pgvector, drop=pg_url)
    finally:
        if embedder is not None:
            embedder.save()
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    asyncio.run(main())
