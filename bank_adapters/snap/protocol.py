"""SNAP BI wire rules that need no I/O: signatures, timestamps, amounts, codes.

Everything here is pure and shared by the server side (routes.py) and the
virtual bank (client.py), so that both sides compute the string-to-sign with
one piece of code. The facts come from ../shared/domain/snap-va.md.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

WIB = dt.timezone(dt.timedelta(hours=7), "WIB")

SERVICE_TOKEN = "73"
SERVICE_INQUIRY = "24"
SERVICE_PAYMENT = "25"
SERVICE_STATUS = "26"

ENCODINGS = ("base64", "hex")
PADDINGS = ("spaces", "zeros")
PARTNER_SERVICE_ID_LENGTH = 8


# --- Response codes ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    """One row of the SNAP response-code table: HTTP status and case code."""

    http_status: int
    case: str
    message: str

    def code(self, service: str) -> str:
        return f"{self.http_status}{service}{self.case}"


SUCCESS = Case(200, "00", "Successful")
IN_PROGRESS = Case(202, "00", "Request In Progress")
INVALID_FIELD_FORMAT = Case(400, "01", "Invalid Field Format")
INVALID_MANDATORY_FIELD = Case(400, "02", "Invalid Mandatory Field")
UNAUTHORIZED = Case(401, "00", "Unauthorized")
INVALID_TOKEN = Case(401, "01", "Invalid Token (B2B)")
TRANSACTION_NOT_FOUND = Case(404, "01", "Transaction Not Found")
INVALID_ACCOUNT = Case(404, "11", "Invalid Account")
INVALID_BILL = Case(404, "12", "Invalid Bill/Virtual Account")
INVALID_AMOUNT = Case(404, "13", "Invalid Amount")
PAID_BILL = Case(404, "14", "Paid Bill")
INCONSISTENT_REQUEST = Case(404, "18", "Inconsistent Request")
BILL_EXPIRED = Case(404, "19", "Bill has been expired")
CONFLICT = Case(409, "00", "Conflict")
TOO_MANY_REQUESTS = Case(429, "00", "Too Many Requests")
GENERAL_ERROR = Case(500, "00", "General Error")
TIMEOUT = Case(504, "00", "Timeout")

RESPONSE_MESSAGE_LENGTH_MAX = 150


def response_message(case: Case, detail: str = "") -> str:
    """The SNAP message: the table's text, then the detail in brackets, cut to 150."""
    text = f"{case.message} [{detail}]" if detail else case.message
    if len(text) > RESPONSE_MESSAGE_LENGTH_MAX:
        text = text[: RESPONSE_MESSAGE_LENGTH_MAX - 4] + "...]"
    return text


# --- Bodies and signatures ---------------------------------------------------

# A JSON string literal (captured, so that re.split keeps it), and a run of
# whitespace.
_STRING = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")')
_WHITESPACE = re.compile(r"[ \t\n\r]+")


def minify(body: str) -> str:
    """The body without insignificant whitespace, every other byte kept as sent.

    Textual on purpose: re-serialising with json would change number spellings
    and escapes, and the bank hashed the characters it sent.
    """
    parts = _STRING.split(body)  # outside, string, outside, ..., outside
    outside = parts[0::2]
    if not any(_WHITESPACE.search(part) for part in outside):
        return body  # already minified: the common case
    parts[0::2] = [_WHITESPACE.sub("", part) for part in outside]
    return "".join(parts)


def body_sha256_hex(body: str) -> str:
    return hashlib.sha256(minify(body).encode("utf-8")).hexdigest()


def transaction_string_to_sign(method: str, endpoint_url: str, access_token: str, body: str, timestamp: str) -> str:
    return transaction_string_to_sign_with_hash(method, endpoint_url, access_token, body_sha256_hex(body), timestamp)


def transaction_string_to_sign_with_hash(method: str, endpoint_url: str, access_token: str, body_sha256: str, timestamp: str) -> str:
    """The string-to-sign from the body's hash (`body_sha256_hex`), for a
    caller that needs the hash again."""
    return f"{method.upper()}:{endpoint_url}:{access_token}:{body_sha256}:{timestamp}"


def token_string_to_sign(client_key: str, timestamp: str) -> str:
    return f"{client_key}|{timestamp}"


def encode_signature(raw: bytes, encoding: str) -> str:
    if encoding == "hex":
        return raw.hex()
    if encoding == "base64":
        return base64.b64encode(raw).decode("ascii")
    raise ValueError(f"signature encoding must be one of {ENCODINGS}, not {encoding!r}")


