"""Server-side tool choice, for models that cannot choose tools themselves.

The router scores each tool against the user's words (``KeywordRouter``: stemmed
keyword overlap, weighted by how specific a word is to one tool; ``EmbeddingRouter``:
cosine similarity of sentence embeddings; ``HybridRouter``, the server's: whichever of the
two is surer) and picks the best above a confidence threshold, or none. A request with several clauses ("add the headphones to my cart and
find me a keyboard") becomes several calls when every clause routes on its own.

The model then only fills the chosen tool's arguments, under a JSON schema the provider
enforces (``ProviderRequest.response_schema``; llama.cpp turns it into a grammar). A
reference argument's schema is narrowed to an ``enum`` of the ids the conversation has
seen, so even a tiny model cannot write an id that was never shown.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN_PLUS

from parley.providers.base import ChatMessage, ProviderRequest
from parley.tools.base import Tool
from parley.tools.provenance import Seen

_SPLIT = re.compile(r"\s*(?:;|,?\s+and then\s+|,?\s+then\s+|,?\s+and\s+|,?\s+also\s+)\s*", re.IGNORECASE)
_STEMMER: Any = None
#: Stop words that do say which tool is meant ("more about", "under 50", "what is in my cart").
ROUTER_WORDS = frozenset({"more", "about", "under", "over", "out", "off", "what", "any", "all", "again"})
_QUIET = {"please", "could", "would", "can", "let", "thanks", "thank", "also", "one"}
#: Words that say nothing about which tool is meant (``stems``).
STOPWORDS = sorted((set(STOPWORDS_EN_PLUS) | _QUIET) - ROUTER_WORDS)
#: Words that say nothing about what a question is about (``content_stems``): the router's
#: words too. "What is your customer support phone number?" shares "what" with every FAQ
#: entry that asks "What …?", and nothing else with the one it is closest to.
CONTENT_STOPWORDS = sorted(set(STOPWORDS_EN_PLUS) | _QUIET)


def stems(text: str, stopwords: Sequence[str] = STOPWORDS) -> list[str]:
    global _STEMMER
    if _STEMMER is None:
        import Stemmer

        _STEMMER = Stemmer.Stemmer("english")
    tokens = bm25s.tokenize(
        text, stopwords=stopwords, stemmer=_STEMMER, return_ids=False, show_progress=False
    )
    return list(tokens[0]) if tokens else []


def content_stems(text: str) -> list[str]:
    """``text``'s words that say what it is about, stemmed: ``stems`` without the router's words."""
    return stems(text, CONTENT_STOPWORDS)


def tool_document(tool: Tool) -> str:
    """What a router reads about a tool: its name, description, keywords and argument descriptions."""
    parts = [tool.name.replace("_", " ").replace(".", " "), tool.description, " ".join(tool.keywords)]
    for name, prop in tool.schema().get("properties", {}).items():
        parts.append(name.replace("_", " "))
        parts.append(str(prop.get("description", "")))
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Choice:
    tool: Tool
    confidence: float
    text: str


class Router(Protocol):
    threshold: float

    def scores(self, text: str, tools: Sequence[Tool]) -> list[float]: ...


def choose(router: Router, text: str, tools: Sequence[Tool]) -> Choice | None:
    """The best tool for ``text``, or ``None`` when no tool is confident enough."""
    if not tools or not text.strip():
        return None
    scores = router.scores(text, tools)
    best = max(range(len(tools)), key=lambda i: scores[i])
    if scores[best] < router.threshold:
        return None
    return Choice(tools[best], scores[best], text)


def plan(router: Router, text: str, tools: Sequence[Tool]) -> list[Choice]:
    """One choice per clause when every clause routes on its own; else at most one for the whole."""
    clauses = [c for c in _SPLIT.split(text.strip()) if c.strip()]
    if len(clauses) > 1:
        choices = [choose(router, clause, tools) for clause in clauses]
        if all(choices):
            return [c for c in choices if c is not None]
    single = choose(router, text, tools)
    return [single] if single else []


class KeywordRouter:
    """Weighted keyword coverage: the share of the message's words that the tool's document has.

    A word's weight is its inverse document frequency over the tools (a word only one tool
    mentions says more than one every tool mentions); words in no tool's document count
    against every tool. ``vocabulary`` gives a tool the words of its domain (the catalog's
    product words to the search tool): they decide only when the message has no word of
    any tool's own description ("wireless headphones?"), and are neutral otherwise ("add
    the headphones to my cart" is about the cart, whatever the product).
    """

    def __init__(self, threshold: float = 0.3, vocabulary: dict[str, Iterable[str]] | None = None) -> None:
        self.threshold = threshold
        self._vocabulary = {name: set(words) for name, words in (vocabulary or {}).items()}
        self._cache: dict[tuple[str, ...], list[set[str]]] = {}

    def add_vocabulary(self, tool_name: str, words: Iterable[str]) -> None:
        self._vocabulary.setdefault(tool_name, set()).update(words)

    def _documents(self, tools: Sequence[Tool]) -> list[set[str]]:
        key = tuple(t.name for t in tools)
        docs = self._cache.get(key)
        if docs is None:
            docs = [set(stems(tool_document(t))) for t in tools]
            self._cache[key] = docs
        return docs

    def scores(self, text: str, tools: Sequence[Tool]) -> list[float]:
        docs = self._documents(tools)
        words = set(stems(text))
        own = set().union(*docs) if docs else set()
        if words & own:
            domain = set().union(*(self._vocabulary.get(t.name, set()) for t in tools))
            words -= domain - own
        else:
            docs = [doc | self._vocabulary.get(t.name, set()) for doc, t in zip(docs, tools, strict=True)]
        if not words:
            return [0.0] * len(tools)
        n = len(docs)
        weight = {w: math.log(1 + n / (1 + sum(w in d for d in docs))) for w in words}
        total = sum(weight.values())
        return [sum(weight[w] for w in words if w in doc) / total for doc in docs]


class EmbeddingRouter:
    """Cosine similarity between the message and each tool's document (sentence embeddings)."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], threshold: float = 0.3) -> None:
        self.embed = embed
        self.threshold = threshold
        self._cache: dict[str, np.ndarray] = {}

    def prime(self, texts: Iterable[str]) -> None:
        """Embed many texts in one batch (messages or tool documents seen later)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, vector in zip(missing, self.embed(missing), strict=True):
                self._cache[text] = _unit(vector)

    def scores(self, text: str, tools: Sequence[Tool]) -> list[float]:
        documents = [tool_document(t) for t in tools]
        self.prime(documents)  # a server's tools are few: their vectors are kept; messages are not
        query = self._cache.get(text)
        if query is None:
            query = _unit(self.embed([text])[0])
        return [float(np.dot(query, self._cache[d])) for d in documents]


#: The embedding router's bar for all-MiniLM-L6-v2, tuned on BFCL's even-numbered items
#: (``bench.tools_bfcl``; docs/BENCHMARKS.md, "Tool calling on BFCL").
EMBEDDING_THRESHOLD = 0.386
#: The model that bar was measured with: another embedder's cosines are on another scale.
EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class HybridRouter:
    """Keywords or meaning, whichever is surer: each tool scores the larger of its keyword score
    over the keyword router's bar and its cosine over the embedding router's bar, so 1 is the bar.

    Measured on BFCL's held-out items and on the shop's own messages (docs/BENCHMARKS.md): the
    embedding router alone chooses better on BFCL but misses most shop turns ("show me monitors",
    "add the black one to my cart"), which the keyword router, taught the catalog's words, gets;
    together they match the better of the two on both, but for BFCL's irrelevance items. Without
    an embedder (``attach(None)``, or one whose cosines the bar was not measured on) it is the
    keyword router.
    """

    threshold = 1.0

    def __init__(self, keyword: KeywordRouter, embedding_threshold: float = EMBEDDING_THRESHOLD) -> None:
        self.keyword = keyword
        self.embedding_threshold = embedding_threshold
        self.embedding: EmbeddingRouter | None = None
        #: Whether ``attach`` has been called (the server attaches its embedder at the first turn).
        self.attached = False

    def attach(self, embed: Callable[[list[str]], np.ndarray] | None) -> None:
        self.embedding = None if embed is None else EmbeddingRouter(embed, self.embedding_threshold)
        self.attached = True

    def add_vocabulary(self, tool_name: str, words: Iterable[str]) -> None:
        self.keyword.add_vocabulary(tool_name, words)

    def scores(self, text: str, tools: Sequence[Tool]) -> list[float]:
        words = [s / self.keyword.threshold for s in self.keyword.scores(text, tools)]
        if self.embedding is None:
            return words
        meaning = [s / self.embedding.threshold for s in self.embedding.scores(text, tools)]
        return [max(w, m) for w, m in zip(words, meaning, strict=True)]


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


# -- argument filling ----------------------------------------------------------------


def candidates(seen: Seen, kind: str, text: str, limit: int = 20) -> dict[str, str]:
    """Seen ids of ``kind`` that fit ``text``: those whose label shares the most words with it.

    With no shared word, every seen id (most recent first) stays a candidate.
    """
    ids = seen.ids(kind)
    words = set(stems(text))
    scored = [(len(words & set(stems(label))), ref_id, label) for ref_id, label in ids.items()]
    best = max((s for s, _, _ in scored), default=0)
    if best > 0:
        scored = [item for item in scored if item[0] == best]
    return {ref_id: label for _, ref_id, label in scored[:limit]}


def grounded_schema(tool: Tool, seen: Seen, text: str) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """The tool's argument schema with each reference narrowed to the candidate seen ids."""
    schema = copy.deepcopy(tool.schema())
    shown: dict[str, dict[str, str]] = {}
    for argument, kind in tool.references.items():
        options = candidates(seen, kind, text)
        if not options:
            continue
        shown[kind] = options
        prop = schema["properties"][argument]
        branches = prop.get("anyOf")
        targets = [b for b in branches if b.get("type") == "string"] if branches else [prop]
        for target in targets:
            target["enum"] = list(options)
            for key in ("minLength", "maxLength"):
                target.pop(key, None)
    return schema, shown


