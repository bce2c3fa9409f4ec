"""The SNAP BI biller endpoints: authenticate, validate, call the payments port,
answer in SNAP's codes, and record the exchange.

Every refusal names the rule that failed (`additionalInfo.rule`) and, in
sandbox mode, a signature refusal also shows the string-to-sign the gateway
computed and the body hash, never a secret. Nothing a bank sends can produce a
5xx: only our own failure (500xx00) or a slow ledger (504xx00) does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import pydantic_core
import structlog
from aiohttp import web
from pydantic import ValidationError

from bank_adapters.base import (
    AdapterContext,
    InquiryOutcome,
    InquiryResult,
    PayCommand,
    PayOutcome,
    PayResult,
    StatusOutcome,
)
from bank_adapters.exchanges import ExchangeLog, request_logged_key
from bank_adapters.snap import faults, partners, protocol, store
from bank_adapters.snap.protocol import Case
from bank_adapters.snap.ratelimit import RateLimiter
from schemas.snap import InquiryRequest, PaymentRequest, StatusRequest, TokenRequest, first_problem

log = structlog.get_logger("kanal.snap")

CHANNEL_PREFIX = "snap"
M = TypeVar("M")


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """The adapter's settings (`KANAL_ADAPTERS__SNAP__<KEY>`), with units in the names."""

    token_ttl_s: int = 900
    requests_per_second_max: int = 1000  # per partner, per gateway process
    payments_timeout_ms: int = 10_000
    body_bytes_max: int = 65_536
    partner_cache_ttl_s: float = 5.0
    timestamp_tolerance_s: int | None = None  # default for new partners; None: the profile's
    magic_latency_ms: int = 3_000  # added by the magic value 11 (see faults.py)
    fault_hold_ms: int = 30_000  # an unanswered connection (lost response, timeout) is held this long

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        known = {field.name: field for field in dataclasses.fields(cls)}
        parsed: dict[str, Any] = {}
        for key, value in values.items():
            name = key.lower()
            if name not in known:
                raise ValueError(f"unknown SNAP adapter setting {key!r}; known: {', '.join(sorted(known))}")
            kind = float if name == "partner_cache_ttl_s" else int
            parsed[name] = None if value in (None, "") else kind(value)
        return cls(**parsed)


class InjectedFault(Exception):
    """A fault ordered before anything is committed (faults.py)."""

    def __init__(self, fault: faults.Fault) -> None:
        super().__init__(str(fault))
        self.fault = fault


