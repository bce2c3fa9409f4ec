"""Framing and message codec: bytes on the wire <-> field dicts.

A frame is a 2-byte big-endian length followed by that many bytes of one ISO
8583 message. `pyiso8583` does the field layout from the profile's spec; this
module adds what it leaves to us: the frame limit, content checks per field
(numeric, alphanumeric, printable), and, when a message is broken, whatever can
still be read of it (its MTI and a few echo fields) so that the server can
answer `30` instead of hanging up.
"""

from __future__ import annotations

import asyncio
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

import iso8583

from .profile import Profile

HEADER_BYTES = 2
FRAME_BYTES_LIMIT = 0xFFFF  # what a 2-byte length can say

_ALNUM = frozenset(string.ascii_letters + string.digits)
_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))


class FrameClosed(Exception):
    """The peer closed the connection, cleanly or mid-frame."""


@dataclass(frozen=True, slots=True)
class Frame:
    body: bytes
    oversized: bool = False  # the length exceeded frame_bytes_max: body holds only its first bytes


class MessageError(ValueError):
    """A frame that is not a valid message of the profile.

    `mti` is the request's MTI when it could be read (4 digits), else None.
    `fields` holds the fields that were read and passed their content check,
    for echoing in the `30` response (so the bank can match it by STAN).
    """

    def __init__(self, reason: str, mti: str | None, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mti = mti
        self.fields: dict[str, str] = dict(fields or {})


def frame(body: bytes) -> bytes:
    if len(body) > FRAME_BYTES_LIMIT:
        raise ValueError(f"message of {len(body)} bytes does not fit a 2-byte length header (max {FRAME_BYTES_LIMIT})")
    return len(body).to_bytes(HEADER_BYTES, "big") + body


async def read_frame(reader: asyncio.StreamReader, frame_bytes_max: int, keep_bytes: int = 64) -> Frame:
    """Read one frame. An over-limit frame is read and discarded (at most 64 KiB,
    bounded by the header) so that the link stays in step; its first
    `keep_bytes` are kept to read the MTI from."""
    try:
        header = await reader.readexactly(HEADER_BYTES)
    except asyncio.IncompleteReadError:
        raise FrameClosed("peer closed the connection") from None
    length = int.from_bytes(header, "big")
    try:
        if length <= frame_bytes_max:
            return Frame(await reader.readexactly(length))
        kept = await reader.readexactly(min(length, keep_bytes))
        remaining = length - len(kept)
        while remaining:
            chunk = await reader.read(min(remaining, 8192))
            if not chunk:
                raise FrameClosed("peer closed the connection inside an oversized frame")
            remaining -= len(chunk)
        return Frame(kept, oversized=True)
    except asyncio.IncompleteReadError:
        raise FrameClosed(f"peer closed the connection inside a frame of {length} bytes") from None


def readable_mti(body: bytes) -> str | None:
    head = body[:4]
    if len(head) == 4 and head.isdigit():
        return head.decode("ascii")
    return None


def check_content(kind: str, value: str) -> bool:
    if kind == "n":
        return value.isascii() and value.isdigit()
    if kind == "an":
        return all(c in _ALNUM for c in value)
    if kind == "ans":
        return all(c in _PRINTABLE for c in value)
    return True  # "b": pyiso8583 already produced hex


def decode(body: bytes, profile: Profile) -> dict[str, str]:
    """Decode one message body; raise MessageError with what could be read."""
    mti = readable_mti(body)
    try:
        doc, _ = iso8583.decode(body, profile.spec)
    except iso8583.DecodeError as error:
        bad = {error.field}
        raise MessageError(f"undecodable: {error}", mti, _checked(error.doc_dec, profile, skip=bad)) from None
    except KeyError as error:  # a bitmap bit for a field the spec lacks
        raise MessageError(f"field {error} is not in profile {profile.name}", mti) from None
    except Exception as error:  # noqa: BLE001 - hostile input must never escape as a crash
        raise MessageError(f"undecodable: {type(error).__name__}", mti) from None
    if mti is None or doc.get("t") != mti:
        raise MessageError("MTI is not 4 digits", None)
    for key, value in doc.items():
        kind = profile.content.get(key, "ans")
        if key not in ("t", "p", "1") and not check_content(kind, value):
            fields = _checked(doc, profile, skip={key})
            raise MessageError(f"field {key}: expected content {kind!r}", mti, fields)
    return doc


def _checked(doc: Mapping[str, str], profile: Profile, skip: set[str]) -> dict[str, str]:
    return {
        key: value
        for key, value in doc.items()
        if key in profile.echo_fields
        and key not in skip
        and value
        and check_content(profile.content.get(key, "ans"), value)
    }


def encode(doc: Mapping[str, str], profile: Profile) -> bytes:
    """Encode a response or request; fields are fitted to the spec first
    (text made ASCII, over-long values cut) so that a payer name with an
    accent cannot turn an approval into an exception."""
    fitted: dict[str, str] = {}
    for key, value in doc.items():
        if key in ("p", "1"):
            continue
        fitted[key] = fit(profile, key, value)
    raw, _ = iso8583.encode(fitted, profile.spec)
    return bytes(raw)


def fit(profile: Profile, key: str, value: str) -> str:
    spec = profile.spec[key]
    if spec["data_enc"] == "b":
        return value
    text = ascii_text(value)
    if spec["len_type"] == 0:
        width = spec["max_len"]
        if profile.content.get(key) == "n":
            return text[-width:].rjust(width, "0")
        return text[:width].ljust(width)
    return text[: spec["max_len"]]


def ascii_text(value: str) -> str:
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    return "".join(c if c in _PRINTABLE else " " for c in folded)
