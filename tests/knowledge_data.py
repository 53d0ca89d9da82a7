"""Small documents for the knowledge tests."""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parley.knowledge.embeddings import Embedder, Vectors

FAQ = """# Acme help

Q: How do I reset my password?
A: Open Settings, choose Security, and press "Reset password". A link arrives by email.

Q: What is the refund policy?
A: Annual plans are refunded in full within 30 days of purchase.
Monthly plans are not refunded.

Q: Which payment methods do you accept?
A: Visa, Mastercard and bank transfer.
"""

GUIDE = """# Gardening guide

## Tomatoes

Tomatoes need six hours of sun a day and deep watering twice a week.

## Roses

Prune roses in late winter, just above an outward-facing bud.
"""


def make_demo_cvs(out: Path) -> Path:
    """The recruiter's demo CVs, written by the repository's own script (as ``make run`` does)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_demo_cvs.py"
    made = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert made.returncode == 0, made.stderr
    return out


def pdf_bytes(*pages: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title("Test PDF")
    for text in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


class WordVectorEmbedder(Embedder):
    """Deterministic, continuous embeddings: each word a fixed random direction, a text their sum.

    Texts sharing words are close, and two different texts almost never tie on similarity,
    so rankings compare exactly between stores.
    """

    relevance_floor = 0.2

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.name = f"word-vectors-{dim}"

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[row] += np.random.default_rng(seed).standard_normal(self.dim)
            out[row] += 1e-3  # an empty text is not the zero vector
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out.astype(np.float32)


def corpus(documents: int, seed: int = 7) -> dict[str, str]:
    """Markdown documents with a few sections each, over a shared vocabulary."""
    rng = random.Random(seed)
    words = [
        f"{a}{b}"
        for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "tu")
        for b in ("n", "x", "ro", "le", "ti")
    ]
    out = {}
    for d in range(documents):
        sections = []
        for s in range(rng.randint(1, 4)):
            body = " ".join(rng.choice(words) for _ in range(rng.randint(6, 30)))
            sections.append(f"## Section {s} of {d}\n\n{body}.\n")
        out[f"doc-{d:03}.md"] = f"# Document {d}\n\n" + "\n".join(sections)
    return out