class Refusal(Exception):
    """A request refused with a SNAP case; `rule` names the check that failed."""

    def __init__(self, case: Case, rule: str, detail: str = "", extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.case = case
        self.rule = rule
        self.detail = detail
        self.extra = dict(extra or {})


def field_refusal(case: Case, field: str, reason: str, rule: str) -> Refusal:
    return Refusal(case, rule, field, {"field": field, "reason": reason})


TRANSACTION_HEADERS = ("X-TIMESTAMP", "X-SIGNATURE", "X-PARTNER-ID", "X-EXTERNAL-ID", "CHANNEL-ID", "Authorization")
TOKEN_HEADERS = ("X-TIMESTAMP", "X-CLIENT-KEY", "X-SIGNATURE")
# Headers kept in the exchange log; Authorization is reduced to a prefix.
LOGGED_HEADERS = TRANSACTION_HEADERS + ("X-CLIENT-KEY", "ORIGIN", "Content-Type")
_EXTERNAL_ID = re.compile(r"[0-9]{1,36}")
_CHANNEL_ID = re.compile(r"[0-9A-Za-z]{1,5}")
# The scheme is case-insensitive (RFC 9110 11.1: "bearer" is "Bearer"); the token is not.
_BEARER = re.compile(r"(?i:Bearer) ([A-Za-z0-9._~+/=-]{1,512})")
# What a registered partner id or client key can be (partners.py, migrations/0001_partners.sql):
# a refused request naming anything else names no partner.
_PARTNER_ID = re.compile(r"[A-Za-z0-9_.-]{1,36}")
CLIENT_KEY_CHARS_MAX = 128

SUCCESS_REASON = {"english": "Success", "indonesia": "Sukses"}


class SnapServer:
    """The sub-application mounted at /snap."""

    def __init__(self, context: AdapterContext) -> None:
        self.context = context
        self.pool = context.pool
        self.payments = context.payments
        self.settings = Settings.from_mapping(context.settings)
        self.limiter = RateLimiter()
        self.exchange_log = ExchangeLog(self.pool)
        self.authorizer = store.Authorizer(self.pool)
        # Told every answered responseCode (metrics); lent by the gateway.
        self._observe_response = context.extras.get("observe_response") or (lambda _adapter, _code: None)
        self._partners: dict[str, tuple[float, store.Partner]] = {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.body_bytes_max)
        app.router.add_post("/v1.0/access-token/b2b", self.access_token)
        app.router.add_post("/v1.0/transfer-va/inquiry", self.inquiry)
        app.router.add_post("/v1.0/transfer-va/payment", self.payment)
        app.router.add_post("/v1.0/transfer-va/status", self.status)
        app.router.add_post("/admin/partners", self.admin_add_partner)
        app.router.add_get("/admin/partners", self.admin_list_partners)
        return app

    # --- the exchange frame: read, decide, answer, record ------------------

    async def _exchange(
        self,
        request: web.Request,
        service: str,
        decide: Callable[[web.Request, str, store.Exchange], Awaitable[tuple[Case, dict[str, Any]]]],
    ) -> web.Response:
        started = time.perf_counter()
        exchange = store.Exchange(
            service_code=service,
            path=request.path_qs,
            request_headers=_logged_headers(request.headers),
            request_body="",
            external_id=request.headers.get("X-EXTERNAL-ID"),
        )
        unanswered = False
        try:
            body_text = await _read_body(request, self.settings.body_bytes_max)
            exchange.request_body = body_text
            case, payload = await decide(request, body_text, exchange)
        except InjectedFault as injected:
            if injected.fault is faults.Fault.SERVER_ERROR:
                case, payload = protocol.GENERAL_ERROR, {"additionalInfo": {"fault": str(injected.fault)}}
            elif injected.fault is faults.Fault.TOO_MANY_REQUESTS:
                case, payload = protocol.TOO_MANY_REQUESTS, {"additionalInfo": {"fault": str(injected.fault)}}
            else:
                case, payload, unanswered = protocol.TIMEOUT, {}, True
        except Refusal as refusal:
            case, payload = refusal.case, self._refusal_payload(refusal)
            exchange.rule = refusal.rule
            if exchange.partner_id is None:
                exchange.partner_id = await self._claimed_partner_id(request, service, refusal.rule)
        except Exception:  # our failure, never the bank's input: 500xx00
            log.exception("snap.general_error", service=service, path=request.path)
            case, payload = protocol.GENERAL_ERROR, {"additionalInfo": {"rule": "internal"}}
            exchange.rule = "internal"
        plan: faults.Plan | None = exchange.plan
        if plan is not None:
            exchange.fault = plan.label
            if plan.latency_ms:
                await asyncio.sleep(plan.latency_ms / 1000)
            unanswered = unanswered or plan.lost_response
        code = case.code(service)
        self._observe_response("snap", code)
        body = {"responseCode": code, "responseMessage": payload.pop("responseMessage", case.message), **payload}
        # pydantic-core's encoder: compact, at a seventh of the CPU of the
        # standard library's json.dumps(separators=(",", ":")). One difference
        # on the wire since session 3: non-ASCII text (a payer's name with
        # accents) is sent as UTF-8, not as \uXXXX escapes; the same JSON,
        # and X-SIGNATURE covers the bytes sent (docs/snap.md).
        body_bytes = pydantic_core.to_json(body)
        body_text = body_bytes.decode("utf-8")
        exchange.http_status = 0 if unanswered else case.http_status
        exchange.response_code = "" if unanswered else code
        exchange.response_body = "{}" if unanswered else body_text
        exchange.duration_ms = (time.perf_counter() - started) * 1000
        try:
            await self.exchange_log.record(store.exchange_row(exchange), after_durable_write=exchange.posted)
        except Exception:  # the log must not cost the bank its answer
            log.exception("snap.exchange_not_recorded", service=service)
        # The request's one log line (the gateway's middleware writes none).
        request[request_logged_key] = True
        log.info(
            "snap.exchange",
            method=request.method,
            path=request.path,
            status=exchange.http_status,
            remote=request.remote,
            service=service,
            partner=exchange.partner_id,
            external_id=exchange.external_id,
            response_code=exchange.response_code,
            rule=exchange.rule,
            fault=exchange.fault,
            duration_ms=round(exchange.duration_ms, 2),
        )
        if unanswered:
            # The bank sees no answer: hold the connection, then drop it.
            assert plan is not None
            await asyncio.sleep(plan.hold_ms / 1000)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=204)
        timestamp = protocol.format_timestamp()
        headers = {"X-TIMESTAMP": timestamp}
        if exchange.signing is not None:
            # The encoder writes no whitespace outside strings: the text is
            # its own minified form, hashed as is.
            headers["X-SIGNATURE"] = response_signature(
                exchange.signing, request.method, request.path_qs, hashlib.sha256(body_bytes).hexdigest(), timestamp,
                wrong=plan is not None and plan.wrong_signature,
            )
        return web.Response(body=body_bytes, status=case.http_status, content_type="application/json", headers=headers)

    async def _claimed_partner_id(self, request: web.Request, service: str, rule: str) -> str | None:
        """The registered partner a refused request names, for its exchange row.

        A refusal decided before the partner was looked up (body size or
        encoding, a missing or malformed header, the token's format) is
        still the named partner's exchange: credited on the request's claim,
        before authentication, as a bad signature or CHANNEL-ID is. Services
        24 to 26 name it by X-PARTNER-ID (the cached lookup), service 73 by
        X-CLIENT-KEY. Only this refusal path reads it; a name no partner has
        leaves the row unattributed."""
        if rule in ("partner-id", "client-key"):  # just looked up: no partner has that name
            return None
        try:
            if service == protocol.SERVICE_TOKEN:
                client_key = request.headers.get("X-CLIENT-KEY", "")
                if not 1 <= len(client_key) <= CLIENT_KEY_CHARS_MAX or not client_key.isprintable():
                    return None
                partner = await store.partner_by_client_key(self.pool, client_key)
            else:
                partner_id = request.headers.get("X-PARTNER-ID", "")
                if not _PARTNER_ID.fullmatch(partner_id):
                    return None
                partner = await self._partner(partner_id)
        except Exception:  # the log must not cost the bank its answer
            log.exception("snap.refusal_partner_not_read", service=service)
            return None
        return None if partner is None else partner.partner_id

    def _refusal_payload(self, refusal: Refusal) -> dict[str, Any]:
        return {
            "responseMessage": protocol.response_message(refusal.case, refusal.detail),
            "additionalInfo": {"rule": refusal.rule, **refusal.extra},
        }

    # --- service 73: access token -------------------------------------------

    async def access_token(self, request: web.Request) -> web.Response:
        return await self._exchange(request, protocol.SERVICE_TOKEN, self._decide_token)

    async def _decide_token(self, request: web.Request, body_text: str, exchange: store.Exchange) -> tuple[Case, dict[str, Any]]:
        headers = request.headers
        for name in TOKEN_HEADERS:
            if not headers.get(name):
                raise field_refusal(protocol.INVALID_MANDATORY_FIELD, name, "header is missing or empty", "header-mandatory")
        timestamp_text = headers["X-TIMESTAMP"]
        timestamp = _parse_timestamp_header(timestamp_text)
        client_key = headers["X-CLIENT-KEY"]
        partner = await store.partner_by_client_key(self.pool, client_key)
        if partner is None:
            raise Refusal(
                protocol.UNAUTHORIZED, "client-key", "Unknown client",
                {"field": "X-CLIENT-KEY", "reason": f"no partner has client key {client_key!r}"},
            )
        exchange.partner_id = partner.partner_id
        self._check_rate(partner)
        self._check_timestamp_window(partner, _skew_s(timestamp))
        public_key = protocol.load_public_key(partner.public_key_pem)
        if not protocol.verify_token_request(public_key, client_key, timestamp_text, headers["X-SIGNATURE"]):
            extra: dict[str, Any] = {
                "reason": "X-SIGNATURE is not base64(SHA256withRSA(private key, clientKey|X-TIMESTAMP)) for the registered public key"
            }
            if self._sandbox(partner):
                extra["stringToSign"] = protocol.token_string_to_sign(client_key, timestamp_text)
            raise Refusal(protocol.UNAUTHORIZED, "signature", "Signature", extra)
        _validate(TokenRequest, body_text)
        token = await store.issue_token(self.pool, partner.partner_id, self.settings.token_ttl_s)
        return protocol.SUCCESS, {
            "accessToken": token,
            "tokenType": "Bearer",
            "expiresIn": str(self.settings.token_ttl_s),
        }

    # --- services 24, 25, 26: the signed transaction frame -----------------

    async def _authenticate(self, request: web.Request, body_text: str, exchange: store.Exchange) -> store.Partner:
        headers = request.headers
        for name in TRANSACTION_HEADERS:
            if not headers.get(name):
                raise field_refusal(protocol.INVALID_MANDATORY_FIELD, name, "header is missing or empty", "header-mandatory")
        timestamp_text = headers["X-TIMESTAMP"]
        timestamp = _parse_timestamp_header(timestamp_text)
        external_id = headers["X-EXTERNAL-ID"]
        if not _EXTERNAL_ID.fullmatch(external_id):
            raise field_refusal(protocol.INVALID_FIELD_FORMAT, "X-EXTERNAL-ID", "must be 1 to 36 digits", "header-format")
        partner_id = headers["X-PARTNER-ID"]
        if len(partner_id) > 36:
            raise field_refusal(protocol.INVALID_FIELD_FORMAT, "X-PARTNER-ID", "must be at most 36 characters", "header-format")
        channel_id = headers["CHANNEL-ID"]
        if not _CHANNEL_ID.fullmatch(channel_id):
            raise field_refusal(protocol.INVALID_FIELD_FORMAT, "CHANNEL-ID", "must be 1 to 5 letters or digits", "header-format")
        bearer = _BEARER.fullmatch(headers["Authorization"])
        if bearer is None:
            raise Refusal(
                protocol.INVALID_TOKEN, "token-format", "",
                {"field": "Authorization", "reason": "Authorization must be 'Bearer <accessToken>'"},
            )
        token = bearer.group(1)
        partner = await self._partner(partner_id)
        if partner is None:
            raise Refusal(
                protocol.UNAUTHORIZED, "partner-id", "Unknown partner",
                {"field": "X-PARTNER-ID", "reason": f"no partner has X-PARTNER-ID {partner_id!r}"},
            )
        exchange.partner_id = partner.partner_id
        if channel_id != partner.channel_id:
            raise Refusal(
                protocol.UNAUTHORIZED,
                "channel-id",
                "Unknown channel",
                {"field": "CHANNEL-ID", "reason": f"CHANNEL-ID {channel_id!r} is not the registered {partner.channel_id!r}"},
            )
        rate = partner.requests_per_second_max or self.settings.requests_per_second_max
        skew_s = _skew_s(timestamp)
        body_sha256 = protocol.body_sha256_hex(body_text)
        string_to_sign = protocol.transaction_string_to_sign_with_hash(
            request.method, request.path_qs, token, body_sha256, timestamp_text
        )
        signature_ok = protocol.verify_transaction(partner.client_secret, string_to_sign, headers["X-SIGNATURE"], partner.signature_encoding)
        # The checks that need no database are decided first, so that the
        # token, the fault profile, the external id claim and the VA's last
        # inquiry take one round trip; the claim is only made when they
        # passed, the rate limit's token included: it is taken now (and given
        # back if the token checks refuse the request), so that no request
        # answered 429 has claimed its external id. The refusals below keep
        # their order.
        rate_taken = (
            signature_ok and abs(skew_s) <= partner.timestamp_tolerance_s and self.limiter.allow(partner.partner_id, rate)
        )
        fingerprint = f"{request.path}:{body_sha256}"
        day = protocol.wib_day(timestamp)
        va = _raw_virtual_account(body_text) if exchange.service_code == protocol.SERVICE_PAYMENT else None
        found = await self.authorizer.authorize(
            token, partner.partner_id,
            claim=rate_taken, day=day, external_id=external_id, fingerprint=fingerprint, virtual_account_no=va,
        )
        try:
            self._check_token(found.owner, partner)
        except Refusal:
            if rate_taken:
                self.limiter.give_back(partner.partner_id, rate)
            raise
        if not rate_taken:
            self._check_rate(partner)
        self._check_timestamp_window(partner, skew_s)
        if not signature_ok:
            length = 88 if partner.signature_encoding == "base64" else 128
            extra: dict[str, Any] = {
                "reason": f"X-SIGNATURE is not {partner.signature_encoding}(HMAC-SHA512(clientSecret, stringToSign)) "
                f"({length} characters expected, got {len(headers['X-SIGNATURE'])})",
                "encoding": partner.signature_encoding,
            }
            if self._sandbox(partner):
                extra["stringToSign"] = string_to_sign
                extra["bodySha256"] = body_sha256
                extra["minifiedBody"] = protocol.minify(body_text)
            raise Refusal(protocol.UNAUTHORIZED, "signature", "Signature", extra)
        claimed, inquiry_id = found.claimed, found.inquiry_request_id
        if claimed is None:
            # The rate limit's token was not free before the round trip but
            # was at the check after it (it refilled meanwhile): claim now.
            again = await self.authorizer.authorize(
                token, partner.partner_id,
                claim=True, day=day, external_id=external_id, fingerprint=fingerprint, virtual_account_no=va,
            )
            claimed, inquiry_id = again.claimed, again.inquiry_request_id
        exchange.last_inquiry = (va, inquiry_id) if va is not None else None
        if not claimed:
            raise Refusal(
                protocol.CONFLICT,
                "external-id",
                "X-EXTERNAL-ID already used today",
                {"field": "X-EXTERNAL-ID", "reason": f"X-EXTERNAL-ID {external_id} was used on {day.isoformat()} (WIB) for another request"},
            )
        exchange.signing = (partner.client_secret, partner.signature_encoding, token)
        profile = faults.InboundFaults.model_validate_json(found.faults) if found.faults else None
        exchange.plan = faults.plan(
            profile,
            body_text,
            sandbox=self._sandbox(partner),
            magic_latency_ms=self.settings.magic_latency_ms,
            hold_ms_default=self.settings.fault_hold_ms,
        )
        if exchange.plan.before is not None:
            raise InjectedFault(exchange.plan.before)
        return partner

    def _check_token(self, owner: store.TokenOwner | None, partner: store.Partner) -> None:
        if owner is None:
            raise Refusal(protocol.INVALID_TOKEN, "token-unknown", "", {"reason": "no such access token; get one from service 73"})
        if owner.expired:
            raise Refusal(protocol.INVALID_TOKEN, "token-expired", "", {"reason": f"the token expired ({self.settings.token_ttl_s} s lifetime)"})
        if owner.partner_id != partner.partner_id:
            raise Refusal(protocol.INVALID_TOKEN, "token-partner", "", {"reason": "the token was issued to another partner"})

    def _check_rate(self, partner: store.Partner) -> None:
        rate = partner.requests_per_second_max or self.settings.requests_per_second_max
        if not self.limiter.allow(partner.partner_id, rate):
            raise Refusal(protocol.TOO_MANY_REQUESTS, "rate-limit", "", {"reason": f"more than {rate} requests per second"})

    def _check_timestamp_window(self, partner: store.Partner, skew_s: float) -> None:
        if abs(skew_s) > partner.timestamp_tolerance_s:
            raise Refusal(
                protocol.UNAUTHORIZED,
                "timestamp-window",
                "Timestamp",
                {
                    "field": "X-TIMESTAMP",
                    # skew_s > 0: the gateway's clock is ahead, so the bank's timestamp is behind it.
                    "reason": f"X-TIMESTAMP is {abs(skew_s):.0f} s {'behind' if skew_s > 0 else 'ahead of'} the "
                    f"gateway's clock; at most {partner.timestamp_tolerance_s} s either way is accepted",
                    "gatewayTimestamp": protocol.format_timestamp(),
                },
            )

    def _sandbox(self, partner: store.Partner) -> bool:
        return self.context.sandbox if partner.sandbox is None else partner.sandbox

    async def _partner(self, partner_id: str) -> store.Partner | None:
        """Partners by id, cached briefly per process (only hits are cached, so
        a new partner is served at once; a changed one within the TTL)."""
        now = time.monotonic()
        cached = self._partners.get(partner_id)
        if cached is not None and now - cached[0] < self.settings.partner_cache_ttl_s:
            return cached[1]
        partner = await store.partner_by_id(self.pool, partner_id)
        if partner is not None:
            self._partners[partner_id] = (now, partner)
        return partner

    async def _ledger(self, call: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self.settings.payments_timeout_ms / 1000):
                return await call
        except TimeoutError:
            raise Refusal(
                protocol.TIMEOUT, "ledger-timeout", "", {"reason": f"no answer within {self.settings.payments_timeout_ms} ms; ask service 26"}
            ) from None

    # --- service 24: inquiry -------------------------------------------------

    async def inquiry(self, request: web.Request) -> web.Response:
        return await self._exchange(request, protocol.SERVICE_INQUIRY, self._decide_inquiry)

    async def _decide_inquiry(self, request: web.Request, body_text: str, exchange: store.Exchange) -> tuple[Case, dict[str, Any]]:
        partner = await self._authenticate(request, body_text, exchange)
        body = _validate(InquiryRequest, body_text)
        _check_virtual_account(partner, body)
        result: InquiryResult = await self._ledger(self.payments.inquire(body.customerNo))
        case, rule, reason = _INQUIRY_CASES[result.outcome]
        data: dict[str, Any] = {
            "inquiryStatus": "00" if case is protocol.SUCCESS else "01",
            "inquiryReason": reason,
            "partnerServiceId": body.partnerServiceId,
            "customerNo": body.customerNo,
            "virtualAccountNo": body.virtualAccountNo,
            "inquiryRequestId": body.inquiryRequestId,
        }
        if case is not protocol.SUCCESS:
            exchange.rule = rule
            return case, {"virtualAccountData": data, "additionalInfo": {"rule": rule, "reason": reason["english"]}}
        await store.remember_inquiry(self.pool, partner.partner_id, body.virtualAccountNo, body.inquiryRequestId)
        data.update(
            virtualAccountName=result.payer_name[:255],
            totalAmount=protocol.amount(result.amount_rupiah),
            billDetails=_bill_details(result.details),
            freeTexts=_free_texts(result),
            virtualAccountTrxType="C",
            feeAmount=protocol.amount(0),
        )
        return protocol.SUCCESS, {"virtualAccountData": data}

    # --- service 25: payment -------------------------------------------------

    async def payment(self, request: web.Request) -> web.Response:
        return await self._exchange(request, protocol.SERVICE_PAYMENT, self._decide_payment)

    async def _decide_payment(self, request: web.Request, body_text: str, exchange: store.Exchange) -> tuple[Case, dict[str, Any]]:
        partner = await self._authenticate(request, body_text, exchange)
        if exchange.plan is not None and exchange.plan.strip_sen:
            body_text = faults.strip_magic_sen(body_text, exchange.plan.strip_sen)
        body = _validate(PaymentRequest, body_text)
        _check_virtual_account(partner, body)
        paid_rupiah = protocol.parse_rupiah(body.paidAmount.value)
        if body.totalAmount is not None and protocol.parse_rupiah(body.totalAmount.value) != paid_rupiah:
            raise Refusal(
                protocol.INVALID_AMOUNT,
                "total-amount",
                "",
                {"field": "totalAmount.value", "reason": "totalAmount differs from paidAmount; bills are paid in full"},
            )
        if exchange.last_inquiry is not None and exchange.last_inquiry[0] == body.virtualAccountNo:
            inquiry_id = exchange.last_inquiry[1]  # read with the external id claim
        else:
            inquiry_id = await store.last_inquiry(self.pool, partner.partner_id, body.virtualAccountNo)
        if inquiry_id is not None and inquiry_id != body.paymentRequestId:
            raise Refusal(
                protocol.INCONSISTENT_REQUEST,
                "payment-request-id",
                "paymentRequestId",
                {
                    "field": "paymentRequestId",
                    "reason": f"paymentRequestId must equal the inquiryRequestId of the last inquiry on this VA ({inquiry_id!r})",
                },
            )
        command = PayCommand(
            payment_code=body.customerNo,
            amount_rupiah=paid_rupiah,
            channel=f"{CHANNEL_PREFIX}:{partner.partner_id}",
            idempotency_key=body.paymentRequestId,
            bank_reference=body.referenceNo or body.trxId or "",
            inquiry_reference=inquiry_id or "",
        )
        result: PayResult | None = None
        if paid_rupiah == 0:
            # The ledger judges a used paymentRequestId first (kanal_pay: a
            # repeat with another amount is a conflict), but refuses a zero
            # amount before it looks at the key (PaymentsService.pay): look
            # at the key here, so that "0.00" under a used id is the same
            # 4042518 payment-request-id-reused as any other amount.
            prior = await self._ledger(self.payments.status(command.channel, command.idempotency_key))
            if prior.outcome is not StatusOutcome.NOT_FOUND:
                result = PayResult(PayOutcome.CONFLICT, body.customerNo, prior.amount_rupiah, payment_id=prior.payment_id)
        if result is None:
            result = await self._ledger(self.payments.pay(command))
        # Its commit waited for the WAL flush, which covers the claim made before it.
        exchange.posted = result.outcome is PayOutcome.POSTED
        case, rule, reason = _PAY_CASES[result.outcome]
        data: dict[str, Any] = {
            "partnerServiceId": body.partnerServiceId,
            "customerNo": body.customerNo,
            "virtualAccountNo": body.virtualAccountNo,
            "paymentRequestId": body.paymentRequestId,
            "paidAmount": body.paidAmount.model_dump(),
            "paymentFlagStatus": "00" if result.succeeded else "01",
            "paymentFlagReason": reason,
        }
        if not result.succeeded:
            exchange.rule = rule
            info = {"rule": rule}
            if result.outcome in _PAY_FIELDS:
                info["field"] = _PAY_FIELDS[result.outcome]
            info["reason"] = reason["english"]
            return case, {"virtualAccountData": data, "additionalInfo": info}
        data.update(
            virtualAccountName=result.payer_name[:255],
            totalAmount=protocol.amount(result.amount_rupiah),
            trxDateTime=protocol.format_timestamp(result.posted_at) if result.posted_at else None,
            referenceNo=body.referenceNo,
            billDetails=[{**detail, "status": "00", "reason": SUCCESS_REASON} for detail in _bill_details(result.details)],
        )
        extra = {"outcome": str(result.outcome), "paymentId": result.payment_id, "journalEntryId": result.journal_entry_id}
        return protocol.SUCCESS, {"virtualAccountData": data, "additionalInfo": extra}

    # --- service 26: status --------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        return await self._exchange(request, protocol.SERVICE_STATUS, self._decide_status)

    async def _decide_status(self, request: web.Request, body_text: str, exchange: store.Exchange) -> tuple[Case, dict[str, Any]]:
        partner = await self._authenticate(request, body_text, exchange)
        body = _validate(StatusRequest, body_text)
        _check_virtual_account(partner, body)
        channel = f"{CHANNEL_PREFIX}:{partner.partner_id}"
        result = await self._ledger(self.payments.status(channel, body.paymentRequestId))
        if result.outcome is StatusOutcome.NOT_FOUND:
            raise Refusal(
                protocol.TRANSACTION_NOT_FOUND,
                "transaction-not-found",
                "",
                {"reason": f"no payment with paymentRequestId {body.paymentRequestId!r} from {partner.partner_id}"},
            )
        if result.payment_code and result.payment_code != body.customerNo:
            raise Refusal(
                protocol.INCONSISTENT_REQUEST,
                "customer-no",
                "customerNo",
                {"field": "customerNo", "reason": "this paymentRequestId paid another customerNo"},
            )
        reversed_ = result.outcome is StatusOutcome.REVERSED
        data = {
            "partnerServiceId": body.partnerServiceId,
            "customerNo": body.customerNo,
            "virtualAccountNo": body.virtualAccountNo,
            "inquiryRequestId": body.inquiryRequestId,
            "paymentRequestId": body.paymentRequestId,
            "paidAmount": protocol.amount(result.amount_rupiah),
            "totalAmount": protocol.amount(result.amount_rupiah),
            "transactionDate": protocol.format_timestamp(result.posted_at) if result.posted_at else None,
            "referenceNo": result.bank_reference or None,
            "paymentFlagStatus": "01" if reversed_ else "00",
            "paymentFlagReason": {"english": "Reversed", "indonesia": "Dibatalkan"} if reversed_ else SUCCESS_REASON,
        }
        extra = {"outcome": str(result.outcome), "paymentId": result.payment_id}
        if result.reversed_at:
            extra["reversedAt"] = protocol.format_timestamp(result.reversed_at)
        return protocol.SUCCESS, {"virtualAccountData": data, "additionalInfo": extra}

    # --- ops API: partner registration ---------------------------------------

    def _admin_allowed(self, request: web.Request) -> bool:
        expected = self.context.admin_token
        given = request.headers.get("Authorization", "")
        return bool(expected) and hmac.compare_digest(given.encode(), f"Bearer {expected}".encode())

    async def admin_add_partner(self, request: web.Request) -> web.Response:
        if not self._admin_allowed(request):
            return web.json_response({"error": "Authorization: Bearer <admin token> required"}, status=401)
        try:
            data = await request.json()
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            return web.json_response({"error": "body must be JSON", "field": "body"}, status=400)
        try:
            partner = await partners.register(
                self.pool, partners.PartnerRequest.from_json(data), tolerance_default_s=self.settings.timestamp_tolerance_s
            )
        except partners.PartnerConflict as error:
            return web.json_response({"error": str(error), "field": error.field}, status=409)
        except (partners.RegistrationError, TypeError) as error:
            return web.json_response({"error": str(error), "field": getattr(error, "field", "body")}, status=400)
        log.info("snap.partner_registered", partner=partner.partner_id)
        return web.json_response(partners.created_view(partner), status=201)

    async def admin_list_partners(self, request: web.Request) -> web.Response:
        if not self._admin_allowed(request):
            return web.json_response({"error": "Authorization: Bearer <admin token> required"}, status=401)
        return web.json_response({"partners": [p.public_view() for p in await store.list_partners(self.pool)]})


