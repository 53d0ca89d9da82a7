"""Write the demo CVs of the `recruiter` assistant: fictional people, one PDF each.

    python scripts/make_demo_cvs.py [OUT_DIR]    (default: .parley/demo-cvs)

A server with the default knowledge writes them into its data dir by itself; this script is
for tests and benchmarks that want them elsewhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

from parley.demo_cvs import PEOPLE, Person, main, write_cv

__all__ = ["PEOPLE", "Person", "main", "write_cv"]

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".parley/demo-cvs")
    print(f"wrote {main(out)} CVs to {out}")
