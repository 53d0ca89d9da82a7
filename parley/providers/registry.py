"""Builds providers from route specs (``kind:model[?options]``) and caches them per app."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Iterable

import structlog

from parley.config import Settings
from parley.pricing import PriceTable
from parley.providers.base import Provider, ProviderError
from parley.providers.route import Health, RetryPolicy, Route
from parley.providers.scripted import ScriptedProvider

log = structlog.get_logger(__name__)

Factory = Callable[[str, Settings], Provider]

# kind -> (module, factory function, extra to install)
_LAZY: dict[str, tuple[str, str, str]] = {
    "local": ("parley.providers.local", "create", "local"),
    "openai": ("parley.providers.openai", "create", "openai"),
    "ollama": ("parley.providers.openai", "create_ollama", "openai"),
    "anthropic": ("parley.providers.anthropic", "create", "anthropic"),
    "gemini": ("parley.providers.gemini", "create", "gemini"),
}


class UnknownProvider(ValueError):
    pass


class Providers:
    def __init__(
        self,
        settings: Settings,
        overrides: dict[str, Provider] | None = None,
        *,
        prices: PriceTable | None = None,
    ) -> None:
        self._settings = settings
        self._cache: dict[str, Provider] = dict(overrides or {})
        self.prices = prices or PriceTable.load(settings.config_file)
        self.health = Health(
            RetryPolicy(
                attempts=settings.provider_attempts,
                backoff=settings.provider_backoff_seconds,
                backoff_max=settings.provider_backoff_max_seconds,
                retry_after_max=settings.provider_retry_after_max_seconds,
                cooldown_failures=settings.provider_cooldown_failures,
                cooldown=settings.provider_cooldown_seconds,
            )
        )

    def get(self, spec: str) -> Provider:
        spec = spec.strip()
        provider = self._cache.get(spec)
        if provider is None:
            provider = self._build(spec)
            self._cache[spec] = provider
        return provider

    def route(self, spec: str) -> Route:
        """A fallback chain from a comma-separated route spec."""
        return Route(
            [self.get(part) for part in spec.split(",") if part.strip()],
            health=self.health,
            prices=self.prices,
            fallback_message=self._settings.fallback_message,
        )

    async def prepare(self, routes: Iterable[str]) -> None:
        """Build the providers of ``routes`` ahead of the first run, off the event loop: importing
        an SDK takes long enough to stall every stream. A route that cannot be built is logged;
        its runs fail with the same message."""
        for spec in routes:
            try:
                await asyncio.to_thread(self.route, spec)
            except (UnknownProvider, ProviderError, ValueError) as exc:
                log.warning("route_unavailable", route=spec, error=str(exc))

    def register(self, spec: str, provider: Provider) -> None:
        self._cache[spec] = provider

    def _build(self, spec: str) -> Provider:
        kind, sep, rest = spec.partition(":")
        if not sep or not rest:
            raise UnknownProvider(f"model route entry {spec!r} must look like provider:model")
        if kind == "scripted":
            return ScriptedProvider.from_spec(rest)
        if kind not in _LAZY:
            known = ", ".join(["scripted", *_LAZY])
            raise UnknownProvider(f"unknown provider {kind!r} in {spec!r}; known: {known}")
        module_name, factory_name, extra = _LAZY[kind]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ProviderError(
                f"provider {kind!r} needs the [{extra}] extra: pip install 'parley[{extra}]' ({exc})",
                code="provider_unavailable",
            ) from exc
        factory: Factory = getattr(module, factory_name)
        return factory(rest, self._settings)

    async def aclose(self) -> None:
        for provider in self._cache.values():
            await provider.aclose()
