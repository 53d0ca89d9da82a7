"""Token counting for the context builder.

Three sources, best first:

1. the provider's own tokenizer, when it overrides ``Provider.count_tokens`` (llama.cpp
   for local models);
2. the provider's reported prompt size (``Usage.input_tokens``): after each single-turn
   run, the ratio of reported to estimated tokens calibrates later estimates for that
   provider (a moving average, so one odd prompt does not swing it);
3. the documented estimate of ``Provider.count_tokens`` (~4 characters per token).

Chat templates add a few tokens per message (role markers, separators): counted as
``MESSAGE_OVERHEAD`` each, plus ``REPLY_OVERHEAD`` for the assistant turn being primed,
as in OpenAI's published counting recipe.
"""

from __future__ import annotations

from collections import OrderedDict

from parley.providers.base import ChatMessage, Provider

MESSAGE_OVERHEAD = 4
REPLY_OVERHEAD = 3

_CALIBRATION_WEIGHT = 0.3
_CALIBRATION_RANGE = (0.5, 4.0)
_CALIBRATION_MIN_TOKENS = 50


def has_tokenizer(provider: Provider) -> bool:
    """Whether ``provider`` counts with its model's tokenizer rather than the base estimate."""
    return type(provider).count_tokens is not Provider.count_tokens


class TokenCounter:
    """Counts tokens for one provider; message counts are cached by message id."""

    def __init__(self, provider: Provider, tokens: Tokens) -> None:
        self.provider = provider
        self.exact = has_tokenizer(provider)
        self._tokens = tokens
        self.ratio = 1.0 if self.exact else tokens.ratio(provider.name)

    def raw(self, text: str) -> int:
        """The provider's own count (its tokenizer, or the unscaled estimate)."""
        return self.provider.count_tokens(text) if text else 0

    def text(self, text: str) -> int:
        return self.scale(self.raw(text))

    def scale(self, raw: int) -> int:
        return raw if self.ratio == 1.0 else round(raw * self.ratio)

    def message_raw(self, message: ChatMessage, key: str | None = None) -> int:
        if key is not None:
            cached = self._tokens.cached(self.provider.name, key)
            if cached is not None:
                return cached
        count = MESSAGE_OVERHEAD + self.raw(message.content)
        for call in message.tool_calls:
            count += self.raw(call.name) + self.raw(call.arguments) + MESSAGE_OVERHEAD
        if key is not None:
            self._tokens.remember(self.provider.name, key, count)
        return count

    def message(self, message: ChatMessage, key: str | None = None) -> int:
        return self.scale(self.message_raw(message, key))


class Tokens:
    """Per-process token bookkeeping: the count cache and each provider's calibration."""

    #: Counts kept: the stored messages of a hundred or so conversations under way. An entry
    #: costs ~275 bytes, so 100,000 were 27 MB that a long soak saw the process grow by
    #: (docs/BENCHMARKS.md, "Soak"); a count not kept is counted again (tens of microseconds).
    MAX_CACHED = 10_000

    def __init__(self, max_cached: int = MAX_CACHED) -> None:
        self._cache: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._max_cached = max_cached
        self._ratios: dict[str, float] = {}

    def counter(self, provider: Provider) -> TokenCounter:
        return TokenCounter(provider, self)

    def ratio(self, provider_name: str) -> float:
        return self._ratios.get(provider_name, 1.0)

    def observe(self, provider: Provider, estimated_raw: int, reported: int) -> None:
        """Calibrate ``provider``'s estimate from a prompt it reported as ``reported`` tokens."""
        if has_tokenizer(provider) or estimated_raw < _CALIBRATION_MIN_TOKENS or reported <= 0:
            return
        low, high = _CALIBRATION_RANGE
        sample = min(high, max(low, reported / estimated_raw))
        previous = self._ratios.get(provider.name)
        self._ratios[provider.name] = (
            sample if previous is None else previous + _CALIBRATION_WEIGHT * (sample - previous)
        )

    def cached(self, provider_name: str, key: str) -> int | None:
        value = self._cache.get((provider_name, key))
        if value is not None:
            self._cache.move_to_end((provider_name, key))
        return value

    def remember(self, provider_name: str, key: str, count: int) -> None:
        self._cache[(provider_name, key)] = count
        if len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