# --- helpers -------------------------------------------------------------------


def response_string_to_sign(method: str, path: str, access_token: str, response_body: str, timestamp: str) -> str:
    """What a response's X-SIGNATURE covers: the request's method, path and
    access token with the response's body and X-TIMESTAMP, in the request's
    string-to-sign layout."""
    return protocol.transaction_string_to_sign(method, path, access_token, response_body, timestamp)


def response_signature(
    signing: tuple[str, str, str], method: str, path: str, response_body_sha256: str, timestamp: str, *, wrong: bool = False
) -> str:
    """X-SIGNATURE of a response, from the SHA-256 (hex) of its minified body."""
    client_secret, encoding, access_token = signing
    string_to_sign = protocol.transaction_string_to_sign_with_hash(method, path, access_token, response_body_sha256, timestamp)
    if wrong:  # the fault: a signature over something else, of the right shape
        string_to_sign += ":tampered"
    return protocol.sign_transaction(client_secret, string_to_sign, encoding)


def _raw_virtual_account(body_text: str) -> str | None:
    """virtualAccountNo as sent, before validation: only to read the VA's last
    inquiry in the same round trip as the external id claim. The validated
    value is compared with it before the prefetched answer is used."""
    try:
        body = json.loads(body_text)
    except (ValueError, RecursionError):  # RecursionError: nested too deep; validation names it
        return None
    value = body.get("virtualAccountNo") if isinstance(body, dict) else None
    # Only plain text goes into the shared statement: a NUL or a lone
    # surrogate (JSON escapes) would fail the statement for every request
    # grouped with this one. Anything else is refused by validation anyway.
    if isinstance(value, str) and len(value) <= 64 and value.isascii() and value.isprintable():
        return value
    return None


