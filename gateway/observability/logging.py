"""structlog set up once per process: JSON lines for machines, a console renderer on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import msgspec
import structlog

LogFormat = Literal["auto", "json", "console"]

_json_encoder = msgspec.json.Encoder()


def _serialize(event: dict[str, Any], **_: Any) -> bytes:
    return _json_encoder.encode(event)


def configure_logging(
    log_format: LogFormat = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    *,
    cache: bool = True,
) -> None:
    """Route structlog (and stdlib logging) to `stream` (stdout) in the chosen format.

    `cache` binds each logger once on first use (fast, for a server process); a short-lived
    command passes False so its configuration never outlives it in loggers already bound.
    """
    stream = stream or sys.stdout
    use_console = log_format == "console" or (log_format == "auto" and stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    level_number = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    if use_console:
        processors = [*shared, structlog.dev.ConsoleRenderer()]
        factory: Any = structlog.PrintLoggerFactory(stream)
    else:
        processors = [
            *shared,
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=_serialize),
        ]
        factory = structlog.BytesLoggerFactory(stream.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )
    logging.basicConfig(level=max(level_number, logging.WARNING), stream=sys.stderr, force=True)
