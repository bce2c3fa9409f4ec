"""A virtual bank: drives a SNAP biller exactly as a bank would.

Used by the tests, the simulator and the benchmarks. It caches its access
token until shortly before it expires, fetches a new one once when told the
token is invalid (401xx01), and on a timeout (no answer, or 504xx00) repeats a
payment with the same X-EXTERNAL-ID and paymentRequestId, then asks service 26.

    async with SnapClient("http://127.0.0.1:8080", credentials) as bank:
        inquiry = await bank.inquiry("12345678901")
        payment = await bank.pay("12345678901", 150_000, inquiry.request_id)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bank_adapters.snap import protocol

TOKEN_PATH = "/v1.0/access-token/b2b"
INQUIRY_PATH = "/v1.0/transfer-va/inquiry"
PAYMENT_PATH = "/v1.0/transfer-va/payment"
STATUS_PATH = "/v1.0/transfer-va/status"
TOKEN_REFRESH_MARGIN_S = 30.0


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a bank holds after registration."""

    partner_id: str
    client_key: str
    client_secret: str
    private_key_pem: str
    channel_id: str = "95221"
    partner_service_id: str = "   12345"  # 8 characters, padded as registered
    encoding: str = "base64"


@dataclass(slots=True)
class SnapResponse:
    http_status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    external_id: str = ""
    request_id: str = ""  # inquiryRequestId / paymentRequestId sent, when any
    attempts: int = 1
    text: str = ""  # the body exactly as received (what X-SIGNATURE covers)

    @property
    def code(self) -> str:
        return str(self.body.get("responseCode", ""))

    @property
    def service(self) -> str:
        return self.code[3:5]

    @property
    def case(self) -> str:
        """HTTP status and case without the service: "20000", "40401"..."""
        return self.code[:3] + self.code[5:]

    @property
    def ok(self) -> bool:
        return self.code.startswith("200")

    @property
    def rule(self) -> str | None:
        info = self.body.get("additionalInfo")
        return info.get("rule") if isinstance(info, dict) else None


_counter = itertools.count()


def new_external_id() -> str:
    """A numeric X-EXTERNAL-ID: nanoseconds then a per-process counter (25 digits)."""
    return f"{time.time_ns()}{next(_counter) % 1_000_000:06d}"


def new_request_id() -> str:
    return uuid.uuid4().hex


def dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def transaction_headers(
    credentials: Credentials,
    *,
    method: str,
    endpoint_url: str,
    access_token: str,
    body_text: str,
    timestamp: str | None = None,
    external_id: str | None = None,
) -> dict[str, str]:
    """The headers of a signed SNAP transaction request (services 24 to 26)."""
    timestamp = timestamp or protocol.format_timestamp()
    string_to_sign = protocol.transaction_string_to_sign(method, endpoint_url, access_token, body_text, timestamp)
    return {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {access_token}",
        "X-TIMESTAMP": timestamp,
        "X-SIGNATURE": protocol.sign_transaction(credentials.client_secret, string_to_sign, credentials.encoding),
        "X-PARTNER-ID": credentials.partner_id,
        "X-EXTERNAL-ID": external_id or new_external_id(),
        "CHANNEL-ID": credentials.channel_id,
    }


def token_headers(client_key: str, private_key_pem: str, timestamp: str | None = None) -> dict[str, str]:
    timestamp = timestamp or protocol.format_timestamp()
    signature = protocol.sign_token_request(protocol.load_private_key(private_key_pem), client_key, timestamp)
    return {"Content-Type": "application/json", "X-TIMESTAMP": timestamp, "X-CLIENT-KEY": client_key, "X-SIGNATURE": signature}


TOKEN_BODY = dumps({"grantType": "client_credentials", "additionalInfo": {}})