async def _read_body(request: web.Request, body_bytes_max: int) -> str:
    # The limit is enforced here: a sub-application's client_max_size is not
    # applied (the request belongs to the main application, whose ceiling is
    # the CSV upload limit).
    too_large = field_refusal(protocol.INVALID_FIELD_FORMAT, "body", f"larger than {body_bytes_max} bytes", "body-size")
    if request.content_length is not None and request.content_length > body_bytes_max:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(65_536):
            size += len(chunk)
            if size > body_bytes_max:
                raise too_large
            chunks.append(chunk)
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise field_refusal(protocol.INVALID_FIELD_FORMAT, "body", "not UTF-8", "body-encoding") from None


def _skew_s(timestamp: dt.datetime) -> float:
    """How far the gateway's clock is ahead of X-TIMESTAMP, in seconds."""
    return (dt.datetime.now(dt.UTC) - timestamp).total_seconds()


def _parse_timestamp_header(text: str) -> dt.datetime:
    timestamp = protocol.parse_timestamp(text)
    if timestamp is None:
        raise field_refusal(
            protocol.INVALID_FIELD_FORMAT,
            "X-TIMESTAMP",
            f"{text!r} is not ISO 8601 with an offset, e.g. 2025-09-24T10:55:00+07:00",
            "header-format",
        )
    return timestamp