def decode_signature(text: str, encoding: str) -> bytes | None:
    """The raw bytes of a signature header, or None when it is not in `encoding`."""
    try:
        if encoding == "hex":
            if not re.fullmatch(r"[0-9a-fA-F]*", text):
                return None
            return bytes.fromhex(text)
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def hmac_sha512(client_secret: str, string_to_sign: str) -> bytes:
    return hmac.new(client_secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha512).digest()


def sign_transaction(client_secret: str, string_to_sign: str, encoding: str) -> str:
    return encode_signature(hmac_sha512(client_secret, string_to_sign), encoding)


def verify_transaction(client_secret: str, string_to_sign: str, signature: str, encoding: str) -> bool:
    """Constant-time comparison of the raw HMAC bytes."""
    received = decode_signature(signature, encoding)
    if received is None:
        return False
    return hmac.compare_digest(hmac_sha512(client_secret, string_to_sign), received)


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """Parse a PEM public key; ValueError names what is wrong."""
    try:
        key = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError) as error:
        raise ValueError(f"public key is not a PEM public key: {error}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("public key must be an RSA key (SNAP signs the token request with SHA256withRSA)")
    return key


def load_private_key(pem: str | bytes) -> rsa.RSAPrivateKey:
    data = pem.encode("utf-8") if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("private key must be an RSA key")
    return key


def generate_key_pair(bits: int = 2048) -> tuple[str, str]:
    """(private PEM, public PEM): what a virtual bank needs to register itself."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return private_pem, public_pem


def sign_token_request(private_key: rsa.RSAPrivateKey, client_key: str, timestamp: str) -> str:
    raw = private_key.sign(token_string_to_sign(client_key, timestamp).encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode("ascii")


def verify_token_request(public_key: rsa.RSAPublicKey, client_key: str, timestamp: str, signature: str) -> bool:
    raw = decode_signature(signature, "base64")
    if raw is None:
        return False
    try:
        public_key.verify(raw, token_string_to_sign(client_key, timestamp).encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# --- Timestamps --------------------------------------------------------------

# ISO 8601 with a mandatory offset, as SNAP requires: 2025-09-24T10:55:00+07:00
# (fractional seconds and "Z" tolerated, since some banks send them).
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?([+-]\d{2}:\d{2}|Z)")


def parse_timestamp(text: str) -> dt.datetime | None:
    """An aware datetime, or None when `text` is not ISO 8601 with an offset."""
    if not _TIMESTAMP.fullmatch(text):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_timestamp(moment: dt.datetime | None = None) -> str:
    """Now (or `moment`) in WIB, to the second, with its offset."""
    moment = moment or dt.datetime.now(dt.UTC)
    return moment.astimezone(WIB).isoformat(timespec="seconds")


def wib_day(moment: dt.datetime) -> dt.date:
    """The calendar day in Asia/Jakarta (UTC+7, no daylight saving)."""
    return moment.astimezone(WIB).date()


# --- Amounts -----------------------------------------------------------------

_AMOUNT = re.compile(r"(0|[1-9]\d{0,15})\.(\d{2})")


class AmountError(ValueError):
    pass


def parse_rupiah(value: object) -> int:
    """Whole rupiah from a SNAP amount value such as "1101222.00".

    Rupiah has no cents in this gateway: the decimals must be "00".
    """
    if not isinstance(value, str):
        raise AmountError(f"must be a string like \"150000.00\", got {type(value).__name__}")
    match = _AMOUNT.fullmatch(value)
    if match is None:
        raise AmountError(
            f"{value!r} must be digits (at most 16, no leading zero), a point and exactly two decimals, e.g. \"150000.00\""
        )
    if match.group(2) != "00":
        raise AmountError(f"{value!r} has non-zero decimals; rupiah amounts end in \".00\"")
    return int(match.group(1))


def format_rupiah(amount_rupiah: int) -> str:
    assert amount_rupiah >= 0, amount_rupiah
    return f"{amount_rupiah}.00"


def amount(amount_rupiah: int) -> dict[str, str]:
    return {"value": format_rupiah(amount_rupiah), "currency": "IDR"}


# --- Virtual accounts --------------------------------------------------------


def pad_partner_service_id(service_id: str, padding_style: str) -> str:
    """Left-pad a partnerServiceId to 8 characters with spaces or zeros."""
    if padding_style not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, not {padding_style!r}")
    digits = service_id.strip(" ")
    if not digits.isdigit() or len(digits) > PARTNER_SERVICE_ID_LENGTH:
        raise ValueError(f"service id must be 1 to 8 digits, got {service_id!r}")
    fill = " " if padding_style == "spaces" else "0"
    return digits.rjust(PARTNER_SERVICE_ID_LENGTH, fill)
