"""Group commit for payments.

Concurrent `pay` calls are gathered into micro-batches. A batch is one call
of `kanal_pay_batch` (migration 0018) and therefore one transaction and one
WAL flush, while each item is still decided on its own, with the same
constraints and locks as alone. Each caller gets its own row back.

Why this is still exactly-once (docs/ledger.md has the long form):
- every guarantee lives in the database (unique indexes, the bill row lock,
  the balance triggers), not in the batcher; a batch only shares a commit;
- the batch answers exactly what `kanal_pay` applied to the items one after
  the other would: the items nothing else in the batch can affect are
  written together, set-based, and every other one (a second request for
  the same key or bill, a retry...) goes through `kanal_pay` after them, so
  it sees their rows and answers `replayed` / `paid_bill`;
- items are sorted by payment code, and bills are locked in that order, so
  any two batches (in this process or another) lock bills in the same order
  and cannot deadlock on them;
- if a batch fails as a whole (a fault, not an outcome: outcomes are rows),
  nothing of it committed, and each of its items is retried alone, so one
  poisonous item fails only itself.

Limits, with units: `batch_size_max` items per batch, `batch_wait_ms` waited
for stragglers only while another batch is in flight (an idle gateway adds no
delay), `batches_in_flight_max` batches writing at once per process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable

import asyncpg

from bank_adapters.base import PayCommand
from bank_adapters.grouping import MicroBatcher, settle, settle_all

_BATCH_SQL = """
select * from kanal_pay_batch($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[])
 order by n
"""

_ONE_SQL = "select * from kanal_pay($1, $2, $3, $4, $5, $6)"

Item = tuple[PayCommand, dt.datetime, asyncio.Future]


class PostingBatcher(MicroBatcher):
    task_name = "kanal-posting-batcher"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        batch_size_max: int = 64,
        batch_wait_ms: int = 1,
        batches_in_flight_max: int = 2,
        on_batch: Callable[[float, int], None] | None = None,
    ) -> None:
        super().__init__(
            group_size_max=batch_size_max, group_wait_ms=batch_wait_ms, groups_in_flight_max=batches_in_flight_max
        )
        self.pool = pool
        self.batch_size_max = batch_size_max
        self.batch_wait_ms = batch_wait_ms
        self.batches_in_flight_max = batches_in_flight_max
        self.on_batch = on_batch
        self.batches = 0
        self.items = 0

    async def submit(self, command: PayCommand, now: dt.datetime) -> asyncpg.Record:
        return await self._submit(command, now)

    async def _execute(self, batch: list[Item]) -> None:
        # A fixed lock order across batches: bills are locked in code order.
        batch.sort(key=lambda item: (item[0].payment_code, item[0].channel, item[0].idempotency_key))
        started = time.perf_counter()
        try:
            rows = await self.pool.fetch(
                _BATCH_SQL,
                [c.channel for c, _, _ in batch],
                [c.idempotency_key for c, _, _ in batch],
                [c.payment_code for c, _, _ in batch],
                [c.amount_rupiah for c, _, _ in batch],
                [c.bank_reference for c, _, _ in batch],
                [now for _, now, _ in batch],
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            if len(batch) == 1:
                settle(batch[0][2], error=error)
                return
            # Nothing of the batch committed: decide each item alone.
            await asyncio.gather(*(self._execute_one(item) for item in batch))
            return
        except BaseException as error:  # cancellation: nobody may wait forever
            settle_all((future for _, _, future in batch), error)
            raise
        self.batches += 1
        self.items += len(batch)
        if self.on_batch is not None:
            self.on_batch(time.perf_counter() - started, len(batch))
        for (_, _, future), row in zip(batch, rows, strict=True):
            settle(future, result=row)

    async def _execute_one(self, item: Item) -> None:
        command, now, future = item
        try:
            row = await self.pool.fetchrow(
                _ONE_SQL, command.channel, command.idempotency_key, command.payment_code,
                command.amount_rupiah, command.bank_reference, now,
            )
        except Exception as error:  # noqa: BLE001 - handed to the caller
            settle(future, error=error)
            return
        settle(future, result=row)