def _validate(model: type[M], body_text: str) -> M:
    try:
        return model.model_validate_json(body_text)  # type: ignore[attr-defined]
    except ValidationError as error:
        problem = first_problem(error)
        case = protocol.INVALID_MANDATORY_FIELD if problem.missing else protocol.INVALID_FIELD_FORMAT
        raise field_refusal(case, problem.field, problem.reason, "body-mandatory" if problem.missing else "body-format") from None


def _check_virtual_account(partner: store.Partner, body: InquiryRequest | PaymentRequest | StatusRequest) -> None:
    if body.partnerServiceId != partner.partner_service_id:
        if body.partnerServiceId.lstrip(" 0") == partner.partner_service_id.lstrip(" 0"):
            raise field_refusal(
                protocol.INVALID_FIELD_FORMAT,
                "partnerServiceId",
                f"{partner.partner_id} pads partnerServiceId with {partner.padding}: expected {partner.partner_service_id!r}",
                "partner-service-id-padding",
            )
        raise Refusal(
            protocol.INVALID_ACCOUNT,
            "partner-service-id",
            "partnerServiceId",
            {"field": "partnerServiceId", "reason": f"{body.partnerServiceId!r} is not registered for {partner.partner_id}"},
        )
    if body.virtualAccountNo != body.partnerServiceId + body.customerNo:
        raise Refusal(
            protocol.INCONSISTENT_REQUEST,
            "virtual-account-no",
            "virtualAccountNo",
            {"field": "virtualAccountNo", "reason": "virtualAccountNo must be partnerServiceId + customerNo"},
        )


