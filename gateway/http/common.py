"""Middlewares and helpers shared by the gateway's own routes.

- every request gets a request id (the caller's `X-Request-ID` when sane) and
  exactly one canonical log line: this middleware's `request`, or the line of
  an adapter that logs the request with its exchange's fields (it sets
  `request_logged_key`);
- errors on the gateway's routes are `application/problem+json` naming the
  field and the problem; adapters mounted under their own prefix answer in
  their own protocol, so their responses pass through untouched;
- nothing a caller sends produces a 5xx: unexpected errors are logged with
  the request id and answered 500 only for genuine faults of ours.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from bank_adapters.exchanges import request_logged_key
from gateway.service.errors import ServiceError

log = structlog.get_logger("kanal.http")

M = TypeVar("M", bound=BaseModel)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str, errors: list[dict] | None = None) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "errors": errors or []}
    return web.json_response(body, status=status, content_type=PROBLEM_JSON)


def problem_json(body: dict, status: int) -> web.Response:
    """A problem document with extra members (e.g. the rows report)."""
    return web.json_response(body, status=status, content_type=PROBLEM_JSON, dumps=lambda obj: json.dumps(obj, default=str))


def pydantic_errors(error: ValidationError) -> list[dict]:
    return [item for _, item in located_errors(error)]


def located_errors(error: ValidationError) -> list[tuple[tuple, dict]]:
    """Each model error as (loc, {field, problem}), in the model's order."""
    out = []
    for e in error.errors(include_url=False):
        field = ".".join(str(part) for part in e["loc"]) or "body"
        problem_text = e["msg"]
        if e["type"] == "extra_forbidden":
            problem_text = "unknown field; remove it"
        out.append((tuple(e["loc"]), {"field": field, "problem": problem_text}))
    return out


class Refused(list):
    """The model's errors as (loc, {field, problem}), in the model's order,
    with an index of where they are: whether a location has an error at,
    above or under it is a few set lookups, however many errors there are (a
    batch of 10,000 rows can have 10,000, and every value of every row is
    asked about)."""

    def __init__(self, errors: list[tuple[tuple, dict]] = ()) -> None:
        super().__init__(errors)
        self.at = {loc for loc, _ in self}
        self.above = {loc[:k] for loc, _ in self for k in range(len(loc) + 1)}  # each error's location and its parents

    def covers(self, loc: tuple) -> bool:
        """An error at `loc`, under it, or at one of its parents."""
        return loc in self.above or any(loc[:k] in self.at for k in range(len(loc)))


def model_or_errors(model: type[M], raw: Any) -> tuple[M | None, Refused]:
    """The model, or None and its errors with their locations, so a route can
    still run its own checks on the values the model did not refuse and
    report every problem of the request in one answer."""
    try:
        return model.model_validate(raw), Refused()
    except ValidationError as error:
        return None, Refused(located_errors(error))


_MISSING = object()
# What the wire models' str_strip_whitespace strips: Unicode's White_Space.
# Python's str.strip() also strips U+001C-U+001F, which the models keep.
_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def value_given(raw: Any, loc: tuple, refused: Refused) -> Any:
    """The raw value at `loc` if the model had no error at, above or under it
    (text stripped, as the wire models strip it); else None. None means: the
    model already reported this value, so checks that need it are skipped."""
    if refused.covers(loc):
        return None
    value = raw
    for part in loc:
        if isinstance(part, int) and isinstance(value, list) and 0 <= part < len(value):
            value = value[part]
        elif isinstance(part, str) and isinstance(value, dict):
            value = value.get(part, _MISSING)
        else:
            return None
        if value is _MISSING:
            return None
    return value.strip(_WHITE_SPACE) if isinstance(value, str) else value


def in_order(keyed: list[tuple[tuple, dict]]) -> list[dict]:
    """The errors sorted by their keys (field order); equal keys keep their order."""
    return [item for _, item in sorted(keyed, key=lambda pair: pair[0])]


