"""Inbound faults: failures an integrator orders to test its bank side, shared
by every adapter.

A partner's profile (`kanal faults set --partner ID ...`, or
PUT /api/v1/partners/{id}/faults) gives each fault a share of requests; magic
values (each adapter decides where they sit: a SNAP amount's sen, a reserved
payment code, an ISO 8583 RRN) order one fault for one request, for partners in
sandbox mode. The two-digit magic suffixes are the same on every channel:

    NN  fault
    11  latency                 the answer, late
    22  lost response           the request IS processed (a payment posted); no answer
    33  timeout before commit   nothing is done; no answer
    44  wrong signature         the normal answer, which the bank cannot verify
    55  server error            the channel's "system malfunction"; nothing done
    66  too many requests       the channel's "busy, try later"; nothing done

How each channel renders these (HTTP 500 versus ISO 8583 code 96, a held
connection versus a message never answered on a live link) is documented with
the adapter: docs/callbacks.md.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from bank_adapters.grouping import MicroBatcher, settle, settle_all

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

# Faults that stop the request before anything is done.
BEFORE_COMMIT = (Fault.TIMEOUT_BEFORE_COMMIT, Fault.SERVER_ERROR, Fault.TOO_MANY_REQUESTS)


class InboundFaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_ms: int = Field(default=0, ge=0, le=60_000)
    lost_response_percent: int = Field(default=0, ge=0, le=100)
    timeout_before_commit_percent: int = Field(default=0, ge=0, le=100)
    server_error_percent: int = Field(default=0, ge=0, le=100)
    too_many_requests_percent: int = Field(default=0, ge=0, le=100)
    wrong_signature_percent: int = Field(default=0, ge=0, le=100)
    # How long an unanswered connection is held before it is closed; None: the
    # adapter's fault_hold_ms. (An ISO 8583 link is never closed for a fault.)
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
    strip_sen: str | None = None  # SNAP: the magic sen to replace by "00" before validation

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


def magic_suffix(value: object) -> Fault | None:
    """The fault a reserved payment code (999999999NN) orders, if it is one."""
    if isinstance(value, str) and len(value) == 11 and value.startswith(MAGIC_CODE_PREFIX):
        return MAGIC.get(value[-2:])
    return None


# One generator for the process: seeding a new one per request reads the OS's
# entropy every time. Tests pass their own seeded `rng`.
_RNG = random.Random()


def _hit(percent: int, rng: random.Random) -> bool:
    return percent >= 100 or (percent > 0 and rng.randrange(100) < percent)


def plan(
    profile: InboundFaults | None,
    magic: Fault | None,
    *,
    magic_latency_ms: int,
    hold_ms_default: int,
    rng: random.Random | None = None,
) -> Plan:
    """One exchange's plan: a magic value (already found by the adapter, and
    only for sandbox partners) wins over the profile."""
    rng = rng or _RNG
    result = Plan()
    profile = profile or InboundFaults()
    result.hold_ms = profile.hold_ms if profile.hold_ms is not None else hold_ms_default
    if magic is not None:
        result.magic = True
        if magic in BEFORE_COMMIT:
            result.before = magic
        elif magic is Fault.LATENCY:
            result.latency_ms = magic_latency_ms
        elif magic is Fault.LOST_RESPONSE:
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
    text = await pool.fetchval("select profile::text from partner_inbound_faults where partner_id = $1", partner_id)
    return InboundFaults.model_validate_json(text) if text else InboundFaults()


class ProfileReader(MicroBatcher):
    """The partners' inbound fault profiles for concurrent messages, read in
    one statement per group (a round trip costs PostgreSQL more than the
    primary-key lookup it carries). A read is made after the call, so each
    call sees every profile committed before it, as a read of its own would.
    Limits, with units: `reads_per_group_max`, `groups_in_flight_max`."""

    task_name = "kanal-fault-profiles"

    def __init__(self, pool: asyncpg.Pool, *, reads_per_group_max: int = 128, groups_in_flight_max: int = 2) -> None:
        super().__init__(group_size_max=reads_per_group_max, group_wait_ms=0, groups_in_flight_max=groups_in_flight_max)
        self.pool = pool

    async def read(self, partner_id: str) -> InboundFaults:
        return await self._submit(partner_id)

    async def _execute(self, group: list[tuple]) -> None:
        try:
            rows = await self.pool.fetch(
                "select partner_id, profile::text as profile from partner_inbound_faults where partner_id = any($1::text[])",
                list({partner_id for partner_id, _ in group}),
            )
        except BaseException as error:  # every waiter hears the outcome
            settle_all((future for _, future in group), error)
            if not isinstance(error, Exception):
                raise
            return
        texts = {row["partner_id"]: row["profile"] for row in rows}
        profiles: dict[str, InboundFaults | Exception] = {}
        for partner_id, future in group:
            if partner_id not in profiles:
                text = texts.get(partner_id)
                try:
                    profiles[partner_id] = InboundFaults.model_validate_json(text) if text else InboundFaults()
                except Exception as error:  # noqa: BLE001 - handed to the caller, as load_profile raises it
                    profiles[partner_id] = error
            found = profiles[partner_id]
            if isinstance(found, Exception):
                settle(future, error=found)
            else:
                settle(future, result=found)


async def store_profile(conn: asyncpg.Connection | asyncpg.Pool, partner_id: str, profile: InboundFaults) -> None:
    if profile.is_empty():
        await conn.execute("delete from partner_inbound_faults where partner_id = $1", partner_id)
        return
    await conn.execute(
        """insert into partner_inbound_faults (partner_id, profile) values ($1, $2::text::jsonb)
           on conflict (partner_id) do update set profile = excluded.profile, updated_at = now()""",
        partner_id,
        profile.model_dump_json(),
    )
