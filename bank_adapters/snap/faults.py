"""Inbound faults: failures an integrator orders to test its bank side.

Two ways to order one:

- a partner's profile (`kanal faults set --partner BANK ...`, or
  PUT /api/v1/partners/{id}/faults), each fault with a share of requests;
- magic values, for partners in sandbox mode: a payment whose paidAmount has
  the sen below ("150000.22"), or the reserved payment code 999999999NN (any
  of services 24, 25, 26).

    NN  fault                   what the bank sees
    11  latency                 the answer, magic_latency_ms late
    22  lost response           the payment IS posted; the connection is held
                                fault_hold_ms, then closed unanswered (ask service 26)
    33  timeout before commit   nothing is posted; the connection is held
                                fault_hold_ms, then closed unanswered
    55  server error            500xx00 General Error, nothing done
    66  too many requests       429xx00, nothing done
    44  wrong signature         the normal answer, with an X-SIGNATURE that does not verify

Faults apply to services 24, 25 and 26 after authentication, never to the
access token (73); an unauthenticated request gets no fault.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

MAGIC_CODE_PREFIX = "999999999"


class Fault(StrEnum):
    LATENCY = "latency"
    LOST_RESPONSE = "lost-response"
    TIMEOUT_BEFORE_COMMIT = "timeout-before-commit"
    SERVER_ERROR = "server-error"
    TOO_MANY_REQUESTS = "too-many-requests"
    WRONG_SIGNATURE = "wrong-signature"


MAGIC = {
    "11": Fault.LATENCY,
    "22": Fault.LOST_RESPONSE,
    "33": Fault.TIMEOUT_BEFORE_COMMIT,
    "55": Fault.SERVER_ERROR,
    "66": Fault.TOO_MANY_REQUESTS,
    "44": Fault.WRONG_SIGNATURE,
}


class InboundFaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_ms: int = Field(default=0, ge=0, le=60_000)
    lost_response_percent: int = Field(default=0, ge=0, le=100)
    timeout_before_commit_percent: int = Field(default=0, ge=0, le=100)
    server_error_percent: int = Field(default=0, ge=0, le=100)
    too_many_requests_percent: int = Field(default=0, ge=0, le=100)
    wrong_signature_percent: int = Field(default=0, ge=0, le=100)
    # How long an unanswered connection is held before it is closed; None: the adapter's fault_hold_ms.
    hold_ms: int | None = Field(default=None, ge=0, le=120_000)

    def is_empty(self) -> bool:
        return self == InboundFaults()


@dataclass(slots=True)
class Plan:
    """What happens to one exchange: the pre-commit fault (if any) and the
    post-commit ones."""

    before: Fault | None = None
    latency_ms: int = 0
    lost_response: bool = False
    wrong_signature: bool = False
    hold_ms: int = 0
    magic: bool = False
    strip_sen: str | None = None  # the magic sen to replace by "00" before validation

    @property
    def label(self) -> str | None:
        parts = [str(self.before)] if self.before else []
        if self.latency_ms:
            parts.append(str(Fault.LATENCY))
        if self.lost_response:
            parts.append(str(Fault.LOST_RESPONSE))
        if self.wrong_signature:
            parts.append(str(Fault.WRONG_SIGNATURE))
        if not parts:
            return None
        return ("magic:" if self.magic else "profile:") + ",".join(parts)


def _hit(percent: int, rng: random.Random) -> bool:
    return percent >= 100 or (percent > 0 and rng.randrange(100) < percent)


def magic_fault(body_text: str) -> tuple[Fault | None, str | None]:
    """The fault a magic value in this body orders, and the magic sen (to strip) if any."""
    try:
        body = json.loads(body_text)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code = body.get("customerNo")
    if isinstance(code, str) and len(code) == 11 and code.startswith(MAGIC_CODE_PREFIX) and code[-2:] in MAGIC:
        return MAGIC[code[-2:]], None
    paid = body.get("paidAmount")
    value = paid.get("value") if isinstance(paid, dict) else None
    if isinstance(value, str) and len(value) > 3 and value[-3] == "." and value[-2:] in MAGIC:
        return MAGIC[value[-2:]], value[-2:]
    return None, None


def strip_magic_sen(body_text: str, sen: str) -> str:
    """The body with the magic sen of paidAmount and totalAmount set to "00",
    so the rest of the checks see an ordinary amount."""
    try:
        body = json.loads(body_text)
    except ValueError:
        return body_text
    for key in ("paidAmount", "totalAmount"):
        amount = body.get(key)
        if isinstance(amount, dict) and isinstance(amount.get("value"), str) and amount["value"].endswith("." + sen):
            amount["value"] = amount["value"][:-2] + "00"
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def plan(
    profile: InboundFaults | None,
    body_text: str,
    *,
    sandbox: bool,
    magic_latency_ms: int,
    hold_ms_default: int,
    rng: random.Random | None = None,
) -> Plan:
    rng = rng or random.Random()
    result = Plan()
    profile = profile or InboundFaults()
    result.hold_ms = profile.hold_ms if profile.hold_ms is not None else hold_ms_default
    if sandbox:
        fault, sen = magic_fault(body_text)
        if fault is not None:
            result.magic = True
            result.strip_sen = sen
            if fault in (Fault.TIMEOUT_BEFORE_COMMIT, Fault.SERVER_ERROR, Fault.TOO_MANY_REQUESTS):
                result.before = fault
            elif fault is Fault.LATENCY:
                result.latency_ms = magic_latency_ms
            elif fault is Fault.LOST_RESPONSE:
                result.lost_response = True
            else:
                result.wrong_signature = True
            return result
    for percent, fault in (
        (profile.timeout_before_commit_percent, Fault.TIMEOUT_BEFORE_COMMIT),
        (profile.server_error_percent, Fault.SERVER_ERROR),
        (profile.too_many_requests_percent, Fault.TOO_MANY_REQUESTS),
    ):
        if _hit(percent, rng):
            result.before = fault
            break
    result.latency_ms = profile.latency_ms
    result.lost_response = _hit(profile.lost_response_percent, rng)
    result.wrong_signature = _hit(profile.wrong_signature_percent, rng)
    return result


async def load_profile(pool: asyncpg.Pool | asyncpg.Connection, partner_id: str) -> InboundFaults:
    text = await pool.fetchval("select profile::text from snap_faults where partner_id = $1", partner_id)
    return InboundFaults.model_validate_json(text) if text else InboundFaults()


async def store_profile(conn: asyncpg.Connection | asyncpg.Pool, partner_id: str, profile: InboundFaults) -> None:
    if profile.is_empty():
        await conn.execute("delete from snap_faults where partner_id = $1", partner_id)
        return
    await conn.execute(
        """insert into snap_faults (partner_id, profile) values ($1, $2::text::jsonb)
           on conflict (partner_id) do update set profile = excluded.profile, updated_at = now()""",
        partner_id,
        profile.model_dump_json(),
    )
