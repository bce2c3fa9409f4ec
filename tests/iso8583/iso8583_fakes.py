"""An in-memory PaymentsPort for the protocol-layer tests (no database).

It follows the port's documented behaviour: replays by key, reversal
tombstones, PAID_BILL for a second key on a paid bill. The end-to-end tests
use the real service and PostgreSQL instead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field

from bank_adapters.base import (
    BillDetail,
    InquiryOutcome,
    InquiryResult,
    PayCommand,
    PayOutcome,
    PayResult,
    ReverseCommand,
    ReverseOutcome,
    ReverseResult,
    StatusOutcome,
    StatusResult,
)


@dataclass
class FakePayments:
    bills: dict[str, int] = field(default_factory=dict)  # payment code -> amount
    expired: set[str] = field(default_factory=set)
    paid: dict[str, tuple[str, str]] = field(default_factory=dict)  # code -> (channel, key)
    payments: dict[tuple[str, str], PayCommand] = field(default_factory=dict)
    reversed: set[tuple[str, str]] = field(default_factory=set)
    delay_s: float = 0.0
    fail: bool = False
    posted: int = 0

    async def inquire(self, payment_code: str) -> InquiryResult:
        await self._pause()
        if payment_code not in self.bills:
            return InquiryResult(InquiryOutcome.UNKNOWN, payment_code)
        if payment_code in self.expired:
            return InquiryResult(InquiryOutcome.EXPIRED, payment_code)
        if payment_code in self.paid:
            return InquiryResult(InquiryOutcome.PAID, payment_code)
        amount = self.bills[payment_code]
        return InquiryResult(
            InquiryOutcome.OPEN, payment_code, amount, "PT Sungai Kapuas Jaya", "2025-06", dt.date(2025, 7, 15),
            (BillDetail("JKK", "Work accident", "Jaminan Kecelakaan Kerja", amount - 1000), BillDetail("JKM", "Death", "Jaminan Kematian", 1000)),
        )

    async def pay(self, command: PayCommand) -> PayResult:
        await self._pause()
        ident = (command.channel, command.idempotency_key)
        code = command.payment_code
        if ident in self.reversed:
            return PayResult(PayOutcome.REVERSED, code)
        if ident in self.payments:
            same = self.payments[ident]
            if (same.payment_code, same.amount_rupiah) != (code, command.amount_rupiah):
                return PayResult(PayOutcome.CONFLICT, code)
            return PayResult(PayOutcome.REPLAYED, code, command.amount_rupiah, payment_id=1)
        if code not in self.bills:
            return PayResult(PayOutcome.UNKNOWN_CODE, code)
        if code in self.expired:
            return PayResult(PayOutcome.EXPIRED, code)
        if code in self.paid:
            return PayResult(PayOutcome.PAID_BILL, code)
        if command.amount_rupiah != self.bills[code]:
            return PayResult(PayOutcome.WRONG_AMOUNT, code)
        self.payments[ident] = command
        self.paid[code] = ident
        self.posted += 1
        return PayResult(PayOutcome.POSTED, code, command.amount_rupiah, payment_id=1, payer_name="PT Sungai Kapuas Jaya")

    async def reverse(self, command: ReverseCommand) -> ReverseResult:
        await self._pause()
        ident = (command.channel, command.idempotency_key)
        if ident in self.reversed:
            return ReverseResult(ReverseOutcome.ALREADY_REVERSED if ident in self.payments else ReverseOutcome.UNKNOWN)
        self.reversed.add(ident)
        if ident not in self.payments:
            return ReverseResult(ReverseOutcome.UNKNOWN)
        payment = self.payments[ident]
        self.paid.pop(payment.payment_code, None)
        return ReverseResult(ReverseOutcome.REVERSED, 1, payment.payment_code, payment.amount_rupiah)

    async def status(self, channel: str, idempotency_key: str) -> StatusResult:
        await self._pause()
        ident = (channel, idempotency_key)
        if ident not in self.payments:
            return StatusResult(StatusOutcome.NOT_FOUND)
        payment = self.payments[ident]
        outcome = StatusOutcome.REVERSED if ident in self.reversed else StatusOutcome.POSTED
        return StatusResult(outcome, payment.payment_code, payment.amount_rupiah, 1)

    async def _pause(self) -> None:
        if self.fail:
            raise RuntimeError("database unavailable")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
