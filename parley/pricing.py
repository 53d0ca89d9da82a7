"""What tokens cost: a price table in USD per million tokens, keyed by route entry.

Keys name a provider and model as in a route (``openai:gpt-4o-mini``). A key matches that
entry, its dated versions and aliases (``-2024-07-18``, ``-20241022``, ``-001``, ``-latest``,
``-preview-05-20``) and the entry with route options (``openai:gpt-4o-mini?base_url=...``),
but not another model that shares its prefix (``gpt-4o`` is not ``gpt-4o-mini``); a key ending
in ``*`` matches every entry it prefixes (``local:*``). A model without a price costs
``None`` (unknown), never a made-up zero.

The shipped defaults are list prices for standard (non-batch, non-cached) usage and change
over time; override or add prices in the config file::

    [prices]
    "openai:gpt-4o-mini" = { input = 0.15, output = 0.60 }
    "openai:llama3.2" = { input = 0, output = 0 }   # self-hosted behind an OpenAI-compatible URL
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Price:
    input: float  # USD per million input tokens
    output: float  # USD per million output tokens

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


FREE = Price(0.0, 0.0)

_VERSION = re.compile(r"-(\d[\d-]*|latest|(preview|exp)[\w.-]*)")

DEFAULT_PRICES: dict[str, Price] = {
    # Runs on this machine, or replays a script.
    "local:*": FREE,
    "scripted:*": FREE,
    "ollama:*": FREE,
    # OpenAI
    "openai:gpt-5": Price(1.25, 10.00),
    "openai:gpt-5-mini": Price(0.25, 2.00),
    "openai:gpt-5-nano": Price(0.05, 0.40),
    "openai:gpt-4.1": Price(2.00, 8.00),
    "openai:gpt-4.1-mini": Price(0.40, 1.60),
    "openai:gpt-4.1-nano": Price(0.10, 0.40),
    "openai:gpt-4o": Price(2.50, 10.00),
    "openai:gpt-4o-mini": Price(0.15, 0.60),
    "openai:o3": Price(2.00, 8.00),
    "openai:o3-mini": Price(1.10, 4.40),
    "openai:o4-mini": Price(1.10, 4.40),
    "openai:gpt-3.5-turbo": Price(0.50, 1.50),
    # Anthropic
    "anthropic:claude-opus-4": Price(15.00, 75.00),
    "anthropic:claude-opus-4-1": Price(15.00, 75.00),
    "anthropic:claude-sonnet-4": Price(3.00, 15.00),
    "anthropic:claude-sonnet-4-5": Price(3.00, 15.00),
    "anthropic:claude-haiku-4-5": Price(1.00, 5.00),
    "anthropic:claude-3-7-sonnet": Price(3.00, 15.00),
    "anthropic:claude-3-5-sonnet": Price(3.00, 15.00),
    "anthropic:claude-3-5-haiku": Price(0.80, 4.00),
    "anthropic:claude-3-haiku": Price(0.25, 1.25),
    # Google
    "gemini:gemini-2.5-pro": Price(1.25, 10.00),
    "gemini:gemini-2.5-flash": Price(0.30, 2.50),
    "gemini:gemini-2.5-flash-lite": Price(0.10, 0.40),
    "gemini:gemini-2.0-flash": Price(0.10, 0.40),
    "gemini:gemini-2.0-flash-lite": Price(0.075, 0.30),
    "gemini:gemini-1.5-pro": Price(1.25, 5.00),
    "gemini:gemini-1.5-flash": Price(0.075, 0.30),
}


class PriceTable:
    def __init__(self, prices: Mapping[str, Price]) -> None:
        # Longest key first, so the most specific key wins.
        self._prices = dict(sorted(prices.items(), key=lambda item: -len(item[0])))

    @classmethod
    def load(cls, config_file: Path | None = None) -> PriceTable:
        """The shipped defaults, overridden by ``[prices]`` of the config file."""
        prices = dict(DEFAULT_PRICES)
        if config_file is not None:
            raw = tomllib.loads(config_file.read_text()).get("prices", {})
            if not isinstance(raw, dict):
                raise ValueError(f"{config_file}: [prices] must be a table")
            for key, value in raw.items():
                prices[key] = _price(config_file, key, value)
        return cls(prices)

    def price(self, entry: str) -> Price | None:
        name = entry.partition("?")[0]
        for key, price in self._prices.items():
            if key.endswith("*"):
                if name.startswith(key[:-1]):
                    return price
            elif name == key or (name.startswith(key) and _VERSION.fullmatch(name[len(key) :])):
                return price
        return None

    def cost(self, entry: str, input_tokens: int, output_tokens: int) -> float | None:
        price = self.price(entry)
        return None if price is None else price.cost(input_tokens, output_tokens)


def _price(config_file: Path, key: str, value: Any) -> Price:
    if not isinstance(value, dict) or set(value) - {"input", "output"} or not value:
        raise ValueError(
            f"{config_file}: price {key!r} must look like {{ input = 0.15, output = 0.60 }} (USD per 1M tokens)"
        )
    try:
        price = Price(float(value.get("input", 0.0)), float(value.get("output", 0.0)))
    except (TypeError, ValueError):
        raise ValueError(f"{config_file}: price {key!r} must use numbers") from None
    if price.input < 0 or price.output < 0:
        raise ValueError(f"{config_file}: price {key!r} must not be negative")
    return price