def without(schema: dict[str, Any], names: Collection[str]) -> dict[str, Any]:
    """``schema`` without the arguments ``names``."""
    if not names:
        return schema
    properties = {k: v for k, v in schema.get("properties", {}).items() if k not in names}
    required = [k for k in schema.get("required", []) if k not in names]
    return {**schema, "properties": properties, "required": required}


def essential(schema: dict[str, Any]) -> dict[str, Any]:
    """Only the arguments a small model must fill: the required ones and the first (made required).

    Optional filters keep their defaults: a tiny model asked for every argument invents
    values ("max_price": 10) and spends its time writing them.
    """
    properties = schema.get("properties", {})
    if not properties:
        return schema
    keep = list(dict.fromkeys([next(iter(properties)), *schema.get("required", [])]))
    return {**schema, "properties": {k: properties[k] for k in keep}, "required": keep}


def fill_request(
    tool: Tool,
    text: str,
    seen: Seen,
    *,
    thread_id: str | None = None,
    max_tokens: int = 128,
    skip: Collection[str] = (),
) -> ProviderRequest:
    """The request that asks a small model for ``tool``'s essential arguments, as constrained JSON.

    ``skip``: arguments the server fills itself (references it resolved), left out of the schema.
    """
    schema, shown = grounded_schema(tool, seen, text)
    schema = essential(without(schema, skip))
    shown = {
        kind: ids
        for kind, ids in shown.items()
        if any(tool.references.get(a) == kind for a in schema["properties"])
    }
    lines = [f"Call the function {tool.name}: {tool.description}"]
    lines.append("Arguments (JSON schema): " + json.dumps(schema["properties"], ensure_ascii=False))
    lines.append("Reply with the JSON object of arguments only.")
    context = []
    for kind, options in shown.items():
        context.append(f"Known {kind}s (id: name):")
        context.extend(f"- {ref_id}: {label}" for ref_id, label in options.items())
    user = "\n".join([*context, f"Request: {text}"]) if context else text
    return ProviderRequest(
        messages=[ChatMessage("system", "\n".join(lines)), ChatMessage("user", user)],
        response_schema=schema,
        max_tokens=max_tokens,
        temperature=0.0,
        thread_id=thread_id,
        metadata={"purpose": "tool_arguments", "tool": tool.name},
    )


def ground_text(arguments: str, tool: Tool, text: str) -> str:
    """A small model's free-text first argument that shares no word with the request is replaced
    by the request itself (a search query copied from the prompt finds nothing; the user's words do)."""
    properties = tool.schema().get("properties", {})
    if not properties:
        return arguments
    first, prop = next(iter(properties.items()))
    if first in tool.references or "string" not in json.dumps(prop) or "enum" in prop:
        return arguments
    try:
        values = json.loads(arguments)
    except json.JSONDecodeError:
        return arguments
    if not isinstance(values, dict):
        return arguments
    value = values.get(first)
    if isinstance(value, str) and set(stems(value)) & set(stems(text)):
        return arguments
    values[first] = text
    return json.dumps(values, ensure_ascii=False)


def parse_arguments(text: str) -> str:
    """The JSON object in a model's reply (tolerating prose or code fences around it)."""
    text = text.strip()
    start, end = text.find("{"), text.rfind("}")
    if start == -1 or end < start:
        return text
    return text[start : end + 1]
