"""Run benchmarks: ``python -m bench`` (the quick core set) or ``python -m bench NAME [NAME ...]``."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench

CORE = ["event_log", "streaming", "sse_memory"]


def main() -> None:
    names = sys.argv[1:] or CORE
    available = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))
    for name in names:
        if name not in available:
            raise SystemExit(f"unknown benchmark {name!r}; available: {', '.join(available)}")
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        module = importlib.import_module(f"bench.{name}")
        sys.argv = [f"bench.{name}"]
        module.main()


main()
