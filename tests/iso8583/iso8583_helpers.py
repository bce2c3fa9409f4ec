"""Helpers shared by the ISO 8583 end-to-end tests."""

from __future__ import annotations

import asyncio

import asyncpg

from bank_adapters.base import AdapterContext, PaymentsPort
from bank_adapters.iso8583 import Iso8583Adapter, adapter_factory


async def posted_count(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("select count(*) from payments where status = 'posted'")


async def journal_count(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("select count(*) from journal_entries")


async def start_adapter(
    gateway_server, settings: dict | None = None, payments: PaymentsPort | None = None
) -> Iso8583Adapter:
    """A second ISO 8583 adapter on the gateway's database, with its own settings
    (the gateway's own adapter runs the defaults)."""
    adapter = adapter_factory()
    context = AdapterContext(
        payments=payments or gateway_server.payments,
        pool=gateway_server.pool,
        settings={"port": "0", **(settings or {})},
    )
    await adapter.start(context)
    return adapter


class SlowPayments:
    """The real service behind a delay, as a loaded database would be."""

    def __init__(self, inner: PaymentsPort, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    async def inquire(self, payment_code):
        await asyncio.sleep(self.delay_s)
        return await self.inner.inquire(payment_code)

    async def pay(self, command):
        await asyncio.sleep(self.delay_s)
        return await self.inner.pay(command)

    async def reverse(self, command):
        await asyncio.sleep(self.delay_s)
        return await self.inner.reverse(command)

    async def status(self, channel, key):
        await asyncio.sleep(self.delay_s)
        return await self.inner.status(channel, key)


class BrokenPayments:
    """A service whose database is gone."""

    async def inquire(self, payment_code):
        raise ConnectionResetError("database connection lost")

    pay = reverse = inquire

    async def status(self, channel, key):
        raise ConnectionResetError("database connection lost")