class SnapClient:
    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        prefix: str = "/snap",
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
        retries_max: int = 2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.prefix = prefix.rstrip("/")
        self.timeout_s = timeout_s
        self.retries_max = retries_max
        self._session = session
        self._owns_session = session is None
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()

    async def __aenter__(self) -> SnapClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def url_path(self, service_path: str) -> str:
        return self.prefix + service_path

    # --- raw exchange ----------------------------------------------------------

    async def send(self, service_path: str, body_text: str, headers: dict[str, str], *, timeout_s: float | None = None) -> SnapResponse:
        """POST exactly these bytes and headers (tests tamper with them)."""
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        async with self.session.post(
            self.base_url + self.url_path(service_path), data=body_text.encode("utf-8"), headers=headers, timeout=timeout
        ) as response:
            text = await response.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = {"raw": text}
            return SnapResponse(response.status, body if isinstance(body, dict) else {"raw": body}, dict(response.headers), text=text)

    # --- service 73 ------------------------------------------------------------

    async def request_token(self) -> SnapResponse:
        headers = token_headers(self.credentials.client_key, self.credentials.private_key_pem)
        return await self.send(TOKEN_PATH, TOKEN_BODY, headers)

    async def token(self, *, force: bool = False) -> str:
        async with self._token_lock:
            if force or self._token is None or time.monotonic() >= self._token_expires_at:
                response = await self.request_token()
                if not response.ok:
                    raise SnapError(response)
                self._token = str(response.body["accessToken"])
                lifetime_s = float(response.body.get("expiresIn", 900))
                self._token_expires_at = time.monotonic() + max(0.0, lifetime_s - TOKEN_REFRESH_MARGIN_S)
            return self._token

    def forget_token(self) -> None:
        self._token = None

    # --- services 24 to 26 -------------------------------------------------------

    def signed(self, service_path: str, body_text: str, token: str, *, external_id: str | None = None, timestamp: str | None = None) -> dict[str, str]:
        return transaction_headers(
            self.credentials,
            method="POST",
            endpoint_url=self.url_path(service_path),
            access_token=token,
            body_text=body_text,
            timestamp=timestamp,
            external_id=external_id,
        )

    async def post(self, service_path: str, body: dict[str, Any], *, external_id: str | None = None) -> SnapResponse:
        """Sign and send; a 401xx01 (token expired or unknown) is retried once with a new token."""
        body_text = dumps(body)
        external_id = external_id or new_external_id()
        for attempt in (1, 2):
            token = await self.token(force=attempt == 2)
            response = await self.send(service_path, body_text, self.signed(service_path, body_text, token, external_id=external_id))
            if not (response.http_status == 401 and response.code.endswith("01")):
                break
        response.external_id = external_id
        return response

    def virtual_account(self, customer_no: str) -> dict[str, str]:
        service_id = self.credentials.partner_service_id
        return {"partnerServiceId": service_id, "customerNo": customer_no, "virtualAccountNo": service_id + customer_no}

    async def inquiry(self, customer_no: str, inquiry_request_id: str | None = None) -> SnapResponse:
        request_id = inquiry_request_id or new_request_id()
        body = {**self.virtual_account(customer_no), "inquiryRequestId": request_id, "channelCode": 6011, "language": "ID"}
        response = await self.post(INQUIRY_PATH, body)
        response.request_id = request_id
        return response

    def payment_body(self, customer_no: str, amount_rupiah: int, payment_request_id: str, *, flag_advise: bool = False) -> dict[str, Any]:
        return {
            **self.virtual_account(customer_no),
            "paymentRequestId": payment_request_id,
            "channelCode": 6011,
            "paidAmount": protocol.amount(amount_rupiah),
            "totalAmount": protocol.amount(amount_rupiah),
            "trxDateTime": protocol.format_timestamp(),
            "referenceNo": payment_request_id[:64],
            "flagAdvise": "Y" if flag_advise else "N",
        }

    async def pay(
        self, customer_no: str, amount_rupiah: int, payment_request_id: str | None = None, *, flag_advise: bool = False
    ) -> SnapResponse:
        """Pay; on no answer (or 504xx00) repeat with the same ids up to
        `retries_max` times, then ask service 26 what was committed."""
        request_id = payment_request_id or new_request_id()
        body = self.payment_body(customer_no, amount_rupiah, request_id, flag_advise=flag_advise)
        external_id = new_external_id()
        for attempt in range(1, self.retries_max + 2):
            try:
                response = await self.post(PAYMENT_PATH, body, external_id=external_id)
            except (TimeoutError, aiohttp.ClientConnectionError):
                continue
            if response.http_status != 504:
                response.request_id = request_id
                response.attempts = attempt
                return response
        response = await self.status(customer_no, request_id)
        response.attempts = self.retries_max + 1
        return response

    async def status(self, customer_no: str, payment_request_id: str, inquiry_request_id: str | None = None) -> SnapResponse:
        body: dict[str, Any] = {**self.virtual_account(customer_no), "paymentRequestId": payment_request_id}
        if inquiry_request_id:
            body["inquiryRequestId"] = inquiry_request_id
        response = await self.post(STATUS_PATH, body)
        response.request_id = payment_request_id
        return response


class SnapError(RuntimeError):
    def __init__(self, response: SnapResponse) -> None:
        super().__init__(f"{response.code} {response.body.get('responseMessage', '')} {response.body.get('additionalInfo', '')}")
        self.response = response
