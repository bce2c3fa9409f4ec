"""Wire models of the callback, fault and conformance API (`/api/v1`): what an
integrator sends, and the shape of every answer, so `/openapi.json` describes
these routes from the same models the code validates with.

Request models validate (the routes parse bodies with them). Response models
only describe: the routes build plain dicts (gateway/callbacks/store.py,
conformance.py) and the fuzz test checks each real answer against these
schemas. Names are fixed; add fields, never rename. Answers forbid unknown
members so a field added in code but not here fails that test.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from urllib.parse import urlsplit

import yarl
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from bank_adapters.snap.faults import InboundFaults
from gateway.callbacks.faults import OutboundFaults
from schemas.text import check_no_nul

EventType = Literal["bill.created", "payment.posted", "payment.reversed", "coverage.changed"]
EVENT_TYPES: tuple[str, ...] = ("bill.created", "payment.posted", "payment.reversed", "coverage.changed")
URL_CHARS_MAX = 2048
PARTNER_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,36}$"
# Allowed by the pattern, refused by the code: in a URL path "." and ".."
# mean "this folder" and "the folder above", so such a partner could never be
# addressed (/api/v1/partners/../conformance is /api/v1/conformance).
DOT_SEGMENT_PARTNER_IDS = frozenset({".", ".."})
# Documents what _check_url enforces: no whitespace, no control characters.
URL_PATTERN = r"^https?://[^\s\u0000-\u001f\u007f]+$"
# PostgreSQL text cannot hold NUL: refused with a 422 naming the field.
NO_NUL_PATTERN = r"^[^\u0000]*$"
DeliveryStatus = Literal["pending", "delivered", "failed", "gone", "dropped"]
Verdict = Literal["pass", "fail", "fault", "error"]


def _check_url(value: str) -> str:
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("must be an absolute http:// or https:// URL without spaces or control characters")
    parts = urlsplit(value)  # its ValueError (e.g. "Invalid IPv6 URL") is a validation error too
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL, e.g. https://example.com/kanal/webhooks")
    # What the delivery workers' client does with it, checked now: a port
    # that is not a number from 1 to 65535, or a host name that cannot be
    # looked up (an empty label, "a..b"; a label over 63 characters), made
    # every attempt fail without ever reaching a receiver.
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"the port must be a number from 1 to 65535, got {_shown(parts.netloc)}")
    try:
        url = yarl.URL(value)
        host = url.raw_host or ""
        if ":" not in host:  # an IPv6 address has no labels to check
            host.encode("idna")
    except (ValueError, UnicodeError) as error:  # UnicodeError is the idna codec's
        raise ValueError(f"the host name {_shown(parts.hostname)} cannot be looked up: {error}") from None
    return value


def _shown(text: str | None) -> str:
    text = text or ""
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _check_distinct(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError("each event type once")
    return sorted(value)


# ------------------------------------------------------------- requests --


class EndpointIn(BaseModel):
    """A new callback endpoint."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=8, max_length=URL_CHARS_MAX, json_schema_extra={"pattern": URL_PATTERN},
        description="absolute URL (scheme http or https) that receives the signed POSTs", examples=["https://example.com/kanal/hooks"],
    )
    event_types: list[EventType] = Field(min_length=1, max_length=4, json_schema_extra={"uniqueItems": True})
    description: str = Field(default="", max_length=200, json_schema_extra={"pattern": NO_NUL_PATTERN})
    npp: str | None = Field(
        default=None, pattern=r"^[A-Z0-9]{8}$",
        description="partner endpoints only: receive this employer's events only (an employer's endpoint gets its own anyway)",
    )

    _url = field_validator("url")(lambda value: _check_url(value))
    _types = field_validator("event_types")(lambda value: _check_distinct(value))
    _description = field_validator("description")(lambda value: check_no_nul(value))