def _reason(english: str, indonesia: str) -> dict[str, str]:
    return {"english": english, "indonesia": indonesia}


_INQUIRY_CASES: dict[InquiryOutcome, tuple[Case, str, dict[str, str]]] = {
    InquiryOutcome.OPEN: (protocol.SUCCESS, "", SUCCESS_REASON),
    InquiryOutcome.UNKNOWN: (protocol.INVALID_BILL, "bill-unknown", _reason("Bill not found", "Tagihan tidak ditemukan")),
    InquiryOutcome.EXPIRED: (protocol.BILL_EXPIRED, "bill-expired", _reason("Bill expired", "Tagihan kedaluwarsa")),
    InquiryOutcome.PAID: (protocol.PAID_BILL, "bill-paid", _reason("Bill already paid", "Tagihan sudah dibayar")),
}

_PAY_CASES: dict[PayOutcome, tuple[Case, str, dict[str, str]]] = {
    PayOutcome.POSTED: (protocol.SUCCESS, "", SUCCESS_REASON),
    PayOutcome.REPLAYED: (protocol.SUCCESS, "", SUCCESS_REASON),
    PayOutcome.PAID_BILL: (protocol.PAID_BILL, "bill-paid", _reason("Bill already paid", "Tagihan sudah dibayar")),
    PayOutcome.WRONG_AMOUNT: (
        protocol.INVALID_AMOUNT,
        "amount",
        _reason("Amount differs from the bill", "Jumlah tidak sesuai tagihan"),
    ),
    PayOutcome.UNKNOWN_CODE: (protocol.INVALID_BILL, "bill-unknown", _reason("Bill not found", "Tagihan tidak ditemukan")),
    PayOutcome.EXPIRED: (protocol.BILL_EXPIRED, "bill-expired", _reason("Bill expired", "Tagihan kedaluwarsa")),
    PayOutcome.CONFLICT: (
        protocol.INCONSISTENT_REQUEST,
        "payment-request-id-reused",
        _reason("paymentRequestId already used for another amount or bill", "paymentRequestId sudah dipakai"),
    ),
    PayOutcome.REVERSED: (
        protocol.INCONSISTENT_REQUEST,
        "payment-reversed",
        _reason("This payment was reversed", "Pembayaran ini sudah dibatalkan"),
    ),
}

