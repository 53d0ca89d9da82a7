"""Run benchmarks: ``python -m bench`` (the core runtime's, as its targets are stated) or
``python -m bench NAME [NAME ...]`` (each with its defaults)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench

#: The core set: the event log, streaming overhead at 1 stream and a burst of 100 (the server
#: alone: the raw client), 100 streams kept open at a model's pace, SSE memory; and answer
#: quality (issue #18), 10 items per question set, both models, the report split.
CORE = [
    ("event_log", []),
    ("streaming", ["--client", "raw"]),
    ("streaming", ["--sustained", "100", "--seconds", "15", "--rounds", "1"]),
    ("sse_memory", []),
    ("answers", ["--limit", "10"]),
]


def main() -> None:
    runs = [(name, []) for name in sys.argv[1:]] or CORE
    available = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))
    for name, _ in runs:
        if name not in available:
            raise SystemExit(f"unknown benchmark {name!r}; available: {', '.join(available)}")
    for name, args in runs:
        print(f"\n=== bench.{name} {' '.join(args)} ===", flush=True)
        module = importlib.import_module(f"bench.{name}")
        sys.argv = [f"bench.{name}", *args]
        module.main()


main()
