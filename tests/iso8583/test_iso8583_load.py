"""Many links at once, and a link full of garbage: real sockets, real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import structlog
from iso8583_helpers import journal_count, posted_count

from bank_adapters.iso8583 import codec
from bank_adapters.iso8583.client import Iso8583Client
from bank_adapters.iso8583.handler import original_data
from bank_adapters.iso8583.profile import load_profile

KALBAR = load_profile("bank_kalbar")
NO_SUCH_BILL = "99999999999"


async def test_50_concurrent_links_pay_distinct_bills_each_posted_exactly_once(gateway_server, bills):
    created = [await bills.create(workers=1) for _ in range(50)]
    port = gateway_server.iso_port

    async def one_link(bill):
        async with Iso8583Client("127.0.0.1", port, timeout_ms=30_000) as bank:
            paid = await bank.pay_bill(bill.payment_code)
            advice = await bank.advice(paid.request)  # a nervous bank: must not pay twice
            return paid, advice

    async with asyncio.timeout(60):
        results = await asyncio.gather(*(one_link(bill) for bill in created))
    assert [(paid.code, advice.code) for paid, advice in results] == [("00", "00")] * 50
    pool = gateway_server.pool
    assert await posted_count(pool) == 50
    assert await journal_count(pool) == 50
    per_bill = await pool.fetch("select payment_code, count(*) as n from payments group by payment_code")
    assert {row["payment_code"]: row["n"] for row in per_bill} == {bill.payment_code: 1 for bill in created}


# --- fuzz -----------------------------------------------------------------------------------


def templates() -> list[dict[str, str]]:
    common = {
        "2": NO_SUCH_BILL,
        "7": "0615103000",
        "11": "000001",
        "12": "173000",
        "13": "0615",
        "18": "6017",
        "32": "123",
        "37": "000000000777",
        "49": "360",
    }
    return [
        {"t": "0200", "3": "380000", "4": "0", **common},
        {"t": "0200", "3": "500000", "4": "1500000", **common},
        {"t": "0220", "3": "500000", "4": "1500000", **common, "90": original_data("0200", "1", "0615103000", "123")},
        {"t": "0400", "3": "500000", "4": "1500000", **common, "90": original_data("0200", "1", "0615103000", "123")},
        {"t": "0420", "3": "500000", "4": "1500000", **common, "90": original_data("0200", "1", "0615103000", "123")},
        {"t": "0800", "7": "0615103000", "11": "000002", "70": "001"},
        {"t": "0800", "7": "0615103000", "11": "000003", "70": "301"},
    ]


class Fuzzer:
    """Builds hostile input: random bytes, mutated messages, lies about lengths."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.bodies = [codec.encode(t, KALBAR) for t in templates()]

    def next(self) -> tuple[bytes, bool]:
        """One hostile item, and whether it leaves the stream out of step (or
        unreadable) so that the server will, rightly, hang up after it."""
        rng = self.rng
        kind = rng.randrange(7)
        if kind == 0:  # unframed noise
            return rng.randbytes(rng.randrange(1, 200)), True
        if kind == 1:  # framed noise
            return self.framed(rng.randbytes(rng.randrange(0, 300)))
        body = bytearray(rng.choice(self.bodies))
        if kind == 2:  # a few bytes flipped
            for _ in range(rng.randrange(1, 9)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            return self.framed(bytes(body))
        if kind == 3:  # truncated or extended
            cut = rng.randrange(len(body))
            return self.framed(bytes(body[:cut]) if rng.random() < 0.7 else bytes(body) + rng.randbytes(5))
        if kind == 4:  # a digit field turned to letters
            body[rng.randrange(20, len(body))] = ord(rng.choice("ABCXYZ"))
            return self.framed(bytes(body))
        if kind == 5:  # longer than the frame limit
            return self.framed(bytes(body[:4]) + b"9" * rng.randrange(4097, 9000))
        return len(body).to_bytes(2, "big") + bytes(body[: rng.randrange(len(body))]), True  # the length lies

    @staticmethod
    def framed(body: bytes) -> tuple[bytes, bool]:
        return codec.frame(body), codec.readable_mti(body) is None


async def fuzz_link(port: int, frames: int, seed: int) -> int:
    """Send `frames` hostile items over as many connections as it takes; return
    how many answers came back. Answers are read while writing, as a bank
    would: a peer that never reads is dropped by the server's write timeout."""
    fuzzer = Fuzzer(seed)
    answered = 0
    sent = 0

    async def read_answers(reader: asyncio.StreamReader) -> None:
        nonlocal answered
        with contextlib.suppress(ConnectionError, codec.FrameClosed):
            while True:
                await codec.read_frame(reader, codec.FRAME_BYTES_LIMIT)
                answered += 1

    while sent < frames:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = asyncio.create_task(read_answers(reader))
        try:
            for _ in range(150):
                data, breaks = fuzzer.next()
                writer.write(data)
                await writer.drain()
                sent += 1
                if breaks or sent >= frames:
                    break
            writer.write_eof()  # then read every answer until the server hangs up
        except ConnectionError:
            pass  # the server hung up first: what the test is about
        finally:
            await asyncio.wait_for(answers, 10)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return answered


async def test_fuzz_thousands_of_hostile_frames_no_crash_no_hang_no_posting(gateway_server, bills):
    bill = await bills.create(workers=1)
    port = gateway_server.iso_port
    started = time.perf_counter()
    with structlog.testing.capture_logs() as logs:
        await fuzz_with_an_honest_link_alongside(port, bill)
    failures = [
        e for e in logs if e["event"] in ("iso8583.link_failed", "iso8583.message_failed", "iso8583.port_failed")
    ]
    assert failures == []
    assert sum(1 for e in logs if e["event"] == "iso8583.malformed") > 1_000
    pool = gateway_server.pool
    assert await posted_count(pool) == 1  # the honest payment only
    assert await journal_count(pool) == 1
    assert time.perf_counter() - started < 25


async def fuzz_with_an_honest_link_alongside(port: int, bill) -> None:
    async with Iso8583Client("127.0.0.1", port, timeout_ms=5_000) as honest:

        async def honest_traffic() -> None:
            while True:
                assert (await honest.echo(timeout_ms=1_000)).code == "00"
                assert (await honest.inquiry(bill.payment_code)).code == "00"
                await asyncio.sleep(0.01)

        honest_task = asyncio.create_task(honest_traffic())
        try:
            answered = await asyncio.wait_for(asyncio.gather(*(fuzz_link(port, 1_000, seed) for seed in range(4))), 30)
            assert not honest_task.done(), honest_task.exception()
        finally:
            honest_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await honest_task
        # Other links were unaffected: the honest one still pays, and a fresh one logs on.
        assert (await honest.pay_bill(bill.payment_code)).code == "00"
    async with Iso8583Client("127.0.0.1", port) as fresh:
        assert (await fresh.echo()).code == "00"
    assert sum(answered) > 1_000  # much of the garbage still had a readable MTI and got its 30


async def test_the_same_0200_on_ten_links_at_once_posts_once_and_answers_00_everywhere(gateway_server, bills):
    bill = await bills.create(workers=2)
    port = gateway_server.iso_port
    links = [Iso8583Client("127.0.0.1", port) for _ in range(10)]
    for link in links:
        await link.connect()
    try:
        request = links[0].financial("0200", "payment", bill.payment_code, bill.total_rupiah)
        replies = await asyncio.gather(*(link.request(request) for link in links))
    finally:
        for link in links:
            await link.close()
    assert [reply.code for reply in replies] == ["00"] * 10
    assert await posted_count(gateway_server.pool) == 1
    assert await journal_count(gateway_server.pool) == 1
