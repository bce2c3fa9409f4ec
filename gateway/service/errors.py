"""Errors a use case raises for its caller; the HTTP layer renders them as
application/problem+json, other adapters in their own protocol."""

from __future__ import annotations


class ServiceError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str, errors: list[dict] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class Invalid(ServiceError):
    status = 422
    title = "Invalid request"

    @classmethod
    def field(cls, field: str, problem: str) -> Invalid:
        return cls(f"{field}: {problem}", [{"field": field, "problem": problem}])

    @classmethod
    def many(cls, errors: list[dict]) -> Invalid:
        """Every problem of a request at once, in the order given."""
        return cls("; ".join(f"{e['field']}: {e['problem']}" for e in errors), errors)


class NotFound(ServiceError):
    status = 404
    title = "Not found"


class Conflict(ServiceError):
    status = 409
    title = "Conflict"


class Forbidden(ServiceError):
    status = 403
    title = "Forbidden"