# The one field at fault in a business refusal; the others (unknown, paid,
# expired bill, a reversed payment) are declines of a well-formed request.
_PAY_FIELDS: dict[PayOutcome, str] = {
    PayOutcome.WRONG_AMOUNT: "paidAmount.value",
    PayOutcome.CONFLICT: "paymentRequestId",
}

BILL_DETAILS_MAX = 24
FREE_TEXTS_MAX = 25
BILL_DESCRIPTION_CHARS_MAX = 18


def _bill_details(details: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [
        {
            "billCode": f"{index:02d}",
            "billName": detail.code,
            "billShortName": detail.code,
            "billDescription": {
                "english": detail.label_english[:BILL_DESCRIPTION_CHARS_MAX],
                "indonesia": detail.label_indonesia[:BILL_DESCRIPTION_CHARS_MAX],
            },
            "billAmount": protocol.amount(detail.amount_rupiah),
        }
        for index, detail in enumerate(details[:BILL_DETAILS_MAX], start=1)
    ]


def _free_texts(result: InquiryResult) -> list[dict[str, str]]:
    texts = []
    if result.period:
        texts.append(_reason(f"Dues period {result.period}", f"Iuran periode {result.period}"))
    if result.due_date:
        texts.append(_reason(f"Due {result.due_date.isoformat()}", f"Jatuh tempo {result.due_date.isoformat()}"))
    return texts[:FREE_TEXTS_MAX]


def _logged_headers(headers: Mapping[str, str]) -> dict[str, str]:
    kept = {name: headers[name] for name in LOGGED_HEADERS if name in headers}
    if "Authorization" in kept:
        kept["Authorization"] = kept["Authorization"][:15] + "..."  # enough to tell tokens apart, not to reuse one
    return kept
