"""Tool calling on BFCL v4 (every category in the dataset folder: simple_python, multiple,
irrelevance, and the live_* ones where present), per route and mode.

Modes, for a model that cannot choose tools (``chooses_tools = False``, e.g. local:smollm2):

- ``model``: the model chooses, constrained to JSON ``{"name": ..., "arguments": ...}`` or
  ``{"name": "none"}`` (one grammar over every function's schema);
- ``server``: Parley's server-side choice (``parley.tools.choice``: keyword router, and the
  embedding router when sentence-transformers is installed), then the model fills the
  arguments of the chosen function under its schema — the path the agent loop takes.

A model that chooses tools gets them natively (``mode = native``).

Figures: right function + schema-valid arguments, BFCL-style value match against the
possible answers, and (irrelevance) the rate of correctly calling nothing. The router's
confidence threshold is tuned on the even-numbered items of each category and reported on
the odd-numbered ones too, so the figure is not fitted to itself.

    python -m bench.tools_bfcl --route local:smollm2 --limit 100
    python -m bench.tools_bfcl --route local:smollm2,openai:gpt-4o-mini --limit 0   # every item
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parley.config import Settings
from parley.providers.base import (
    ChatMessage,
    Provider,
    ProviderError,
    ProviderRequest,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)
from parley.providers.registry import Providers
from parley.tools.calls import assemble
from parley.tools.choice import EmbeddingRouter, HybridRouter, KeywordRouter, choose, parse_arguments

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("PARLEY_DATASETS", ROOT.parent / "shared" / "datasets"))
if not (DATASETS / "bfcl").exists():
    DATASETS = Path("/work/shared/datasets")
CATEGORIES = ("simple_python", "multiple", "irrelevance")
#: Categories where calling nothing is right; in the others a call is expected (``live_relevance``
#: has no possible answers: any call is right, none is wrong).
NO_CALL = ("irrelevance", "live_irrelevance")


def categories() -> list[str]:
    """Every category whose questions are in the dataset folder (BFCL_v4_<category>.json)."""
    found = sorted(p.stem.removeprefix("BFCL_v4_") for p in (DATASETS / "bfcl").glob("BFCL_v4_*.json"))
    return found or list(CATEGORIES)


_TYPES = {
    "dict": "object",
    "float": "number",
    "tuple": "array",
    "any": None,
    "int": "integer",
    "str": "string",
}


# -- data ----------------------------------------------------------------------------------------


def convert(schema: Any) -> Any:
    """A BFCL parameter schema (``dict``, ``float``, ``tuple``...) as JSON schema."""
    if isinstance(schema, list):
        return [convert(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            mapped = _TYPES.get(value, value)
            if mapped:
                out["type"] = mapped
        elif key == "properties":
            out["properties"] = {k: convert(v) for k, v in value.items()}
        elif key == "items":
            out["items"] = convert(value)
        elif key in ("description", "enum", "required", "default"):
            out[key] = value
    if out.get("type") == "object":
        out.setdefault("properties", {})
    return out


@dataclass
class Function:
    """A BFCL function, shaped like a Parley ``Tool`` for the routers."""

    name: str
    description: str
    parameters: dict[str, Any]
    keywords: tuple[str, ...] = ()
    references: dict[str, str] = field(default_factory=dict)

    def schema(self) -> dict[str, Any]:
        return self.parameters


@dataclass
class Item:
    id: str
    category: str
    question: str
    functions: list[Function]
    answer: list[dict[str, Any]] | None  # [{name: {param: [allowed values]}}]; None: not known
    #: The item's place in its file: even ones tune thresholds, odd ones report (ids such as
    #: ``live_simple_0-0-0`` carry no usable number).
    index: int = 0

    @property
    def expects_call(self) -> bool:
        return self.category not in NO_CALL

    @property
    def held_out(self) -> bool:
        return self.index % 2 == 1


def load(category: str) -> list[Item]:
    folder = DATASETS / "bfcl"
    answers: dict[str, Any] = {}
    answer_file = folder / "possible_answer" / f"BFCL_v4_{category}.json"
    if answer_file.exists():
        for line in answer_file.read_text().splitlines():
            row = json.loads(line)
            answers[row["id"]] = row["ground_truth"]
    items = []
    lines = [line for line in (folder / f"BFCL_v4_{category}.json").read_text().splitlines() if line.strip()]
    for index, line in enumerate(lines):
        row = json.loads(line)
        turns = row["question"][0]
        question = next((m["content"] for m in reversed(turns) if m["role"] == "user"), "")
        functions = [
            Function(f["name"], f.get("description", ""), convert(f.get("parameters", {})))
            for f in row["function"]
        ]
        items.append(Item(row["id"], category, question, functions, answers.get(row["id"]), index))
    return items


# -- checking ------------------------------------------------------------------------------------


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if "enum" in schema and value not in schema["enum"]:
        return False
    checks: dict[str, Callable[[Any], bool]] = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    return kind is None or checks.get(kind, lambda v: True)(value)


def valid(arguments: Any, schema: dict[str, Any]) -> bool:
    """Required arguments present, no unknown ones, top-level types and enums right."""
    if not isinstance(arguments, dict):
        return False
    props = schema.get("properties", {})
    if any(name not in arguments for name in schema.get("required", [])):
        return False
    return all(name in props and _type_ok(value, props[name]) for name, value in arguments.items())


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return "".join(ch for ch in value.lower() if ch.isalnum())
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def matches(name: str, arguments: dict[str, Any], answer: list[dict[str, Any]]) -> bool:
    """BFCL-style AST match (simplified): right function, every value among the possible ones."""
    for expected in answer:
        ((fname, params),) = expected.items()
        if fname != name:
            continue
        if any(k not in params for k in arguments):
            continue
        ok = True
        for param, allowed in params.items():
            if param not in arguments:
                ok = "" in allowed
            else:
                ok = _norm(arguments[param]) in [_norm(a) for a in allowed if a != ""]
            if not ok:
                break
        if ok:
            return True
    return False


# -- calling the model ---------------------------------------------------------------------------


def _listing(functions: Sequence[Function]) -> str:
    return "\n".join(
        f"- {f.name}: {f.description} Arguments: {json.dumps(f.parameters.get('properties', {}))}"
        for f in functions
    )


async def _text(provider: Provider, request: ProviderRequest) -> tuple[str, list[ToolCallDelta]]:
    text, fragments = "", []
    async for delta in provider.stream(request):
        if isinstance(delta, TextDelta):
            text += delta.text
        elif isinstance(delta, ToolCallDelta):
            fragments.append(delta)
    return text, fragments


async def model_chooses(provider: Provider, item: Item) -> tuple[str | None, Any]:
    if provider.chooses_tools:
        specs = [ToolSpec(f.name, f.description, f.parameters) for f in item.functions]
        request = ProviderRequest(
            [ChatMessage("user", item.question)], tools=specs, tool_choice="auto", temperature=0
        )
        _, fragments = await _text(provider, request)
        calls = assemble(fragments)
        if not calls:
            return None, None
        return calls[0].name, _loads(calls[0].arguments)
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"name": {"const": f.name}, "arguments": f.parameters},
            "required": ["name", "arguments"],
        }
        for f in item.functions
    ]
    options.append({"type": "object", "properties": {"name": {"const": "none"}}, "required": ["name"]})
    system = (
        "You can call one of these functions:\n"
        + _listing(item.functions)
        + '\nReply with JSON {"name": FUNCTION, "arguments": {...}} for the function that answers the request, '
        'or {"name": "none"} if no function fits.'
    )
    request = ProviderRequest(
        [ChatMessage("system", system), ChatMessage("user", item.question)],
        response_schema={"anyOf": options},
        max_tokens=256,
        temperature=0,
    )
    text, _ = await _text(provider, request)
    reply = _loads(parse_arguments(text))
    if not isinstance(reply, dict) or reply.get("name") in (None, "none"):
        return None, None
    return str(reply["name"]), reply.get("arguments")


async def server_chooses(provider: Provider, item: Item, router: Any) -> tuple[str | None, Any]:
    choice = choose(router, item.question, item.functions)  # type: ignore[arg-type]
    if choice is None:
        return None, None
    function: Function = choice.tool  # type: ignore[assignment]
    system = (
        f"Call the function {function.name}: {function.description}\n"
        f"Arguments (JSON schema): {json.dumps(function.parameters.get('properties', {}))}\n"
        "Reply with the JSON object of arguments only."
    )
    request = ProviderRequest(
        [ChatMessage("system", system), ChatMessage("user", item.question)],
        response_schema=function.parameters,
        max_tokens=256,
        temperature=0,
    )
    text, _ = await _text(provider, request)
    return function.name, _loads(parse_arguments(text))


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


# -- routers -------------------------------------------------------------------------------------


def embedder() -> Callable[[list[str]], np.ndarray] | None:
    """all-MiniLM-L6-v2 as the server embeds with it (``parley.knowledge.embeddings``)."""
    from parley.knowledge.embeddings import EmbeddingsUnavailable, load_embedder

    try:
        model = load_embedder("minilm")
    except EmbeddingsUnavailable:
        return None
    return None if model is None else model.embed


def hybrid(embed: Callable[[list[str]], np.ndarray]) -> HybridRouter:
    """The server's router (``parley.app``): keywords at the app's bar, or meaning."""
    router = HybridRouter(KeywordRouter(0.3))
    router.attach(embed)
    return router


#: Off-topic messages a shop assistant hears: no tool should run.
SHOP_NONE = [
    "hello",
    "thanks!",
    "Any plans for the weekend?",
    "What should I cook tonight?",
    "My name is Ana.",
    "I live in Porto.",
    "I work as a baker.",
    "what is the capital of France?",
]
#: Cart commands the dialogues do not have.
SHOP_MORE = [
    ("empty my cart please", "clear_cart"),
    ("what's in my cart?", "view_cart"),
    ("remove the mouse from my cart", "remove_from_cart"),
    ("recommend something similar", "get_recommendations"),
]


def shop_routing(router: Any) -> tuple[int, list[str]]:
    """The router on the shop's own messages (``bench.answers``' dialogues, cart commands, small
    talk), with the catalog's words taught as the server does (``parley.tools.shop.start``)."""
    import csv

    from bench._questions import DIALOGUES
    from parley.tools import shop
    from parley.tools.choice import stems

    action = {"search": "search_products", "details": "show_product_details", "add": "add_to_cart"}
    items = [(t.text, action[t.action]) for d in DIALOGUES for t in d]
    items += [(m, None) for m in SHOP_NONE] + SHOP_MORE
    with (ROOT / "parley" / "data" / "demo_catalog.csv").open() as f:
        rows = list(csv.DictReader(f))
    keyword = router.keyword if isinstance(router, HybridRouter) else router
    if isinstance(keyword, KeywordRouter):
        keyword = copy.deepcopy(keyword)
        keyword.add_vocabulary(
            "search_products", stems(" ".join([r["name"] for r in rows] + [r["category"] for r in rows]))
        )
        if isinstance(router, HybridRouter):
            router = copy.copy(router)
            router.keyword = keyword
        else:
            router = keyword
    wrong = []
    for text, gold in items:
        choice = choose(router, text, shop.TOOLS)
        if (choice.tool.name if choice else None) != gold:
            wrong.append(text)
    return len(items) - len(wrong), wrong


