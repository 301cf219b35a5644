"""Structured logs: JSON lines off a terminal, readable text on one (stderr either way)."""

from __future__ import annotations

import logging
import sys

import structlog

from gnosync.redact import redact_text


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Set up structlog once per process. ``fmt`` is ``json``, ``text`` or ``auto``.

    Libraries that log through the standard ``logging`` module (asyncpg, aiohttp) are
    rendered the same way, so a JSON log stream stays one JSON object per line even
    when a library logs a traceback. Every rendered line, gnosync's or a library's, is
    redacted last (:func:`gnosync.redact.redact_text`): no URL credential or password
    reaches the log, whatever message quoted it.
    """
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    json = fmt == "json"
    renderer = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    finish = [structlog.processors.format_exc_info, structlog.processors.EventRenamer("message")] if json else []
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, *finish, renderer, _redacted],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish, renderer, _redacted,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(threshold, logging.WARNING))


def _redacted(_logger: object, _name: str, line: str) -> str:
    """The rendered line without secrets (runs after the renderer)."""
    return redact_text(line)


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the moment of writing: a live progress bar swaps it
    for a proxy that keeps log lines above the bar."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
