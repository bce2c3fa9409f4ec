"""The background loop of an append-only counter: deltas are written by the
transactions that change what is counted, and folded into totals by one
task per gateway process (coverage: migration 0020; callback deliveries and
attempts: migration 0022). Each fold is one transaction in PostgreSQL that
moves what it sums, one fold at a time across processes, so the counts read
are right before, during and after it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("kanal.folding")


async def fold_forever(fold: Callable[[int], Awaitable[int]], *, interval_ms: int, rows_max: int, failed_event: str) -> None:
    """Call `fold(rows_max)` every `interval_ms` milliseconds until cancelled,
    and at once again while a fold was full (a backlog). Any failed fold (the
    database gone, a session cut mid-statement: asyncpg raises more than its
    own error classes then) is logged as `failed_event` and tried again at the
    next interval: the deltas stay where they are and every count stays right
    meanwhile. Only a cancellation ends it."""
    while True:
        try:
            while await fold(rows_max) >= rows_max:
                pass
        except Exception as error:  # noqa: BLE001 - the folder must outlive any one fold
            log.warning(failed_event, error=repr(error))
        await asyncio.sleep(interval_ms / 1000)