def tune(router: Any, items: list[Item]) -> float:
    """The threshold with the best balanced accuracy (call vs no call) on the even-numbered items."""
    train = [i for i in items if not i.held_out]
    scored = [(max(router.scores(i.question, i.functions)), i.expects_call) for i in train]  # type: ignore[arg-type]
    candidates = sorted({s for s, _ in scored})
    pos = [s for s, y in scored if y]
    neg = [s for s, y in scored if not y]

    def balanced(t: float) -> float:
        return (sum(s >= t for s in pos) / max(1, len(pos)) + sum(s < t for s in neg) / max(1, len(neg))) / 2

    return max(candidates, key=balanced)


def router_only(router: Any, items: list[Item]) -> dict[str, float]:
    """How often the router alone picks the right function (or none), per category, on odd items."""
    out: dict[str, list[bool]] = {}
    for item in items:
        if not item.held_out:
            continue
        choice = choose(router, item.question, item.functions)  # type: ignore[arg-type]
        if not item.expects_call:
            right = choice is None
        elif item.answer is None:  # relevance: a call is right, whichever
            right = choice is not None
        else:
            right = choice is not None and any(choice.tool.name in a for a in item.answer)
        out.setdefault(item.category, []).append(right)
    return {k: sum(v) / len(v) for k, v in out.items()}


