"""Assistants: named profiles (instructions, model route, tools, knowledge, memory).

Built-ins are defined here; a TOML config file (``PARLEY_CONFIG_FILE``) may add or
override them under ``[assistants.NAME]``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class Assistant:
    name: str
    description: str
    instructions: str
    #: Route spec (``provider:model,...``); ``None`` uses ``PARLEY_MODEL``.
    model: str | None = None
    tools: list[str] = field(default_factory=list)
    knowledge_bases: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    #: Prompts the web page offers on an empty chat (three that work with the embedded model).
    examples: list[str] = field(default_factory=list)

    def sampling(self) -> dict[str, Any]:
        """``temperature`` and ``max_tokens`` from ``options``, for the provider request."""
        return {k: self.options[k] for k in ("temperature", "max_tokens") if self.options.get(k) is not None}


BUILTIN: dict[str, Assistant] = {
    "general": Assistant(
        name="general",
        description="A helpful general-purpose assistant.",
        # Chosen by ``bench.sampling --instructions``: not told its name, SmolLM2 answers more
        # short factual questions right (75 % against 61 % on the report set; docs/BENCHMARKS.md).
        instructions="You are a helpful assistant. Answer clearly and concisely.",
        # Said by the server, not the model, when a small model is asked who it is
        # (``parley.agent.prepare``): what it is good for, and that its facts need checking.
        options={
            "greeting": (
                "Hello! I'm Parley's general assistant. Ask me to explain something, suggest ideas "
                "or draft a short text. I run on a small model here, so check any facts I give you."
            )
        },
        examples=[
            "Write a haiku about the sea.",
            "Give me three ideas for a rainy Sunday.",
            "Explain what an API is in one sentence.",
        ],
    ),
    "shop": Assistant(
        name="shop",
        description="A shopping assistant: searches the catalog, shows products, manages your cart.",
        instructions=(
            "You are Parley's shopping assistant. Use the tools: search_products to find products, "
            "show_product_details for one product, get_recommendations for related products, and the "
            "cart tools to add, remove, view or clear. Only ever use product ids that a tool result has "
            "shown in this conversation; never guess one: search first. Do several steps when asked "
            "(e.g. add one product and search for another). Keep answers short; the products are shown "
            "to the user as cards."
        ),
        tools=[
            "search_products",
            "show_product_details",
            "get_recommendations",
            "add_to_cart",
            "remove_from_cart",
            "view_cart",
            "clear_cart",
        ],
        # Said by the server to small talk, and to a message nothing in the catalog answers when
        # a small model runs the tools (``parley.agent.server_chosen_tools``).
        options={
            "greeting": (
                "Hello! I'm Parley's shopping assistant. I search the catalog, show a product's "
                "details and similar ones, and keep your cart. What are you looking for?"
            )
        },
        examples=["Show me running shoes under $100", "What laptops do you have?", "What's in my cart?"],
    ),
    "support": Assistant(
        name="support",
        description="Answers questions about Parley from its FAQ, citing the entries it used.",
        instructions=(
            "You are Parley's support assistant. Answer from the numbered sources you are given, "
            "cite them like [1], and keep answers to two or three sentences. "
            "If the sources do not answer the question, say you don't know."
        ),
        knowledge_bases=["parley-faq"],
        examples=[
            "Which port does Parley listen on?",
            "What happens to a run if the server crashes?",
            "Which file formats can a knowledge base ingest?",
        ],
        options={
            "greeting": "Hello! I answer questions about Parley from its FAQ. What would you like to know?"
        },
    ),
    "recruiter": Assistant(
        name="recruiter",
        description="Finds candidates in a set of CVs and answers questions about them, with citations.",
        instructions=(
            "You are a recruiting assistant. Answer from the CV excerpts you are given, name the "
            "candidates, cite the excerpts like [1], and keep answers short. "
            "If the excerpts do not answer the question, say you don't know."
        ),
        knowledge_bases=["demo-cvs"],
        examples=[
            "Who knows Kubernetes?",
            "Which candidate is a registered nurse in Sweden?",
            "Who speaks German?",
        ],
        options={
            "top_k": 5,
            "greeting": "Hello! I search the CVs I was given: ask me who knows a skill, has worked "
            "somewhere, or what a candidate has done.",
        },
    ),
}


class UnknownAssistant(KeyError):
    pass


class Assistants:
    def __init__(self, assistants: dict[str, Assistant], default_model: str) -> None:
        self._assistants = assistants
        self.default_model = default_model

    @classmethod
    def load(cls, default_model: str, config_file: Path | None = None) -> Assistants:
        assistants = {name: _copy(a) for name, a in BUILTIN.items()}
        if config_file is not None:
            raw = tomllib.loads(config_file.read_text())
            allowed = {f.name for f in fields(Assistant)}
            for name, spec in raw.get("assistants", {}).items():
                unknown = set(spec) - allowed
                if unknown:
                    raise ValueError(f"{config_file}: assistant {name!r} has unknown keys {sorted(unknown)}")
                base = assistants.get(name)
                values = (
                    {f: getattr(base, f) for f in allowed}
                    if base
                    else {"description": "", "instructions": ""}
                )
                values.update(spec, name=name)
                assistants[name] = Assistant(**values)
        return cls(assistants, default_model)

    def get(self, name: str) -> Assistant:
        try:
            return self._assistants[name]
        except KeyError:
            raise UnknownAssistant(name) from None

    def route_of(self, assistant: Assistant) -> str:
        return assistant.model or self.default_model

    def add(self, assistant: Assistant) -> None:
        self._assistants[assistant.name] = assistant

    def all(self) -> list[Assistant]:
        return list(self._assistants.values())

    def __contains__(self, name: object) -> bool:
        return name in self._assistants


def _copy(assistant: Assistant) -> Assistant:
    return Assistant(**{f.name: getattr(assistant, f.name) for f in fields(Assistant)})