class EndpointChange(BaseModel):
    """The members to change; those left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=8, max_length=URL_CHARS_MAX, json_schema_extra={"pattern": URL_PATTERN})
    event_types: list[EventType] | None = Field(default=None, min_length=1, max_length=4, json_schema_extra={"uniqueItems": True})
    description: str | None = Field(default=None, max_length=200, json_schema_extra={"pattern": NO_NUL_PATTERN})

    _url = field_validator("url")(lambda value: value if value is None else _check_url(value))
    _types = field_validator("event_types")(lambda value: value if value is None else _check_distinct(value))
    _description = field_validator("description")(lambda value: check_no_nul(value))


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class PartnerFaultsIn(BaseModel):
    """Either side may be left out (unchanged) or sent as {} (cleared)."""

    model_config = ConfigDict(extra="forbid")

    inbound: SkipJsonSchema[None] | InboundFaults = Field(default=None, json_schema_extra=_no_default)
    outbound: SkipJsonSchema[None] | OutboundFaults = Field(default=None, json_schema_extra=_no_default)


# ------------------------------------------------------------ responses --


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Owner(Out):
    kind: Literal["employer", "partner"]
    id: str


class EndpointOut(Out):
    id: str = Field(examples=["ep_5f0c3b1e9a7d4c2b8e6f1a0d2c4b6e8f"])
    owner: Owner
    npp: str | None = Field(description="the employer whose events it receives; null: every employer's (partners)")
    url: str
    event_types: list[EventType]
    description: str
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    disabled_at: dt.datetime | None
    faults: OutboundFaults = Field(description="the endpoint's own outbound fault profile; {} when it has none")
    previous_secret_valid_until: dt.datetime | None = Field(description="after a rotation, until when the old secret still signs")
    created_at: dt.datetime


class EndpointWithSecret(EndpointOut):
    secret: str = Field(description="whsec_...: shown at registration and rotation only", examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])


class EndpointList(Out):
    endpoints: list[EndpointOut]


class DeliveryOut(Out):
    id: int
    endpoint_id: str
    event_id: str = Field(description="the webhook-id: the same on every retry, replay and endpoint", examples=["evt_5f0c3b1e9a7d4c2b8e6f1a0d2c4b6e8f"])
    type: EventType
    npp: str | None
    status: DeliveryStatus
    sequence: int = Field(description="1, 2, 3... per endpoint, in the order deliveries were made")
    attempts: int
    replays: int
    faults: list[Literal["delayed", "duplicated", "out_of_order", "dropped"]]
    next_attempt_at: dt.datetime | None = Field(description="when pending: the next attempt")
    last_http_status: int | None
    last_error: str | None
    event_at: dt.datetime
    created_at: dt.datetime
    finished_at: dt.datetime | None


class AttemptOut(Out):
    attempt: int
    started_at: dt.datetime
    outcome: Literal["delivered", "retry", "gone", "exhausted", "dropped"]
    http_status: int | None
    latency_ms: int | None
    response_excerpt: str
    error: str | None
    fault: str | None
    worker: str


class DeliveryWithAttempts(DeliveryOut):
    attempt_log: list[AttemptOut]


class DeliveryPage(Out):
    deliveries: list[DeliveryOut] = Field(description="newest first")
    next: str | None = Field(description="the next page (older deliveries), or null on the last page")


class Replayed(Out):
    endpoint_id: str
    replayed: int = Field(description="failed, gone and dropped deliveries sent again")


class EndpointFaults(Out):
    endpoint_id: str
    outbound: OutboundFaults


class PartnerFaults(Out):
    partner_id: str
    inbound: InboundFaults = Field(description="failures of the partner's own requests to Kanal (SNAP, ISO 8583)")
    outbound: OutboundFaults = Field(description="failures of callbacks to the partner's endpoints that have no profile of their own")


class ExchangeRequest(Out):
    headers: dict[str, Any]
    body: str


class ExchangeResponse(Out):
    http_status: int | None = Field(description="SNAP: the HTTP status; null when unanswered, and on ISO 8583 exchanges")
    code: str | None = Field(description="SNAP responseCode, ISO 8583 DE39")
    body: dict[str, Any]
    answered: bool


class Exchange(Out):
    id: int
    at: dt.datetime
    channel: Literal["snap", "iso8583"] | None = Field(default=None, description="where the exchange happened")
    service: str = Field(description="SNAP: the service code (73, 24, 25, 26); ISO 8583: the message kind (inquiry, payment...)")
    service_name: str
    path: str = Field(description="SNAP: the request path; ISO 8583: the request MTI")
    external_id: str | None
    request: ExchangeRequest
    response: ExchangeResponse
    verdict: Verdict
    rule: str | None = Field(description="the protocol rule it broke (or the business or gateway reason)")
    rule_description: str | None
    detail: str | None = Field(default=None, description="what exactly broke the rule, e.g. which fields")
    fault: str | None = Field(description="the fault the integrator ordered that shaped this exchange")
    duration_ms: float


class VerdictCounts(Out):
    # "pass" is a keyword: the members are declared through aliases.
    pass_: int = Field(alias="pass")
    fail: int
    fault: int
    error: int


class FailedRule(Out):
    rule: str
    description: str | None
    count: int
    first_exchange_id: int


class Summary(Out):
    exchanges: int
    pass_: int = Field(alias="pass")
    fail: int
    fault: int
    error: int
    conformant: bool = Field(description="no exchange broke a protocol rule")
    failed_rules: list[FailedRule]
    by_service: dict[str, VerdictCounts]


class ExportLinks(Out):
    json_: str = Field(alias="json")
    html: str


class ConformancePage(Out):
    partner_id: str
    since: str = Field(description="the window's start as parsed, ISO 8601: without `since`, 24 hours before until (or now)")
    until: str | None
    summary: Summary
    exchanges: list[Exchange] = Field(description="newest first")
    next: str | None = Field(description="the next page (older exchanges), or null on the last page")
    export: ExportLinks


class ConformanceReport(Out):
    partner_id: str
    since: str | None = Field(description="the window's start as parsed, ISO 8601; null: from the beginning")
    until: str | None
    generated_at: dt.datetime
    summary: Summary = Field(description="over the whole window")
    exchanges: list[Exchange] = Field(description="oldest first")
    truncated: bool = Field(description="more exchanges in the window than listed")
