"""Grounded arguments: a reference argument must name an id an earlier tool result showed.

``Seen`` holds, per kind, the ids (with a label, e.g. the product name) that tool results
of a thread have shown, most recent last. It is rebuilt for each run from the thread's
persisted tool calls within a window (the last N assistant turns, optionally a maximum
age) and grows as the run's own tools return. A call that names anything else is never
executed: it is rejected with the closest seen ids as suggestions.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from parley.store.schema import Message, now


@dataclass(slots=True)
class Rejection:
    reason: str
    suggestions: list[dict[str, str]] = field(default_factory=list)


_CONFUSABLE = str.maketrans({"i": "1", "l": "1", "o": "0"})


def _fold(text: str) -> str:
    """Compare ids as a reader would: ``KEY-10I`` looks like ``KEY-101``."""
    return text.translate(_CONFUSABLE)


class Seen:
    def __init__(self) -> None:
        self._ids: dict[str, dict[str, str]] = {}

    def add(self, refs: Mapping[str, Mapping[str, str]]) -> None:
        for kind, ids in refs.items():
            bucket = self._ids.setdefault(kind, {})
            for ref_id, label in ids.items():
                bucket.pop(ref_id, None)  # re-insert: most recent last
                bucket[ref_id] = label

    def contains(self, kind: str, ref_id: str) -> bool:
        return ref_id in self._ids.get(kind, {})

    def ids(self, kind: str) -> dict[str, str]:
        """Seen ids of ``kind`` with their labels, most recent first."""
        return dict(reversed(list(self._ids.get(kind, {}).items())))

    def __len__(self) -> int:
        return sum(len(v) for v in self._ids.values())

    def suggest(self, kind: str, value: str, limit: int = 3) -> list[dict[str, str]]:
        """The seen ids closest to ``value``, by id or by label (a model may pass a name)."""
        seen = self.ids(kind)
        if not seen:
            return []
        needle = value.casefold().strip()
        scored = []
        for ref_id, label in seen.items():
            by_id = difflib.SequenceMatcher(None, _fold(needle), _fold(ref_id.casefold())).ratio()
            by_label = difflib.SequenceMatcher(None, needle, label.casefold()).ratio() if label else 0.0
            contains = 1.0 if needle and label and needle in label.casefold() else 0.0
            scored.append((max(by_id, by_label, contains), ref_id, label))
        scored.sort(key=lambda item: -item[0])
        return [{"id": ref_id, "name": label} for score, ref_id, label in scored[:limit] if score >= 0.3]

    def check(self, references: Mapping[str, str], values: Mapping[str, Any]) -> Rejection | None:
        """``None`` when every reference argument names a seen id; else why not."""
        from parley.tools.base import ref_values

        for argument, kind in references.items():
            for ref_id in ref_values(values.get(argument)):
                if self.contains(kind, ref_id):
                    continue
                suggestions = self.suggest(kind, ref_id)
                if self._ids.get(kind):
                    hint = "use an id from an earlier result"
                    if suggestions:
                        hint += " (closest: " + ", ".join(s["id"] for s in suggestions) + ")"
                else:
                    hint = f"no {kind} has been shown in this conversation yet; search first"
                return Rejection(
                    f"{argument} {ref_id!r} does not name a {kind} shown by an earlier tool result "
                    f"in this conversation; {hint}",
                    suggestions,
                )
        return None

    @classmethod
    def from_history(cls, messages: Sequence[Message], *, window: int, max_age: float | None = None) -> Seen:
        """Ids shown by tool results in the last ``window`` assistant turns (and within ``max_age`` s)."""
        seen = cls()
        turns = [m for m in messages if m.role == "assistant" and (m.data or {}).get("tool_calls")]
        if window >= 0:
            turns = turns[-window:] if window else []
        cutoff = None if max_age is None else now() - max_age
        for message in turns:
            if cutoff is not None and message.created_at < cutoff:
                continue
            seen.add_records(message.data["tool_calls"])
        return seen

    def add_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            if record.get("status") == "ok" and record.get("refs"):
                self.add(record["refs"])
