"""Structured logs: structlog on stderr, JSON lines, or readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from parley.redact import redact_pii


def wants_json(json_logs: bool | None, stream: TextIO | None = None) -> bool:
    """JSON when asked for, or, when nobody said, unless the logs go to a terminal."""
    if json_logs is not None:
        return json_logs
    stream = stream or sys.stderr
    return not (hasattr(stream, "isatty") and stream.isatty())


def configure(level: str = "INFO", json_logs: bool | None = True, file: TextIO | None = None) -> None:
    """Log JSON lines (or console lines) to ``file``, by default whatever ``sys.stderr`` is then;
    ``json_logs=None``: JSON unless that is a terminal."""
    as_json = wants_json(json_logs, file)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=(file or sys.stderr).isatty())
    )
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
    # The standard library's loggers (uvicorn, pypdf, asyncio, Python warnings) write the same
    # lines, tracebacks inside them: no line of the log is anything but JSON.
    handler = _Stderr(file)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_pii,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _Stderr):
            root.removeHandler(old)
    handler.setLevel(logging.getLevelName(level.upper()))  # libraries that set their own level too
    root.addHandler(handler)
    root.setLevel(logging.getLevelName(level.upper()))
    logging.captureWarnings(True)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to ``file``, or to whatever ``sys.stderr`` is at each record."""

    def __init__(self, file: TextIO | None) -> None:
        super().__init__(file or sys.stderr)
        self._file = file

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = self._file or sys.stderr
        super().emit(record)
