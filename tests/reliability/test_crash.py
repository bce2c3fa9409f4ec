"""Crashes under load: a gateway process killed with SIGKILL, PostgreSQL
restarted, while SNAP and ISO 8583 virtual banks pay and retry as their
protocols say. Afterwards every bill a bank believes paid is paid once, no
other is, and the ledger's invariants hold."""

from __future__ import annotations

import asyncio
import collections
import uuid

import aiohttp

from bank_adapters.iso8583.client import Iso8583Client
from bank_adapters.snap.client import SnapClient
from tests.conftest import BillFactory, TestClock
from tests.reliability.support import (
    GatewayProcess,
    Verdict,
    assert_exactly_once,
    iso_pay_until_known,
    register_partner,
    snap_pay_until_known,
)

SNAP_BANKS = 6
ISO_LINKS = 4
BILLS_PER_SNAP_BANK = 12
BILLS_PER_ISO_LINK = 12


async def make_bills(bill_factory, count: int):
    return [await bill_factory.create(workers=2) for _ in range(count)]


async def run_load(gateway: GatewayProcess, bill_factory, fault, *, answered_before_fault: int) -> list[Verdict]:
    """Run SNAP and ISO 8583 banks against `gateway`; call `fault()` once
    `answered_before_fault` bills have a definitive answer; return every verdict."""
    credentials = [await register_partner(gateway.url) for _ in range(SNAP_BANKS)]
    snap_bills = [await make_bills(bill_factory, BILLS_PER_SNAP_BANK) for _ in range(SNAP_BANKS)]
    iso_bills = [await make_bills(bill_factory, BILLS_PER_ISO_LINK) for _ in range(ISO_LINKS)]
    verdicts: list[Verdict] = []
    reached = asyncio.Event()

    def record(verdict: Verdict) -> None:
        verdicts.append(verdict)
        if len(verdicts) >= answered_before_fault:
            reached.set()

    async def snap_bank(creds, bills) -> None:
        async with SnapClient(gateway.url, creds, timeout_s=5, retries_max=0) as client:
            for bill in bills:
                record(await snap_pay_until_known(client, bill.payment_code, bill.total_rupiah, uuid.uuid4().hex))

    async def iso_link(index: int, bills) -> None:
        client = Iso8583Client("127.0.0.1", gateway.iso_port, timeout_ms=5000, reconnect_attempts_max=3)
        try:
            for n, bill in enumerate(bills):
                policy = "advice" if (index + n) % 2 == 0 else "reverse"
                record(await iso_pay_until_known(client, bill.payment_code, bill.total_rupiah, on_doubt=policy))
        finally:
            await client.close()

    async def inject() -> None:
        await reached.wait()
        await fault()

    banks = [asyncio.create_task(snap_bank(c, b)) for c, b in zip(credentials, snap_bills, strict=True)]
    banks += [asyncio.create_task(iso_link(i, b)) for i, b in enumerate(iso_bills)]
    injector = asyncio.create_task(inject())
    try:
        await asyncio.gather(*banks)
        await injector
    finally:
        for task in [*banks, injector]:
            task.cancel()
    print("verdicts (paid, final code, retried):", collections.Counter((v.paid, v.final_code, v.uncertain_answers > 0) for v in verdicts))
    assert len(verdicts) == SNAP_BANKS * BILLS_PER_SNAP_BANK + ISO_LINKS * BILLS_PER_ISO_LINK
    return verdicts


def assert_banks_settled(verdicts: list[Verdict]) -> None:
    """A SNAP bank or an advising ISO 8583 bank insists until paid; a reversing
    one either was answered 00 at once or got its reversal approved."""
    for verdict in verdicts:
        if verdict.final_code.startswith("20"):  # SNAP 2002500 / 2002600
            assert verdict.paid, verdict
        else:
            assert verdict.final_code == "00", verdict
    assert any(v.paid for v in verdicts)


async def test_kill_9_under_load_loses_nothing_and_posts_nothing_twice(gateway_process, pool, clock):
    first = await gateway_process().start_ready()
    second = gateway_process(http_port=first.http_port, iso_port=first.iso_port)

    async def crash_and_replace() -> None:
        first.kill9()
        # Clients meanwhile find the port closed and keep retrying.
        await second.start_ready()

    total = SNAP_BANKS * BILLS_PER_SNAP_BANK + ISO_LINKS * BILLS_PER_ISO_LINK
    verdicts = await run_load(first, BillFactory(pool, clock), crash_and_replace, answered_before_fault=total // 3)

    assert first.process.returncode == -9
    # The crash was felt: some banks had to retry, advise or reverse.
    assert sum(v.uncertain_answers for v in verdicts) > 0
    # Every bill got an answer, most of them paid; reversals are the banks' choice.
    assert_banks_settled(verdicts)
    await assert_exactly_once(pool, verdicts)


async def test_postgresql_restart_mid_load_gateway_recovers_without_restart(gateway_process, private_postgres):
    import asyncpg

    from gateway.store import database

    pool = await database.create_pool(private_postgres.url, size_min=1, size_max=4)
    gateway = await gateway_process(database_url=private_postgres.url).start_ready()
    seen_while_down: list[int] = []

    async def restart_postgres() -> None:
        await asyncio.to_thread(private_postgres.stop, "fast")
        async with aiohttp.ClientSession() as session:
            async with session.get(gateway.url + "/readyz") as response:
                seen_while_down.append(response.status)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(private_postgres.start)

    try:
        total = SNAP_BANKS * BILLS_PER_SNAP_BANK + ISO_LINKS * BILLS_PER_ISO_LINK
        verdicts = await run_load(gateway, BillFactory(pool, TestClock()), restart_postgres, answered_before_fault=total // 3)
        # The same process served before, during and after: no restart.
        assert gateway.process.poll() is None and gateway.starts == 1
        assert seen_while_down == [503]
        await gateway.wait_ready()
        # In-flight requests got retriable answers (SNAP 5xx, ISO 8583 68/96, or no
        # answer), never a refusal, and the banks' retries settled every bill.
        seen = collections.Counter(code for v in verdicts for code in v.retriable_seen)
        print("retriable answers while PostgreSQL restarted:", seen)
        assert set(seen) <= {"no-answer", "96", "68"} | {c for c in seen if c[:1] == "5" and len(c) == 7}
        assert any(code != "no-answer" for code in seen), "the gateway answered nobody while PostgreSQL was down"
        assert_banks_settled(verdicts)
        await pool.expire_connections()
        await assert_exactly_once(pool, verdicts)
        # Nothing half-posted: every payment has its balanced entry, every entry its payment.
        half = await pool.fetch(
            """select p.id from payments p left join journal_entries j on j.payment_id = p.id and j.kind = 'payment'
                where j.id is null"""
        )
        assert half == []
    finally:
        gateway.stop()
        try:
            await pool.close()
        except (asyncpg.InterfaceError, OSError):
            pool.terminate()
