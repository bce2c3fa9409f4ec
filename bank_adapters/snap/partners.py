"""Registering a bank: profiles (bank defaults) and the checks before the insert.

Shared by `kanal partner add` and `POST /snap/admin/partners`, so both refuse
the same things with the same words.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from bank_adapters.snap import protocol, store
from schemas.callbacks import DOT_SEGMENT_PARTNER_IDS

PROFILE_FALLBACK = "generic"
TIMESTAMP_TOLERANCE_S_MAX = 86_400


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    bank_name: str
    bank_code: str
    partner_id: str
    channel_id: str
    service_id: str
    padding: str
    encoding: str
    timestamp_tolerance_s: int


def profiles() -> dict[str, Profile]:
    """The built-in profiles shipped in profiles/*.json, by name."""
    folder = resources.files("bank_adapters.snap") / "profiles"
    found: dict[str, Profile] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            profile = Profile(**json.loads(entry.read_text(encoding="utf-8")))
            found[profile.name] = profile
    return found


def profile_for(partner_id: str, name: str | None = None) -> Profile:
    """The named profile, else the one built for this partner id, else the generic one."""
    known = profiles()
    if name:
        if name not in known:
            raise RegistrationError("profile", f"unknown profile {name!r}; built-in: {', '.join(sorted(known))}")
        return known[name]
    for profile in known.values():
        if profile.partner_id and profile.partner_id == partner_id:
            return profile
    return known[PROFILE_FALLBACK]


class RegistrationError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PartnerConflict(RegistrationError):
    """The partner id or client key is taken."""


_PARTNER_ID = re.compile(r"[A-Za-z0-9_.-]{1,36}")


@dataclass(frozen=True, slots=True)
class PartnerRequest:
    """What an operator gives; None means "take it from the profile"."""

    partner_id: str
    client_key: str
    public_key_pem: str
    channel_id: str | None = None
    service_id: str | None = None
    padding: str | None = None
    encoding: str | None = None
    timestamp_tolerance_s: int | None = None
    sandbox: bool | None = None
    requests_per_second_max: int | None = None
    profile: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> PartnerRequest:
        """From the ops API's JSON body (snake_case keys, as the CLI's options)."""
        if not isinstance(data, dict):
            raise RegistrationError("body", "must be a JSON object")
        known = set(cls.__dataclass_fields__) | {"public_key"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RegistrationError(unknown[0], f"unknown field; accepted: {', '.join(sorted(known))}")
        values = dict(data)
        if "public_key" in values:
            values["public_key_pem"] = values.pop("public_key")
        for required in ("partner_id", "client_key", "public_key_pem"):
            if not isinstance(values.get(required), str) or not values[required]:
                raise RegistrationError(required.removesuffix("_pem"), "is required (a non-empty string)")
        for name in ("timestamp_tolerance_s", "requests_per_second_max"):
            if values.get(name) is not None and (not isinstance(values[name], int) or isinstance(values[name], bool)):
                raise RegistrationError(name, "must be an integer")
        if values.get("sandbox") is not None and not isinstance(values["sandbox"], bool):
            raise RegistrationError("sandbox", "must be true, false or null")
        for name in ("channel_id", "service_id", "padding", "encoding", "profile"):
            if values.get(name) is not None and not isinstance(values[name], str):
                raise RegistrationError(name, "must be a string")
        return cls(**values)


async def register(pool: asyncpg.Pool, request: PartnerRequest, *, tolerance_default_s: int | None = None) -> store.Partner:
    """Validate, fill from the profile, insert; the result holds the new client secret."""
    if not _PARTNER_ID.fullmatch(request.partner_id):
        raise RegistrationError("partner_id", "must be 1 to 36 letters, digits, '_', '.' or '-'")
    if request.partner_id in DOT_SEGMENT_PARTNER_IDS:
        raise RegistrationError("partner_id", f"{request.partner_id!r} cannot be used: in a URL path it means a folder, not a partner")
    if not 1 <= len(request.client_key) <= 128:
        raise RegistrationError("client_key", "must be 1 to 128 characters")
    try:
        protocol.load_public_key(request.public_key_pem)
    except ValueError as error:
        raise RegistrationError("public_key", str(error)) from None
    profile = profile_for(request.partner_id, request.profile)
    channel_id = request.channel_id or profile.channel_id
    if not re.fullmatch(r"[0-9A-Za-z]{1,5}", channel_id):
        raise RegistrationError("channel_id", f"must be 1 to 5 letters or digits, got {channel_id!r}")
    padding = request.padding or profile.padding
    if padding not in protocol.PADDINGS:
        raise RegistrationError("padding", f"must be one of {', '.join(protocol.PADDINGS)}, got {padding!r}")
    encoding = request.encoding or profile.encoding
    if encoding not in protocol.ENCODINGS:
        raise RegistrationError("encoding", f"must be one of {', '.join(protocol.ENCODINGS)}, got {encoding!r}")
    try:
        partner_service_id = protocol.pad_partner_service_id(request.service_id or profile.service_id, padding)
    except ValueError as error:
        raise RegistrationError("service_id", str(error)) from None
    tolerance_s = request.timestamp_tolerance_s or tolerance_default_s or profile.timestamp_tolerance_s
    if not 1 <= tolerance_s <= TIMESTAMP_TOLERANCE_S_MAX:
        raise RegistrationError("timestamp_tolerance_s", f"must be 1 to {TIMESTAMP_TOLERANCE_S_MAX} seconds")
    if request.requests_per_second_max is not None and request.requests_per_second_max <= 0:
        raise RegistrationError("requests_per_second_max", "must be a positive integer")
    try:
        return await store.insert_partner(
            pool,
            partner_id=request.partner_id,
            client_key=request.client_key,
            public_key_pem=request.public_key_pem,
            channel_id=channel_id,
            partner_service_id=partner_service_id,
            padding=padding,
            signature_encoding=encoding,
            timestamp_tolerance_s=tolerance_s,
            sandbox=request.sandbox,
            requests_per_second_max=request.requests_per_second_max,
            bank_code=profile.bank_code,
            profile=profile.name,
        )
    except store.PartnerExists as error:
        raise PartnerConflict(error.field, str(error)) from None


def created_view(partner: store.Partner) -> dict[str, Any]:
    """What registration answers once: the public view plus the client secret."""
    return {**partner.public_view(), "client_secret": partner.client_secret}
