"""Fixtures for the ops tests: a small paid ledger, and a way to corrupt it
the way someone with database access would (triggers off for one transaction)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest

from bank_adapters.base import PayCommand, PayOutcome, ReverseCommand

ADMIN = {"Authorization": "Bearer adm_test_token"}


@dataclass
class PaidLedger:
    payments: list  # PayResult of the standing payments
    reversed_payment_id: int
    bills: list


@pytest.fixture
async def paid_ledger(payments, bills) -> PaidLedger:
    """Three paid bills on two channels, and a fourth paid then reversed."""
    infos = [await bills.create(workers=2 + i, regency_code=code) for i, code in enumerate(("6171", "6101", "6104", "6171"))]
    results = []
    for n, info in enumerate(infos):
        channel = "snap:BANKKALBAR" if n % 2 == 0 else "iso8583:123"
        result = await payments.pay(PayCommand(info.payment_code, info.total_rupiah, channel, f"key-{n}", f"REF{n:06d}"))
        assert result.outcome == PayOutcome.POSTED
        results.append(result)
    reversed_result = await payments.reverse(ReverseCommand("iso8583:123", "key-3"))
    assert reversed_result.payment_id == results[3].payment_id
    return PaidLedger(results[:3], results[3].payment_id, infos)


@contextlib.asynccontextmanager
async def tampering(pool):
    """A connection with every user trigger off (append-only, balance, bill
    total): what an attacker or a careless hand-written fix can do."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("set local session_replication_role = replica")
        yield conn
