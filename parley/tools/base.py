"""Tools: typed Python functions the model may call.

A tool is an (async) function with a docstring. Its first parameter may be a
``ToolContext``; every other parameter is an argument the model fills. The JSON schema
comes from the annotations (pydantic), arguments are validated before the function
runs, and an argument annotated with ``Ref(kind)`` must name an object the
conversation has already seen (see ``parley.tools.provenance``).

Expected failures are raised as ``ToolError``: their message goes back to the model
as the tool's result, so it can correct itself.

Every result also carries a ``summary``: a few plain sentences a person can read (counts,
prices, what changed), written by the tool from its own result. It is the reply after
tools for a model too small to write one, and never JSON (``generic_summary`` covers a
tool that writes none).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, get_args, get_origin, overload

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from parley.providers.base import ToolSpec
from parley.store.db import Database

if TYPE_CHECKING:
    from parley.tools.choice import Router

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Ref:
    """Annotation metadata: this argument names an object of ``kind`` (e.g. ``"product"``)."""

    kind: str


class ToolError(Exception):
    """A failure the model should hear about (out of stock, not found, ...)."""

    def __init__(
        self, message: str, *, code: str = "tool_error", details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details or {}


@dataclass(slots=True)
class ToolResult:
    """What a tool returns: ``output`` for the model, ``ui`` for a card, ``refs`` it has shown,
    and a ``summary`` for a person (plain sentences, never JSON)."""

    output: Any
    ui: dict[str, Any] | None = None
    #: kind -> {id: label}: the objects this result showed, which later calls may name.
    refs: dict[str, dict[str, str]] = field(default_factory=dict)
    summary: str = ""
    #: kind -> id: the one object this result is about (a product shown in detail, or just added),
    #: which "it" then means (``parley.answers.references``).
    focus: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ToolContext:
    """What a tool may use besides its arguments: the database, the thread, shared services."""

    db: Database
    thread_id: str
    user_id: int
    run_id: str | None = None
    services: Mapping[type, object] = field(default_factory=dict)

    def service(self, kind: type[T]) -> T:
        value = self.services.get(kind)
        if not isinstance(value, kind):
            raise RuntimeError(f"service {kind.__name__} is not available to tools")
        return value


ToolFunction = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Within:
    """The only things a tool's reference can mean (``Tool.within``)."""

    #: The things there now: (id, name, price) in their order.
    things: Callable[[ToolContext], Awaitable[list[tuple[str, str, float | None]]]]
    #: Where that is, as a sentence ends: "in your cart".
    where: str


@dataclass(slots=True)
class Tool:
    name: str
    description: str
    fn: ToolFunction
    arguments: type[BaseModel]
    #: argument name -> reference kind
    references: dict[str, str]
    #: Words a user might say when they want this tool (helps server-side tool choice).
    keywords: tuple[str, ...] = ()
    wants_context: bool = True
    #: What the tool does, to end "I couldn't ..." when it fails ("add that to your cart").
    action: str = ""
    #: Arguments the tool reads from the user's words itself (no model needed), for a small model.
    derive: Callable[[str], dict[str, Any]] | None = None
    #: The kind of object this tool searches for by name ("product"): the server runs it when a
    #: user names something the conversation has not shown ("add the Glide Wireless Mouse").
    finds: str | None = None
    #: The kind of object this tool shows one of in detail ("product"): the server runs it for a
    #: question that points at something shown and asks for no action ("which one is cheaper?").
    describes: str | None = None
    #: Where the thing a reference of this tool names must be (``remove_from_cart``: the cart),
    #: as the things there (id, name, price) and how to say it ("in your cart"): "remove the
    #: shoes" means the shoes in the cart, however many other shoes were shown.
    within: Within | None = None

    @property
    def doing(self) -> str:
        return self.action or f"run {self.name.replace('_', ' ')}"

    def schema(self) -> dict[str, Any]:
        return clean_schema(self.arguments.model_json_schema())

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.schema())

    def parse(self, arguments: str | Mapping[str, Any]) -> BaseModel:
        """Validated arguments; raises ``ValueError`` with a message meant for the model."""
        if isinstance(arguments, str):
            try:
                data = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"arguments are not valid JSON: {exc.msg} at position {exc.pos}") from None
        else:
            data = dict(arguments)
        if not isinstance(data, dict):
            raise ValueError("arguments must be a JSON object")
        try:
            return self.arguments.model_validate(data)
        except ValidationError as exc:
            raise ValueError(describe_validation(exc)) from None

    async def run(self, ctx: ToolContext, args: BaseModel) -> ToolResult:
        values = {name: getattr(args, name) for name in type(args).model_fields}
        call_args = (ctx,) if self.wants_context else ()
        if inspect.iscoroutinefunction(self.fn):
            result = await self.fn(*call_args, **values)
        else:
            result = await asyncio.to_thread(self.fn, *call_args, **values)
        if not isinstance(result, ToolResult):
            result = ToolResult(result)
        if not result.summary:
            result.summary = generic_summary(self, result.output)
        return result


def generic_summary(tool: Tool, output: Any) -> str:
    """A plain sentence for a tool that writes no summary: its text output, or what it did."""
    from parley.answers.check import has_json

    if isinstance(output, str) and output.strip() and not has_json(output) and "{" not in output:
        text = " ".join(output.split())
        return text if len(text) <= 300 else text[:299].rstrip() + "…"
    done = tool.name.replace("_", " ").replace(".", " ").capitalize()
    if isinstance(output, dict):
        scalars = [
            f"{key.replace('_', ' ')}: {value}"
            for key, value in output.items()
            if isinstance(value, str | int | float) and not isinstance(value, bool) and len(str(value)) <= 80
        ][:4]
        if scalars:
            return f"{done} finished ({'; '.join(scalars)})."
    return f"{done} finished."


