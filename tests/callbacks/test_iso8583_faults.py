"""Inbound faults on the ISO 8583 link, end to end: the real gateway, a bank
on a real TCP link, faults ordered by magic values (sandbox) and by the
partner's profile through the API. The ledger is read with SQL."""

from __future__ import annotations

import asyncio
import time

import pytest

from bank_adapters.base import AdapterContext
from bank_adapters.iso8583 import adapter_factory
from bank_adapters.iso8583.client import Iso8583Client, ResponseTimeout

LATENCY_S = 0.3  # magic_latency_ms of callback_gateway
NO_ANSWER_MS = 1_500  # how long the bank waits before it calls an answer lost
PARTNER = "iso8583-123"  # acquirer 123 with no partner_ids setting


def magic_rrn(nn: str) -> str:
    return "9999999999" + nn


@pytest.fixture
async def bank(callback_gateway):
    async with Iso8583Client("127.0.0.1", callback_gateway.iso_port) as client:
        yield client


async def _posted(pool, bill) -> int:
    return await pool.fetchval(
        "select count(*) from payments p join bills b on b.id = p.bill_id where b.payment_code = $1 and p.status = 'posted'",
        bill.payment_code,
    )


async def _unanswered(bank, doc) -> None:
    with pytest.raises(ResponseTimeout):
        await bank.request(doc, timeout_ms=NO_ANSWER_MS)


# ------------------------------------------------------------ magic values --


async def test_magic_rrn_11_answers_late_and_pays(callback_gateway, bank, bills):
    bill = await bills.create(workers=1)
    started = time.monotonic()
    reply = await bank.pay(bill.payment_code, bill.total_rupiah, **{"37": magic_rrn("11")})
    assert time.monotonic() - started >= LATENCY_S
    assert reply.code == "00" and reply.response["37"] == magic_rrn("11")
    assert await _posted(callback_gateway.pool, bill) == 1


async def test_magic_rrn_22_posts_loses_the_answer_and_the_advice_gets_through(callback_gateway, bank, bills):
    bill = await bills.create(workers=1)
    original = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah, **{"37": magic_rrn("22")})
    await _unanswered(bank, original)
    assert await _posted(callback_gateway.pool, bill) == 1, "committed before the answer was lost"
    assert (await bank.echo()).code == "00", "the link stays up"
    status = await bank.status(original)
    assert status.code == "00" and int(status.response["4"]) == bill.total_rupiah
    advice = await bank.advice(original)
    assert (advice.response["t"], advice.code) == ("0230", "00")
    assert await _posted(callback_gateway.pool, bill) == 1, "the advice posts nothing twice"


async def test_magic_rrn_33_times_out_before_commit_and_posts_nothing(callback_gateway, bank, bills):
    bill = await bills.create(workers=1)
    original = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah, **{"37": magic_rrn("33")})
    await _unanswered(bank, original)
    assert await _posted(callback_gateway.pool, bill) == 0
    assert (await bank.status(original)).code == "92"  # transaction not found
    assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "00"


@pytest.mark.parametrize(("nn", "code"), [("55", "96"), ("66", "91")])
async def test_magic_rrn_55_and_66_refuse_and_post_nothing(callback_gateway, bank, bills, nn, code):
    bill = await bills.create(workers=1)
    reply = await bank.pay(bill.payment_code, bill.total_rupiah, **{"37": magic_rrn(nn)})
    assert reply.code == code
    assert await _posted(callback_gateway.pool, bill) == 0


async def test_magic_rrn_44_answers_with_a_response_that_matches_no_request(callback_gateway, bank, bills):
    bill = await bills.create(workers=1)
    reply = await bank.pay(bill.payment_code, bill.total_rupiah, **{"37": magic_rrn("44")})
    assert reply.code == "00" and await _posted(callback_gateway.pool, bill) == 1
    assert reply.response["37"] != reply.request["37"], "a bank that matches by RRN must reject this answer"
    assert reply.response["11"] == reply.request["11"]


