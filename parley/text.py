"""Text Parley can store: any Unicode but NUL and unpaired surrogates.

PostgreSQL's text and JSON types refuse NUL (``\\u0000``), and no database can encode an
unpaired surrogate (``\\ud800``) as UTF-8; SQLite would store the first and fail on the
second. So what users send is checked at the edge (``parley.http.TextGuard``: a 4xx naming
the field, nothing stored), and free text Parley receives from elsewhere (a model's reply, a
PDF's extracted text) is cleaned with ``clean``.
"""

from __future__ import annotations

import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

REASON = "text may not contain NUL characters (\\u0000) or unpaired surrogates (\\ud800-\\udfff)"


def storable(text: str) -> bool:
    return _UNSTORABLE.search(text) is None


def clean(text: str) -> str:
    """``text`` without the characters no database can store (free text only: an identifier
    or a field with meaning is refused instead)."""
    return _UNSTORABLE.sub("", text) if _UNSTORABLE.search(text) else text


def first_unstorable(value: Any, where: str = "body") -> str | None:
    """Where (``body.metadata.note``) the first string that cannot be stored sits in a parsed
    JSON value, keys included; ``None`` when every string can be stored."""
    if isinstance(value, str):
        return None if storable(value) else where
    if isinstance(value, dict):
        for key, item in value.items():
            if not storable(key):
                return f"{where} (a key)"
            found = first_unstorable(item, f"{where}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = first_unstorable(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None
