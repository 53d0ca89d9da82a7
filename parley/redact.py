"""Keeps secrets and personal data out of the logs: a structlog processor.

Redacted wherever they appear in an event (message, fields, nested values, tracebacks):
API keys (Parley's ``prl_...``, bearer tokens, common provider key formats), values of
fields named like credentials, email addresses, and phone numbers (``+`` and 8-15 digits,
or 9-15 digits written in groups, e.g. ``(555) 123-4567``, ``06 12 34 56 78``).
Plain numbers, dates, times, ids and IPv4 addresses are left alone.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

KEY = "[key]"
EMAIL = "[email]"
PHONE = "[phone]"
SECRET = "[redacted]"

_SECRET_FIELDS = re.compile(r"(^|[_-])(authorization|api[_-]?key|password|passwd|secret|token|cookie)$", re.I)
_KEYS = re.compile(
    r"\bBearer\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|\bprl_[A-Za-z0-9_-]{16,}"
    r"|\bsk-[A-Za-z0-9_-]{16,}"
    r"|\bAIza[0-9A-Za-z_-]{30,}"
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_PHONE = re.compile(
    r"(?<![\w+/.:-])"
    r"(?:\+\d[\d\s().-]{6,20}\d"
    r"|\(\d{1,4}\)[\s.-]?\d{2,4}(?:[\s.-]\d{2,4}){1,4}"
    r"|\d{2,4}(?:[\s.-]\d{2,4}){2,5})"
    r"(?![\w/:-]|\.\d)"
)
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def _phone(match: re.Match[str]) -> str:
    candidate = match.group(0)
    digits = sum(ch.isdigit() for ch in candidate)
    international = candidate.startswith("+")
    if _IPV4.fullmatch(candidate) or not (8 if international else 9) <= digits <= 15:
        return candidate
    return PHONE


def redact_text(text: str) -> str:
    text = _KEYS.sub(KEY, text)
    text = _EMAIL.sub(EMAIL, text)
    return _PHONE.sub(_phone, text)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: SECRET if _SECRET_FIELDS.search(str(k)) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v) for v in value)
    return value


def redact_pii(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: put it after ``format_exc_info`` and before the renderer."""
    for name, value in list(event.items()):
        event[name] = SECRET if _SECRET_FIELDS.search(name) and value is not None else _redact(value)
    return event