@overload
def tool(fn: ToolFunction, /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    keywords: Iterable[str] = (),
    action: str = "",
    derive: Callable[[str], dict[str, Any]] | None = None,
    finds: str | None = None,
    describes: str | None = None,
    within: Within | None = None,
) -> Callable[[ToolFunction], Tool]: ...


def tool(
    fn: ToolFunction | None = None,
    /,
    *,
    name: str | None = None,
    keywords: Iterable[str] = (),
    action: str = "",
    derive: Callable[[str], dict[str, Any]] | None = None,
    finds: str | None = None,
    describes: str | None = None,
    within: Within | None = None,
) -> Tool | Callable[[ToolFunction], Tool]:
    """Make a ``Tool`` of a function: ``@tool`` or ``@tool(keywords=[...], action="...")``."""

    def wrap(function: ToolFunction) -> Tool:
        made = make_tool(function, name=name, keywords=tuple(keywords))
        made.action = action
        made.derive = derive
        made.finds = finds
        made.describes = describes
        made.within = within
        return made

    return wrap(fn) if fn is not None else wrap


def make_tool(fn: ToolFunction, *, name: str | None = None, keywords: tuple[str, ...] = ()) -> Tool:
    doc = inspect.getdoc(fn)
    if not doc:
        raise TypeError(f"tool {fn.__name__} needs a docstring: it is the description the model reads")
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    references: dict[str, str] = {}
    wants_context = False
    for index, (param_name, param) in enumerate(inspect.signature(fn).parameters.items()):
        annotation = hints.get(param_name, Any)
        if index == 0 and annotation is ToolContext:
            wants_context = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {fn.__name__}: *args/**kwargs cannot be described to a model")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param_name] = (annotation, default)
        kind = find_ref(annotation)
        if kind is not None:
            references[param_name] = kind
    tool_name = name or fn.__name__
    model = create_model(
        f"{tool_name}_arguments",
        __config__=ConfigDict(extra="forbid", coerce_numbers_to_str=True),
        **fields,
    )
    return Tool(
        name=tool_name,
        description=doc,
        fn=fn,
        arguments=model,
        references=references,
        keywords=keywords,
        wants_context=wants_context,
    )


def find_ref(annotation: Any) -> str | None:
    """The reference kind inside an annotation (``Annotated[str, Ref(...)]``, lists and optionals of it)."""
    if get_origin(annotation) is typing.Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, Ref):
                return meta.kind
        return find_ref(get_args(annotation)[0])
    if get_origin(annotation) in (list, tuple, set, typing.Union, types.UnionType):
        for arg in get_args(annotation):
            kind = find_ref(arg)
            if kind is not None:
                return kind
    return None


def ref_values(value: Any) -> list[str]:
    """The ids an argument value names (a single id, or a list of them)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple | set):
        return [v for v in value if isinstance(v, str)]
    return [str(value)]


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A model-friendly JSON schema: ``$defs`` inlined, titles dropped."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = defs[node["$ref"].rsplit("/", 1)[-1]]
                return walk({**target, **{k: v for k, v in node.items() if k != "$ref"}})
            return {k: walk(v) for k, v in node.items() if k not in ("title", "$defs")}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    cleaned: dict[str, Any] = walk(schema)
    cleaned.setdefault("properties", {})
    return cleaned


def describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:6]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown argument")
        else:
            parts.append(f"{where}: {err['msg']}")
    return "invalid arguments: " + "; ".join(parts)


class Tools:
    """Every tool this server knows, the services they use, and the limits of a run."""

    def __init__(
        self,
        tools: Iterable[Tool] = (),
        *,
        services: Iterable[object] = (),
        max_steps: int = 8,
        timeout: float = 30.0,
        ref_window: int = 20,
        ref_max_age: float | None = None,
        router: Router | None = None,
    ) -> None:
        from parley.tools.choice import KeywordRouter

        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.add(item)
        self.services: dict[type, object] = {type(s): s for s in services}
        self.max_steps = max_steps
        self.timeout = timeout
        self.ref_window = ref_window
        self.ref_max_age = ref_max_age
        #: Picks tools for models that cannot (``Provider.chooses_tools = False``).
        self.router: Router = router or KeywordRouter()

    def add(self, item: Tool) -> None:
        if item.name in self._tools:
            raise ValueError(f"tool {item.name!r} is defined twice")
        self._tools[item.name] = item

    def add_service(self, service: object) -> None:
        self.services[type(service)] = service

    def get(self, name: str) -> Tool:
        return self._tools[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return list(self._tools)

    def select(self, names: Iterable[str]) -> list[Tool]:
        """The tools of an assistant; unknown names are a configuration error."""
        chosen = []
        for name in names:
            if name not in self._tools:
                raise KeyError(f"unknown tool {name!r}; known: {', '.join(sorted(self._tools))}")
            chosen.append(self._tools[name])
        return chosen

    def context(
        self, db: Database, *, thread_id: str, user_id: int, run_id: str | None = None
    ) -> ToolContext:
        return ToolContext(db, thread_id, user_id, run_id, self.services)
