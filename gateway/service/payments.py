"""The neutral payments service: inquire, pay, reverse, status.

Each call is one database transaction. Exactly-once rests on the database,
not on memory, so any number of gateway processes may share one PostgreSQL:
- `payments (channel, idempotency_key)` is unique: a key posts at most once;
- `payments_one_standing_per_bill` is unique: a bill has at most one standing
  payment, whatever the keys;
- the bill row is locked (`FOR UPDATE`) while a payment for it is decided, so
  200 concurrent payments of one bill queue on that bill only, never on the
  shared clearing or fund accounts (postings are append-only inserts: see
  docs/ledger.md).

Payments are posted in micro-batches (group commit, `PostingBatcher`): one
statement and one commit for every payment that arrived while the previous
batch was being written, each still decided on its own, as `kanal_pay`
(migrations 0002, 0010, 0018) would alone, and answered with its own result
(`kanal_pay_batch`, migration 0018).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import asyncpg

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
from gateway.store import ledger
from gateway.store.batching import PostingBatcher

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_LABELS = {
    "JKK": ("Work accident protection (JKK)", "Jaminan Kecelakaan Kerja (JKK)"),
    "JKM": ("Death benefit (JKM)", "Jaminan Kematian (JKM)"),
    "JHT": ("Old-age savings (JHT)", "Jaminan Hari Tua (JHT)"),
    "JP": ("Pension (JP)", "Jaminan Pensiun (JP)"),
    "JKP": ("Job-loss protection (JKP)", "Jaminan Kehilangan Pekerjaan (JKP)"),
    "DENDA": ("Late payment fee", "Denda keterlambatan"),
}


def bill_detail(code: str, amount_rupiah: int) -> BillDetail:
    english, indonesia = _LABELS[code]
    return BillDetail(code=code, label_english=english, label_indonesia=indonesia, amount_rupiah=amount_rupiah)


# The payer's name by key (subqueries, not joins: a plan cached while the
# participants table was small must not read it whole for every inquiry).
_BILL_SQL = """
    select b.id, b.payment_code, b.npp, b.kind, b.period, b.due_date, b.expires_at, b.total_rupiah, b.status,
           coalesce((select p.name from participants p where p.id = b.participant_id),
                    (select e.name from employers e where e.npp = b.npp)) as payer_name
      from bills b
     where b.payment_code = $1