# -- running -------------------------------------------------------------------------------------


@dataclass
class Tally:
    n: int = 0
    called: int = 0
    right_function: int = 0
    right_and_valid: int = 0
    value_match: int = 0
    no_call_right: int = 0
    seconds: float = 0.0

    def add(self, item: Item, name: str | None, arguments: Any, seconds: float) -> None:
        self.n += 1
        self.seconds += seconds
        self.called += name is not None
        if not item.expects_call:
            self.no_call_right += name is None
            return
        if name is None:
            return
        if item.answer is None:  # relevance: no possible answers, a call is what is asked
            self.right_function += 1
            return
        function = next((f for f in item.functions if f.name == name), None)
        if function is None or not any(name in a for a in item.answer):
            return
        self.right_function += 1
        if valid(arguments, function.parameters):
            self.right_and_valid += 1
            self.value_match += matches(name, arguments, item.answer)

    def row(self, category: str) -> str:
        pct = lambda k: f"{100 * k / max(1, self.n):5.1f}%"  # noqa: E731
        if category in NO_CALL:
            return f"no call (right) {pct(self.no_call_right)}"
        if category == "live_relevance":
            return f"called (right) {pct(self.called)}"
        return (
            f"right fn {pct(self.right_function)}  right fn + valid args {pct(self.right_and_valid)}  "
            f"values match {pct(self.value_match)}"
        )


