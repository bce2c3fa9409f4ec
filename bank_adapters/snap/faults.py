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

from bank_adapters.faults import (  # noqa: F401 - re-exported: the SNAP side's names
    MAGIC,
    MAGIC_CODE_PREFIX,
    Fault,
    InboundFaults,
    Plan,
    load_profile,
    magic_suffix,
    store_profile,
)
from bank_adapters.faults import plan as _plan


def magic_fault(body_text: str) -> tuple[Fault | None, str | None]:
    """The fault a magic value in this body orders, and the magic sen (to strip) if any."""
    try:
        body = json.loads(body_text)
    except (ValueError, RecursionError):  # RecursionError: nested too deep; validation names it
        return None, None
    if not isinstance(body, dict):
        return None, None
    fault = magic_suffix(body.get("customerNo"))
    if fault is not None:
        return fault, None
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
    fault, sen = magic_fault(body_text) if sandbox else (None, None)
    result = _plan(profile, fault, magic_latency_ms=magic_latency_ms, hold_ms_default=hold_ms_default, rng=rng)
    result.strip_sen = sen
    return result
