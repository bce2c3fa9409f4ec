"""`kanal serve --workers 2`: two gateway processes share the HTTP and ISO 8583
ports (SO_REUSEPORT) and one PostgreSQL. The exactly-once scenarios run with
their requests spread over both processes: idempotency lives in the database,
so it must not matter which process a request reaches."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import psutil
import pytest

from bank_adapters.iso8583.client import Iso8583Client
from bank_adapters.snap.client import PAYMENT_PATH, SnapClient, new_external_id
from tests.conftest import BillFactory
from tests.integration.ledger_checks import assert_ledger_invariants
from tests.reliability.support import assert_kanal_check_clean, register_partner


@pytest.fixture
async def two_workers(gateway_process):
    gateway = gateway_process(workers=2)
    await gateway.start_ready()
    parent = psutil.Process(gateway.process.pid)
    children = parent.children()
    assert len(children) == 2
    yield gateway, children


class ServedBy:
    """Samples which gateway processes hold connections on the shared ports."""

    def __init__(self, children: list[psutil.Process], ports: set[int]) -> None:
        self.children = children
        self.ports = ports
        self.pids: set[int] = set()

    def sample(self) -> None:
        for child in self.children:
            connections = child.net_connections(kind="tcp")
            if any(c.status == psutil.CONN_ESTABLISHED and c.laddr.port in self.ports for c in connections):
                self.pids.add(child.pid)

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            await asyncio.sleep(0.005)


async def spread(children, ports, *work):
    """Run `work` while sampling; return the results and the pids that served."""
    served = ServedBy(children, ports)
    stop = asyncio.Event()
    watcher = asyncio.create_task(served.watch(stop))
    try:
        results = await asyncio.gather(*work)
    finally:
        stop.set()
        await watcher
    return results, served.pids


async def connect_links(children, port: int, minimum: int) -> tuple[list[Iso8583Client], set[int]]:
    """At least `minimum` persistent ISO 8583 links, more until both processes
    hold some: the kernel places each connection by hash, so a handful may all
    land on one process. Returns the links and the pids seen holding them."""
    held = ServedBy(children, {port})
    links: list[Iso8583Client] = []
    while len(links) < minimum or (len(held.pids) < len(children) and len(links) < 60):
        link = Iso8583Client("127.0.0.1", port)
        await link.connect()
        links.append(link)
        held.sample()
    return links, held.pids


def fresh_session() -> aiohttp.ClientSession:
    # One connection per request: each request is a new 4-tuple for SO_REUSEPORT to place.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0))


async def standing(pool, payment_code: str) -> int:
    return await pool.fetchval(
        "select count(*) from payments where payment_code = $1 and status = 'posted'", payment_code
    )


async def test_200_concurrent_payments_of_one_bill_across_two_processes_post_once(two_workers, pool, clock):
    gateway, children = two_workers
    bill = await BillFactory(pool, clock).create(workers=3)
    credentials = await register_partner(gateway.url)
    async with fresh_session() as session:
        snap = SnapClient(gateway.url, credentials, session=session)
        await snap.token()
        links, held = await connect_links(children, gateway.iso_port, 10)
        try:
            snap_work = [snap.pay(bill.payment_code, bill.total_rupiah, uuid.uuid4().hex) for _ in range(100)]
            iso_work = [links[i % len(links)].pay(bill.payment_code, bill.total_rupiah) for i in range(100)]
            results, pids = await spread(children, {gateway.http_port, gateway.iso_port}, *snap_work, *iso_work)
        finally:
            for link in links:
                await link.close()
    assert held | pids == {child.pid for child in children}, "both processes must have served"
    snap_codes = [r.code for r in results[:100]]
    iso_codes = [r.code for r in results[100:]]
    # Exactly one of the 200 was approved; every other one was told the bill is paid.
    assert snap_codes.count("2002500") + iso_codes.count("00") == 1
    assert set(snap_codes) <= {"2002500", "4042514"} and set(iso_codes) <= {"00", "54"}
    assert await standing(pool, bill.payment_code) == 1
    await assert_ledger_invariants(pool)
    await assert_kanal_check_clean(pool)


async def test_one_key_raced_across_two_processes_posts_once_and_every_answer_agrees(two_workers, pool, clock):
    gateway, children = two_workers
    factory = BillFactory(pool, clock)
    snap_bill, iso_bill = await factory.create(), await factory.create()
    credentials = await register_partner(gateway.url)
    request_id = uuid.uuid4().hex
    async with fresh_session() as session:
        snap = SnapClient(gateway.url, credentials, session=session)
        body = snap.payment_body(snap_bill.payment_code, snap_bill.total_rupiah, request_id)
        external_id = new_external_id()
        await snap.token()
        links, held = await connect_links(children, gateway.iso_port, 10)
        original = links[0].financial("0200", "payment", iso_bill.payment_code, iso_bill.total_rupiah)
        try:
            # 50 repeats of one SNAP payment (same X-EXTERNAL-ID and paymentRequestId),
            # and the same 0200 (same STAN, RRN, time) on ten links, some as 0220 advices.
            snap_work = [snap.post(PAYMENT_PATH, body, external_id=external_id) for _ in range(50)]
            iso_work = [
                link.request(dict(original)) if n % 2 == 0 else link.advice(original) for n, link in enumerate(links)
            ]
            results, pids = await spread(children, {gateway.http_port, gateway.iso_port}, *snap_work, *iso_work)
        finally:
            for link in links:
                await link.close()
    assert held | pids == {child.pid for child in children}
    snap_results, iso_results = results[:50], results[50:]
    assert {r.code for r in snap_results} == {"2002500"}
    outcomes = [r.body["additionalInfo"]["outcome"] for r in snap_results]
    assert outcomes.count("posted") == 1 and outcomes.count("replayed") == 49
    assert len({r.body["additionalInfo"]["paymentId"] for r in snap_results}) == 1
    assert {r.code for r in iso_results} == {"00"}
    assert await standing(pool, snap_bill.payment_code) == 1
    assert await standing(pool, iso_bill.payment_code) == 1
    await assert_ledger_invariants(pool)
    await assert_kanal_check_clean(pool)


async def test_reversal_on_one_process_declines_the_late_payment_on_the_other(two_workers, pool, clock):
    gateway, children = two_workers
    factory = BillFactory(pool, clock)
    bills = [await factory.create(workers=1) for _ in range(20)]
    links, held = await connect_links(children, gateway.iso_port, 8)
    try:

        async def reverse_then_pay(n: int, bill) -> tuple[str, str, str]:
            first, second = links[n % len(links)], links[(n + 3) % len(links)]
            original = first.financial("0200", "payment", bill.payment_code, bill.total_rupiah)
            reversal = await first.reverse(original)  # the 0200 never arrived: a tombstone
            late = await second.request(dict(original))  # then it does, on another link
            advice = await second.advice(original)
            return reversal.code, late.code, advice.code

        results, pids = await spread(
            children, {gateway.iso_port}, *(reverse_then_pay(n, bill) for n, bill in enumerate(bills))
        )
    finally:
        for link in links:
            await link.close()
    assert held | pids == {child.pid for child in children}
    # 0410 00, then the late 0200 and its 0220 are declined (05): nothing posts.
    assert set(results) == {("00", "05", "05")}
    assert await pool.fetchval("select count(*) from payments") == 0
    await assert_ledger_invariants(pool)
