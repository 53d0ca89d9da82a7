"""Structured logs: structlog, JSON lines on stderr."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from parley.redact import redact_pii


def configure(level: str = "INFO", json_logs: bool = True, file: TextIO | None = None) -> None:
    """Log JSON lines (or console lines) to ``file``, by default whatever ``sys.stderr`` is then."""
    renderer: Any = structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_pii,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # Resolved per logger, so a replaced sys.stderr (tests, daemons) is honoured.
        logger_factory=lambda *_: structlog.PrintLogger(file or sys.stderr),
        cache_logger_on_first_use=False,
    )