@pytest.mark.parametrize(("code", "answer"), [("99999999955", "96"), ("99999999966", "91"), ("99999999911", "14")])
async def test_magic_payment_codes_on_inquiry(callback_gateway, bank, code, answer):
    started = time.monotonic()
    reply = await bank.inquiry(code)
    assert reply.code == answer
    if code.endswith("11"):
        assert time.monotonic() - started >= LATENCY_S


async def test_magic_payment_code_22_and_33_are_never_answered(bank):
    for code in ("99999999922", "99999999933"):
        await _unanswered(bank, bank.financial("0200", "inquiry", code, 0))


async def test_a_reversal_never_takes_a_magic_rrn(callback_gateway, bank, bills):
    """The bank's recovery path: a payment with the lost-response RRN is
    posted and never answered; its reversal carries the same RRN and is."""
    bill = await bills.create(workers=1)
    original = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah, **{"37": magic_rrn("22")})
    await _unanswered(bank, original)
    assert await _posted(callback_gateway.pool, bill) == 1
    reversal = await bank.reverse(original)
    assert (reversal.response["t"], reversal.code) == ("0410", "00")
    assert await _posted(callback_gateway.pool, bill) == 0


async def test_magic_values_need_sandbox(callback_gateway, bills):
    adapter = adapter_factory()
    context = AdapterContext(
        payments=callback_gateway.payments, pool=callback_gateway.pool, settings={"port": "0", "sandbox": "false"}
    )
    await adapter.start(context)
    try:
        async with Iso8583Client("127.0.0.1", adapter.port) as live:
            bill = await bills.create(workers=1)
            reply = await live.pay(bill.payment_code, bill.total_rupiah, **{"37": magic_rrn("55")})
            assert reply.code == "00", "outside sandbox a magic RRN is an ordinary RRN"
            assert (await live.inquiry("99999999955")).code == "14"
    finally:
        await adapter.stop()


# -------------------------------------------------------- partner profiles --


async def test_partner_profile_faults_through_the_api(callback_gateway, api, bank, bills):
    pool = callback_gateway.pool
    path = f"/api/v1/partners/{PARTNER}/faults"

    await api("PUT", path, json_body={"inbound": {"server_error_percent": 100}}, expect=200)
    bill = await bills.create(workers=1)
    assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "96"
    assert (await bank.echo()).code == "00", "network messages never take a fault"

    await api("PUT", path, json_body={"inbound": {"too_many_requests_percent": 100}}, expect=200)
    assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "91"
    assert await _posted(pool, bill) == 0

    await api("PUT", path, json_body={"inbound": {"timeout_before_commit_percent": 100}}, expect=200)
    await _unanswered(bank, bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah))
    assert await _posted(pool, bill) == 0

    await api("PUT", path, json_body={"inbound": {"lost_response_percent": 100}}, expect=200)
    lost = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah)
    await _unanswered(bank, lost)
    assert await _posted(pool, bill) == 1

    await api("PUT", path, json_body={"inbound": {"latency_ms": 300, "wrong_signature_percent": 100}}, expect=200)
    other = await bills.create(workers=1)
    started = time.monotonic()
    reply = await bank.pay(other.payment_code, other.total_rupiah)
    assert time.monotonic() - started >= 0.3
    assert reply.code == "00" and reply.response["37"] != reply.request["37"]

    await api("DELETE", path, expect=204)
    assert (await bank.advice(lost)).code == "00", "with the faults cleared, the advice is answered"
    assert await _posted(pool, bill) == 1

    # Each message is logged right after its answer goes out: wait for the last one's row.
    query = "select fault from partner_exchanges where channel = 'iso8583' and partner_id = $1 and fault is not null order by at"
    deadline = time.monotonic() + 10
    while len(rows := await pool.fetch(query, PARTNER)) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    kinds = [r["fault"] for r in rows]
    assert kinds == [
        "profile:server-error",
        "profile:too-many-requests",
        "profile:timeout-before-commit",
        "profile:lost-response",
        "profile:latency,wrong-signature",
    ]
