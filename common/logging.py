"""structlog set-up shared by every daemon: JSON lines off a terminal, readable on one.

Rendered lines go to stderr and to any registered sinks (the model runner keeps its
own recent lines for `berth model logs`). Keys that may carry credentials are redacted
before rendering, so a token or secret never reaches a log line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

LineSink = Callable[[str], None]

REDACTED = "[redacted]"
SENSITIVE_KEYS = frozenset({"authorization", "token", "password", "secret", "api_key"})


class TeeLogger:
    """A structlog logger that writes each rendered line to a stream and to sinks."""

    def __init__(self, stream: TextIO, sinks: list[LineSink]) -> None:
        self._stream = stream
        self._sinks = sinks

    def msg(self, message: str) -> None:
        self._stream.write(message + "\n")
        self._stream.flush()
        for sink in self._sinks:
            sink(message)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


_rpc_logger: Any = None


def rpc_log(**fields: Any) -> None:
    """The one line per RPC. Its fields are fixed and never hold credentials, so it skips
    the processors other lines need (context merging, redaction, tracebacks): it is on
    every call's path."""
    if _rpc_logger is None:
        structlog.get_logger("berth.rpc").info("rpc", **fields)
    else:
        _rpc_logger.info("rpc", **fields)


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in SENSITIVE_KEYS.intersection(event):
        event[key] = REDACTED
    return event


def configure(
    *,
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    sinks: list[LineSink] | None = None,
) -> None:
    """Configure structlog once per process. fmt: json, console or auto (json off a tty)."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    global _rpc_logger
    _rpc_logger = structlog.wrap_logger(
        TeeLogger(out, list(sinks or [])),
        processors=[structlog.processors.add_log_level, timestamper, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=lambda *_: TeeLogger(out, list(sinks or [])),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=out)


def get_logger(**bound: Any) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(**bound)
