"""The port every bank adapter speaks.

A bank adapter turns a bank's wire messages (SNAP BI JSON over HTTP, ISO 8583
over TCP, anything else) into the neutral commands below, hands them to a
`PaymentsPort`, and renders the neutral results back in the bank's own codes.
Nothing here knows a wire format, and adapters import nothing from `gateway`:
a third party can write an adapter against this module alone (see
docs/adapters.md).

Money is a whole number of rupiah in an `int`, never a float.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    import asyncpg
    from aiohttp import web

ENTRY_POINT_GROUP = "kanal.bank_adapters"

T = TypeVar("T")


# --- Inquiry -----------------------------------------------------------------


class InquiryOutcome(enum.StrEnum):
    OPEN = "open"  # payable now: amount_rupiah is what must be paid, in full
    UNKNOWN = "unknown"  # no bill has this payment code
    EXPIRED = "expired"  # the bill can no longer be paid through this code
    PAID = "paid"  # already paid


@dataclass(frozen=True, slots=True)
class BillDetail:
    """One line of what is owed, summed per program (or late fee)."""

    code: str  # "JKK", "JKM", "JHT", "JP", "JKP" or "DENDA" (late fee)
    label_english: str
    label_indonesia: str
    amount_rupiah: int


@dataclass(frozen=True, slots=True)
class InquiryResult:
    outcome: InquiryOutcome
    payment_code: str
    amount_rupiah: int = 0
    payer_name: str = ""
    period: str = ""  # YYYY-MM
    due_date: dt.date | None = None
    details: tuple[BillDetail, ...] = ()


# --- Payment -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PayCommand:
    """Pay a bill in full. (channel, idempotency_key) identifies the request:
    the same pair with the same amount answers the original result again."""

    payment_code: str
    amount_rupiah: int
    channel: str  # e.g. "snap:BANKKALBAR" or "iso8583:123"
    idempotency_key: str
    bank_reference: str = ""
    # The inquiry this payment follows, when the protocol links them (SNAP's
    # inquiryRequestId). Empty when unknown.
    inquiry_reference: str = ""


class PayOutcome(enum.StrEnum):
    POSTED = "posted"  # committed now
    REPLAYED = "replayed"  # committed earlier under the same key and amount
    PAID_BILL = "paid_bill"  # the bill was already paid by another request
    WRONG_AMOUNT = "wrong_amount"  # partial and over-payments are refused
    UNKNOWN_CODE = "unknown_code"
    EXPIRED = "expired"
    CONFLICT = "conflict"  # same key, different amount or bill: never posted
    REVERSED = "reversed"  # this key was reversed before (or before it came)


@dataclass(frozen=True, slots=True)
class PayResult:
    outcome: PayOutcome
    payment_code: str
    amount_rupiah: int = 0
    payment_id: int | None = None
    journal_entry_id: int | None = None
    posted_at: dt.datetime | None = None
    payer_name: str = ""
    details: tuple[BillDetail, ...] = ()
    # The bill's, as InquiryResult has them; set when the payment succeeded.
    period: str = ""  # YYYY-MM
    due_date: dt.date | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome in (PayOutcome.POSTED, PayOutcome.REPLAYED)


# --- Reversal and status -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReverseCommand:
    channel: str
    idempotency_key: str  # the key of the payment to undo
    reason: str = ""


class ReverseOutcome(enum.StrEnum):
    REVERSED = "reversed"  # undone now
    ALREADY_REVERSED = "already_reversed"  # undone earlier; nothing posted now
    UNKNOWN = "unknown"  # no such payment: answered so the bank can clear its side, nothing posted


@dataclass(frozen=True, slots=True)
class ReverseResult:
    outcome: ReverseOutcome
    payment_id: int | None = None
    payment_code: str = ""
    amount_rupiah: int = 0


class StatusOutcome(enum.StrEnum):
    POSTED = "posted"
    REVERSED = "reversed"
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class StatusResult:
    outcome: StatusOutcome
    payment_code: str = ""
    amount_rupiah: int = 0
    payment_id: int | None = None
    posted_at: dt.datetime | None = None
    reversed_at: dt.datetime | None = None
    bank_reference: str = ""


@runtime_checkable
class PaymentsPort(Protocol):
    """What the gateway offers every adapter. Each call is one transaction."""

    async def inquire(self, payment_code: str) -> InquiryResult: ...

    async def pay(self, command: PayCommand) -> PayResult: ...

    async def reverse(self, command: ReverseCommand) -> ReverseResult: ...

    async def status(self, channel: str, idempotency_key: str) -> StatusResult: ...


# --- The adapter contract ----------------------------------------------------


@dataclass(slots=True)
class AdapterContext:
    """What an adapter receives when it starts.

    `pool` is for the adapter's own tables (declared by `migrations_dir`,
    applied by the gateway with its own migrations); money moves only through
    `payments`. `settings` is the adapter's section of the configuration
    (`KANAL_ADAPTERS__<NAME>__<KEY>` environment variables), strings as given.
    """

    payments: PaymentsPort
    pool: asyncpg.Pool
    settings: Mapping[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"
    sandbox: bool = False
    # Bearer token guarding the adapter's administrative routes (partner
    # registration); never logged.
    admin_token: str = ""
    # Anything else the gateway chooses to lend (metrics registry, event hooks).
    extras: dict[str, Any] = field(default_factory=dict)


class BankAdapter(Protocol):
    """A bank adapter plugin.

    `name` is unique and becomes the mount point of `http_app` (`/<name>`).
    `start` opens what the adapter serves outside HTTP (a TCP listener) and
    `stop` closes it; both may do nothing.
    """

    name: str
    migrations_dir: Path | None

    def http_app(self, context: AdapterContext) -> web.Application | None: ...

    async def start(self, context: AdapterContext) -> None: ...

    async def stop(self) -> None: ...


class AdapterSettingsError(ValueError):
    """An adapter setting that cannot be used: start-up stops with this
    message, which names the setting and what it accepts. `key` is the
    setting's name in the adapter's section (KANAL_ADAPTERS__<NAME>__<KEY>);
    the gateway fills in `adapter` when the adapter leaves it out."""

    def __init__(self, message: str, *, key: str | None = None, adapter: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.adapter = adapter

    @property
    def environment_variable(self) -> str | None:
        if not (self.key and self.adapter):
            return None
        return f"KANAL_ADAPTERS__{self.adapter.upper()}__{self.key.upper()}"


class CliServices(Protocol):
    """Handed to adapter CLI commands as `click.Context.obj`.

    An adapter may expose `cli_commands() -> list[click.Command]`; the `kanal`
    CLI adds them. `run_with_pool` runs `fn(pool)` against the configured
    database (embedded or DATABASE_URL), migrated, and returns its result;
    it works whether or not a gateway is serving.
    """

    def run_with_pool(self, fn: Callable[[asyncpg.Pool], Awaitable[T]]) -> T: ...