"""


class PaymentsService:
    """Implements `bank_adapters.base.PaymentsPort` on PostgreSQL."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        clock: Clock = utc_now,
        *,
        batch_size_max: int = 64,
        batch_wait_ms: int = 1,
        batches_in_flight_max: int = 2,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.batcher = PostingBatcher(
            pool,
            batch_size_max=batch_size_max,
            batch_wait_ms=batch_wait_ms,
            batches_in_flight_max=batches_in_flight_max,
            on_batch=lambda seconds, size: self._observe_batch(seconds, size),
        )
        # Called after every operation with (operation, seconds, outcome):
        # metrics and the conformance log hang here. Observers must not raise.
        self.observers: list[Callable[[str, float, str], None]] = []

    def _observe_batch(self, seconds: float, size: int) -> None:
        for observer in self.observers:
            observer("pay_batch", seconds, str(size))

    def _observe(self, operation: str, started: float, outcome: str) -> None:
        elapsed = time.perf_counter() - started
        for observer in self.observers:
            observer(operation, elapsed, outcome)

    # ------------------------------------------------------------- inquire --

    async def inquire(self, payment_code: str) -> InquiryResult:
        async with self.pool.acquire() as conn:
            bill = await conn.fetchrow(_BILL_SQL, payment_code)
            if bill is None:
                return InquiryResult(InquiryOutcome.UNKNOWN, payment_code)
            details = await self._details(conn, bill["id"])
        outcome = InquiryOutcome.OPEN
        if bill["status"] == "paid":
            outcome = InquiryOutcome.PAID
        elif bill["expires_at"] <= self.clock():
            outcome = InquiryOutcome.EXPIRED
        return InquiryResult(
            outcome=outcome,
            payment_code=payment_code,
            amount_rupiah=bill["total_rupiah"],
            payer_name=bill["payer_name"],
            period=bill["period"],
            due_date=bill["due_date"],
            details=details,
        )

    @staticmethod
    async def _details(conn: asyncpg.Connection, bill_id: int) -> tuple[BillDetail, ...]:
        # The same summary kanal_pay answers with (migration 0002).
        rows = await conn.fetchval("select kanal_bill_details($1)", bill_id)
        return tuple(bill_detail(code, amount) for code, amount in rows)

    # ----------------------------------------------------------------- pay --

    async def pay(self, command: PayCommand) -> PayResult:
        if command.amount_rupiah <= 0:
            return PayResult(PayOutcome.WRONG_AMOUNT, command.payment_code, command.amount_rupiah)
        started = time.perf_counter()
        row = await self.batcher.submit(command, self.clock())
        result = PayResult(
            outcome=PayOutcome(row["outcome"]),
            payment_code=command.payment_code,
            amount_rupiah=row["amount_rupiah"],
            payment_id=row["payment_id"],
            journal_entry_id=row["entry_id"],
            posted_at=row["posted_at"],
            payer_name=row["payer_name"] or "",
            details=tuple(bill_detail(code, amount) for code, amount in (row["details"] or [])),
            # From the bill row the posting reads anyway (migration 0025): no extra query.
            period=row["period"] or "",
            due_date=row["due_date"],
        )
        self._observe("pay", started, str(result.outcome))
        return result

    async def close(self) -> None:
        await self.batcher.drain()

    # ------------------------------------------------------------- reverse --

    async def reverse(self, command: ReverseCommand) -> ReverseResult:
        now = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            # The key's lock, shared with kanal_pay (migration 0010): a payment
            # of this key still being written commits before we look for it.
            await conn.execute(
                "select pg_advisory_xact_lock(hashtext($1), hashtext($2))", command.channel, command.idempotency_key
            )
            payment = await conn.fetchrow(
                """select id, bill_id, payment_code, amount_rupiah, status
                     from payments where channel = $1 and idempotency_key = $2 for update""",
                command.channel,
                command.idempotency_key,
            )
            if payment is None:
                # Answered so the bank can clear its side; remembered so that
                # the payment, should it arrive late, is declined.
                await conn.execute(
                    """insert into reversal_tombstones (channel, idempotency_key) values ($1, $2)
                       on conflict do nothing""",
                    command.channel,
                    command.idempotency_key,
                )
                return ReverseResult(ReverseOutcome.UNKNOWN)
            if payment["status"] == "reversed":
                return ReverseResult(
                    ReverseOutcome.ALREADY_REVERSED, payment["id"], payment["payment_code"], payment["amount_rupiah"]
                )
            await ledger.reverse_payment(conn, payment, now, command.reason)
        return ReverseResult(ReverseOutcome.REVERSED, payment["id"], payment["payment_code"], payment["amount_rupiah"])

    # -------------------------------------------------------------- status --

    async def status(self, channel: str, idempotency_key: str) -> StatusResult:
        row = await self.pool.fetchrow(
            """select id, payment_code, amount_rupiah, status, posted_at, reversed_at, bank_reference
                 from payments where channel = $1 and idempotency_key = $2""",
            channel,
            idempotency_key,
        )
        if row is None:
            return StatusResult(StatusOutcome.NOT_FOUND)
        return StatusResult(
            outcome=StatusOutcome.POSTED if row["status"] == "posted" else StatusOutcome.REVERSED,
            payment_code=row["payment_code"],
            amount_rupiah=row["amount_rupiah"],
            payment_id=row["id"],
            posted_at=row["posted_at"],
            reversed_at=row["reversed_at"],
            bank_reference=row["bank_reference"],
        )
