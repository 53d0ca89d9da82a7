"""What the HTTP-based providers share: status codes and ``Retry-After`` as ``ProviderError``s."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import httpx

from parley.config import Settings
from parley.providers.base import ProviderError, StreamTimeouts


def _httpx_errors(name: str) -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [getattr(httpx, name)]
    try:  # newer SDKs (anthropic 2.x, google-genai) moved to httpx's successor
        import httpx2

        errors.append(getattr(httpx2, name))
    except ImportError:
        pass
    return tuple(errors)


#: What a broken connection raises inside an SDK's stream.
TRANSPORT_ERRORS = _httpx_errors("HTTPError")
TIMEOUT_ERRORS = _httpx_errors("TimeoutException")

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})

_CODES = {
    400: "provider_rejected",
    401: "provider_auth",
    403: "provider_auth",
    404: "model_not_found",
    413: "context_length_exceeded",
    429: "rate_limited",
}


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in lowered:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        value = lowered.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def status_error(
    provider: str, status: int, detail: str, headers: Mapping[str, str] | None = None
) -> ProviderError:
    code = _CODES.get(status) or ("provider_unavailable" if status >= 500 else "provider_rejected")
    return ProviderError(
        f"{provider} answered {status}: {detail}".rstrip(": "),
        retryable=status in RETRYABLE_STATUSES,
        retry_after=retry_after(headers),
        status=status,
        code=code,
    )


def unreachable(provider: str, what: str) -> ProviderError:
    return ProviderError(f"{provider}: {what}", retryable=True, code="provider_unreachable")


def broken_stream(provider: str, what: str) -> ProviderError:
    return ProviderError(f"{provider}: {what}", retryable=True, code="provider_stream_broken")


def detail_of(body: object, fallback: str) -> str:
    """The human message inside a provider's JSON error body."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return fallback


def api_key(options: dict[str, str], default_env: str, *, required: bool, name: str) -> str:
    """The key from the environment variable named by ``?key_env=`` (or the SDK's usual one)."""
    env = options.get("key_env", default_env)
    key = os.environ.get(env)
    if key:
        return key
    if required:
        raise ProviderError(
            f"{name} needs an API key: set {env}, or name another variable with ?key_env=VAR",
            code="provider_unavailable",
        )
    return "unused"  # local servers (Ollama, vLLM, llama.cpp) accept any key


def timeouts_option(options: dict[str, str], settings: Settings) -> StreamTimeouts:
    """The route entry's ``connect_timeout=``, ``first_token_timeout=`` and ``timeout=`` (between
    tokens), each defaulting to its ``PARLEY_PROVIDER_*`` setting."""
    values = {}
    for option, key, default in (
        ("connect_timeout", "connect", settings.provider_connect_timeout_seconds),
        ("first_token_timeout", "first_token", settings.provider_first_token_timeout_seconds),
        ("timeout", "idle", settings.provider_timeout_seconds),
    ):
        raw = options.get(option)
        try:
            values[key] = float(raw) if raw is not None else default
        except ValueError:
            raise ProviderError(f"{option} must be a number of seconds, not {raw!r}") from None
        if values[key] <= 0:
            raise ProviderError(f"{option} must be a positive number of seconds, not {raw!r}")
    return StreamTimeouts(**values)


def sdk_timeout(timeouts: StreamTimeouts) -> httpx.Timeout:
    """The SDK's own limits: a backstop behind the route's first-token and idle timers."""
    return httpx.Timeout(max(timeouts.first_token, timeouts.idle) + 1.0, connect=timeouts.connect)
