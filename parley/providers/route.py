"""A route: an ordered chain of providers with failover.

Before the first token a failing provider is simply replaced by the next one; after it,
the next provider is asked to continue the text already streamed (``request.prefix``),
so the client sees one coherent reply. Each switch is reported as a ``Fallback`` delta.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from parley.providers.base import Delta, Fallback, Provider, ProviderError, ProviderRequest, TextDelta


class AllProvidersFailed(ProviderError):
    pass


class Route:
    def __init__(self, providers: list[Provider]) -> None:
        if not providers:
            raise ValueError("a route needs at least one provider")
        self.providers = providers

    @property
    def name(self) -> str:
        return ",".join(p.name for p in self.providers)

    @property
    def primary(self) -> Provider:
        return self.providers[0]

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        produced = request.prefix
        errors: list[str] = []
        for index, provider in enumerate(self.providers):
            attempt = replace(request, prefix=produced) if produced else request
            try:
                async for delta in provider.stream(attempt):
                    if isinstance(delta, TextDelta):
                        produced += delta.text
                    yield delta
                return
            except ProviderError as exc:
                errors.append(f"{provider.name}: {exc.message}")
                if index + 1 < len(self.providers):
                    yield Fallback(provider.name, self.providers[index + 1].name, exc.message)
                    continue
                if len(self.providers) == 1:
                    raise
                raise AllProvidersFailed(
                    "every provider of the route failed: " + "; ".join(errors),
                    code="all_providers_failed",
                ) from exc