def is_adapter_path(path: str, adapter_prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in adapter_prefixes)


# The status logged and counted for a request whose client went away before
# its answer was complete (a closed event stream, a dropped connection):
# nginx's 499, so that it is neither a success nor the server's 5xx.
CLIENT_CLOSED = 499


def make_middlewares(adapter_prefixes: tuple[str, ...]):
    @web.middleware
    async def request_context(request: web.Request, handler):
        incoming = request.headers.get("X-Request-ID", "")
        # 32 hex digits, as uuid4().hex, without a getrandom() system call per
        # request: an id to find a request's line, not a secret.
        request_id = incoming if _REQUEST_ID.match(incoming) else f"{random.getrandbits(128):032x}"
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        try:
            response = await _handle(request, handler, adapter_prefixes)
            status = response.status
            response.headers["X-Request-ID"] = request_id
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            status = CLIENT_CLOSED
            raise
        finally:
            if not request.get(request_logged_key, False):
                log.info(
                    "request",
                    method=request.method,
                    path=request.path,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    remote=request.remote,
                )

    return [request_context]


async def _handle(request: web.Request, handler, adapter_prefixes) -> web.StreamResponse:
    own = not is_adapter_path(request.path, adapter_prefixes)
    try:
        return await handler(request)
    except ServiceError as error:
        return problem(error.status, error.title, error.detail, error.errors)
    except ValidationError as error:
        errors = pydantic_errors(error)
        return problem(422, "Invalid request", "; ".join(f"{e['field']}: {e['problem']}" for e in errors), errors)
    except web.HTTPException as error:
        if not own or error.status < 400:
            raise
        detail = error.text or error.reason
        errors = None
        if error.status == 413:
            # aiohttp keeps the limit only in its text ("Maximum request body size N exceeded...").
            found = re.search(r"size (\d+) exceeded", error.text or "")
            detail = f"request body is larger than the limit of {int(found.group(1)):,} bytes" if found else "request body is too large"
            # The field is the body itself, as every 4xx names one.
            problem_text = f"larger than {int(found.group(1))} bytes" if found else "too large"
            errors = [{"field": "body", "problem": problem_text}]
        elif error.status == 405:
            detail = f"{request.method} is not allowed on {request.path}"
        elif error.status == 404:
            detail = f"no route {request.method} {request.path}; see /docs"
        return problem(error.status, error.reason, detail, errors)
    except ConnectionResetError:
        raise  # the client went away mid-answer (a closed event stream): nothing to answer, nothing broken
    except Exception:
        log.exception("unhandled_error", path=request.path)
        if not own:
            raise
        return problem(500, "Internal error", "an internal error occurred; quote the X-Request-ID header when reporting it")


async def read_body(request: web.Request, limit_bytes: int) -> bytes:
    if request.content_length is not None and request.content_length > limit_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=limit_bytes, actual_size=request.content_length)
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=limit_bytes, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


def require_content_type(request: web.Request, expected: str) -> None:
    if request.content_type != expected:
        raise ServiceError_unsupported(expected, request.content_type)


class UnsupportedMediaType(ServiceError):
    status = 415
    title = "Unsupported media type"


def ServiceError_unsupported(expected: str, got: str) -> UnsupportedMediaType:  # noqa: N802 - reads as a constructor
    return UnsupportedMediaType(
        f"Content-Type must be {expected}, got {got or 'none'}",
        [{"field": "Content-Type", "problem": f"expected {expected}"}],
    )


async def read_json(request: web.Request, limit_bytes: int) -> Any:
    require_content_type(request, "application/json")
    raw = await read_body(request, limit_bytes)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:  # RecursionError: nested too deep
        raise ServiceError(
            f"the body is not valid JSON: {error}", [{"field": "body", "problem": "malformed JSON"}]
        ) from None


def json_ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda obj: json.dumps(obj, default=str))