def provider_for(spec: str) -> Provider:
    return Providers(Settings()).get(spec)


async def bench(routes: list[str], categories: Sequence[str], limit: int) -> None:
    items = {c: load(c) for c in categories}
    sample = {c: (v[:limit] if limit else v) for c, v in items.items()}
    everything = [i for v in items.values() for i in v]
    routers: dict[str, Any] = {"keyword": KeywordRouter()}
    embed = embedder()
    if embed is not None:
        routers["embedding"] = EmbeddingRouter(embed)
        routers["hybrid"] = hybrid(embed)
        routers["hybrid"].embedding = routers["embedding"]  # one cache; its bar as tuned below
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(
        f"items per category: { {c: len(v) for c, v in sample.items()} } (of { {c: len(v) for c, v in items.items()} })"
    )
    if "embedding" in routers:
        from parley.tools.choice import tool_document

        texts = [i.question for i in everything] + [tool_document(f) for i in everything for f in i.functions]  # type: ignore[arg-type]
        started = time.perf_counter()
        routers["embedding"].prime(texts)
        print(f"embedded {len(set(texts))} texts in {time.perf_counter() - started:.1f} s")
    for name, router in routers.items():
        if name == "hybrid":  # the server's: its parts' bars, the app's keyword one and the tuned one
            how = "parts' bars: keyword 0.3 (the app's), embedding as tuned"
        else:
            router.threshold = tune(router, everything)
            how = "tuned on even items"
        held_out = router_only(router, everything)
        print(
            f"router {name}: threshold {router.threshold:.3f} ({how}); router alone on odd items: "
            + ", ".join(f"{c} {100 * r:.1f}%" for c, r in held_out.items())
        )
    shops = {**routers, "keyword at the app's bar (0.3)": KeywordRouter(0.3)}
    for name, router in shops.items():
        right, wrong = shop_routing(router)
        print(
            f"router {name} on the shop's own messages: {right}/{right + len(wrong)} right; missed: {wrong[:6]}"
        )
    for spec in routes:
        provider = provider_for(spec)
        modes: list[tuple[str, Callable[[Item], Any]]] = []
        if provider.chooses_tools:
            modes.append(("native", lambda item, p=provider: model_chooses(p, item)))
        else:
            modes.append(("model chooses", lambda item, p=provider: model_chooses(p, item)))
            for name, router in routers.items():
                modes.append(
                    (
                        f"server chooses ({name})",
                        lambda item, p=provider, r=router: server_chooses(p, item, r),
                    )
                )
        for mode, run in modes:
            for category, batch in sample.items():
                tally = Tally()
                for item in batch:
                    started = time.perf_counter()
                    try:
                        name, arguments = await run(item)
                    except ProviderError as exc:
                        print(f"  {item.id}: {exc.message}")
                        name, arguments = None, None
                    tally.add(item, name, arguments, time.perf_counter() - started)
                print(
                    f"{spec:22} {mode:28} {category:14} n={tally.n:3}  {tally.row(category)}  "
                    f"({tally.seconds / max(1, tally.n):.2f} s/item)",
                    flush=True,
                )
        await provider.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--route", default="local:smollm2", help="comma-separated routes to compare")
    parser.add_argument("--categories", default="", help="comma-separated (default: every one in the folder)")
    parser.add_argument("--limit", type=int, default=100, help="items per category (0: all)")
    args = parser.parse_args()
    chosen = args.categories.split(",") if args.categories else categories()
    asyncio.run(bench(args.route.split(","), chosen, args.limit))


if __name__ == "__main__":
    main()
