"""An integrator's audit of the ISO 8583 link, over real sockets and PostgreSQL:
- the DE48 of a payment (0210) and an advice (0230) carries the bill's period
  and due date, exactly as the inquiry's does;
- DE49 (currency) is checked on every financial message that carries it;
- a logon from an acquirer (DE32) the profile does not serve is refused;
- a 0200 whose DE3 names no kind is reported under the service `financial`.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from iso8583_helpers import journal_count, posted_count, start_adapter

from bank_adapters.iso8583.client import Iso8583Client
from bank_adapters.iso8583.profile import load_profile
from gateway.callbacks import conformance

KALBAR = load_profile("bank_kalbar")
H2H = load_profile("h2h_37_80")


async def _bill_row(pool, bill):
    return await pool.fetchrow("select period, due_date from bills where payment_code = $1", bill.payment_code)


# --- 1. DE48 of payments and advices: period and due date ------------------------------------


async def test_the_payment_answers_de48_exactly_as_the_inquiry(bank, bill, gateway_server):
    inquiry = await bank.inquiry(bill.payment_code)
    paid = await bank.pay(bill.payment_code, bill.total_rupiah)
    assert (inquiry.code, paid.code) == ("00", "00")
    row = await _bill_row(gateway_server.pool, bill)
    data = paid.bill(KALBAR)
    assert data["period"] == row["period"].replace("-", "")  # YYYYMM, digits
    assert data["due_date"] == row["due_date"].strftime("%Y%m%d")
    assert paid.response["48"] == inquiry.response["48"]


async def test_a_replayed_payment_and_the_advices_answer_the_same_de48(bank, bill, gateway_server):
    inquiry = await bank.inquiry(bill.payment_code)
    paid = await bank.pay(bill.payment_code, bill.total_rupiah)
    replayed = await bank.request(paid.request)  # the same key again: replayed
    advice = await bank.advice(paid.request)  # 0230 of a committed payment
    repeat = await bank.advice(paid.request, repeat=True)
    assert [r.code for r in (paid, replayed, advice, repeat)] == ["00"] * 4
    assert advice.response["t"] == repeat.response["t"] == "0230"
    for reply in (replayed, advice, repeat):
        assert reply.response["48"] == inquiry.response["48"]
    assert await posted_count(gateway_server.pool) == 1


async def test_an_advice_that_posts_answers_the_bills_period_and_due_date(bank, bill, gateway_server):
    inquiry = await bank.inquiry(bill.payment_code)
    lost = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah)
    advice = await bank.advice(lost)  # the 0200 never arrived: the advice posts it
    assert (advice.response["t"], advice.code) == ("0230", "00")
    assert advice.response["48"] == inquiry.response["48"]
    data = advice.bill(KALBAR)
    row = await _bill_row(gateway_server.pool, bill)
    assert (data["period"], data["due_date"]) == (row["period"].replace("-", ""), row["due_date"].strftime("%Y%m%d"))
    assert await posted_count(gateway_server.pool) == 1


async def test_payments_decided_one_by_one_carry_period_and_due_date(gateway_server, bills, clock):
    """kanal_pay (a payment decided alone: a retried batch, a second request of a
    key or bill in one batch) answers the bill's period and due date too, on
    every answer that has a bill."""
    bill = await bills.create(workers=1)
    pool = gateway_server.pool
    row = await _bill_row(pool, bill)
    args = ("iso8583:123", "123:000001:000000000001:0101000000", bill.payment_code, bill.total_rupiah, "000000000001", clock())
    posted = await pool.fetchrow("select * from kanal_pay($1, $2, $3, $4, $5, $6)", *args)
    replayed = await pool.fetchrow("select * from kanal_pay($1, $2, $3, $4, $5, $6)", *args)
    assert (posted["outcome"], replayed["outcome"]) == ("posted", "replayed")
    for answer in (posted, replayed):
        assert (answer["period"], answer["due_date"]) == (row["period"], row["due_date"])


# --- 2. DE49 on every financial message ----------------------------------------------------------


async def test_an_inquiry_in_another_currency_answers_13(bank, bill):
    reply = await bank.inquiry(bill.payment_code, **{"49": "978"})
    assert (reply.response["t"], reply.code) == ("0210", "13")
    assert "48" not in reply.response
    right = await bank.inquiry(bill.payment_code, **{"49": "360"})
    assert right.code == "00"
    without = bank.financial("0200", "inquiry", bill.payment_code, 0)
    del without["49"]
    assert (await bank.request(without)).code == "00"  # DE49 is checked when present


async def test_an_advice_in_another_currency_answers_13_and_posts_nothing(bank, bill, gateway_server):
    lost = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah, **{"49": "978"})
    advice = await bank.advice(lost)
    assert (advice.response["t"], advice.code) == ("0230", "13")
    assert await posted_count(gateway_server.pool) == 0


async def test_a_status_in_another_currency_answers_13(bank, bill):
    paid = await bank.pay(bill.payment_code, bill.total_rupiah)
    status = bank.financial("0200", "status", bill.payment_code, bill.total_rupiah, **{"49": "978"})
    status.update({"37": paid.request["37"], "90": bank._original_data(paid.request)})
    reply = await bank.request(status)
    assert (reply.response["t"], reply.code) == ("0210", "13")
    assert (await bank.status(paid.request)).code == "00"


@pytest.mark.parametrize("advice", [False, True], ids=["0400", "0420"])
async def test_a_reversal_in_another_currency_answers_13_and_undoes_nothing(bank, bill, gateway_server, advice):
    paid = await bank.pay(bill.payment_code, bill.total_rupiah)
    reply = await bank.reverse(dict(paid.request, **{"49": "978"}), advice=advice)
    assert (reply.response["t"], reply.code) == ("0430" if advice else "0410", "13")
    assert await posted_count(gateway_server.pool) == 1
    assert await journal_count(gateway_server.pool) == 1
    assert (await bank.reverse(paid.request, advice=advice)).code == "00"
    assert await posted_count(gateway_server.pool) == 0


# --- 3. logon from an acquirer the profile does not serve ----------------------------------------


async def test_a_logon_from_an_acquirer_not_served_answers_05_and_does_not_log_the_link_on(gateway_server, bill):
    async with Iso8583Client("127.0.0.1", gateway_server.iso_port, acquirer="999", logon=False) as bank:
        logon = await bank.logon()
        assert (logon.response["t"], logon.code) == ("0810", "05")
        # The same link, now naming the served acquirer: still not logged on.
        inquiry = await bank.inquiry(bill.payment_code, **{"32": "123"})
        assert inquiry.code == "91"
        paid = await bank.pay(bill.payment_code, bill.total_rupiah, **{"32": "123"})
        assert paid.code == "91"
    assert await posted_count(gateway_server.pool) == 0


async def test_the_client_of_an_acquirer_not_served_cannot_log_on(gateway_server):
    bank = Iso8583Client("127.0.0.1", gateway_server.iso_port, acquirer="999", reconnect_attempts_max=1)
    try:
        with pytest.raises(ConnectionError, match="logon refused with 05"):
            await bank.connect()
    finally:
        await bank.close()


async def test_a_profile_serving_any_acquirer_logs_any_on(gateway_server, bill):
    adapter = await start_adapter(gateway_server, {"profile": "h2h_37_80", "logon_required": "true"})
    try:
        async with Iso8583Client("127.0.0.1", adapter.port, profile=H2H, acquirer="987", logon=False) as bank:
            assert (await bank.inquiry(bill.payment_code)).code == "91"
            logon = await bank.logon()
            assert (logon.response["t"], logon.code) == ("0810", "00")
            assert (await bank.inquiry(bill.payment_code)).code == "00"
            assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "00"
    finally:
        await adapter.stop()
    assert await gateway_server.pool.fetchval("select channel from payments") == "iso8583:987"


# --- 4. the conformance report's service for a 0200 of no known kind -----------------------------


async def _exchanges_of(pool, partner_id: str, count: int, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await pool.fetchval("select count(*) from partner_exchanges where partner_id = $1", partner_id) < count:
        assert asyncio.get_running_loop().time() < deadline, "exchanges not logged"
        await asyncio.sleep(0.05)


async def test_a_0200_of_no_known_kind_is_reported_as_financial(bank, bill, gateway_server):
    unknown_code = await bank.pay(bill.payment_code, bill.total_rupiah, **{"3": "990000"})
    no_code = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah)
    del no_code["3"]
    missing = await bank.request(no_code)
    unknown_mti = await bank.request(bank.financial("0300", "payment", bill.payment_code, bill.total_rupiah))
    assert (unknown_code.code, missing.code, unknown_mti.code) == ("30", "30", "30")
    pool = gateway_server.pool
    await _exchanges_of(pool, "iso8583-123", 4)  # the logon and three refusals
    report = await conformance.report(pool, "iso8583-123", since=None, until=None)
    by_rule = {x["rule"]: x for x in report["exchanges"]}
    for rule in ("processing-code", "field-mandatory"):
        assert (by_rule[rule]["service"], by_rule[rule]["service_name"], by_rule[rule]["path"]) == (
            "financial", "financial", "0200"
        )
    assert (by_rule["mti"]["service"], by_rule["mti"]["path"]) == ("unknown", "0300")
    assert report["summary"]["by_service"]["iso8583 financial"]["fail"] == 2
    # Every service the report showed is one docs/callbacks.md names.
    documented = _documented_iso_services()
    assert {x["service"] for x in report["exchanges"]} <= documented, documented


def _documented_iso_services() -> set[str]:
    """The ISO 8583 service names docs/callbacks.md lists ("`service` is the
    message's kind (`inquiry`, ...)")."""
    text = " ".join((Path(__file__).parents[2] / "docs" / "callbacks.md").read_text().split())
    listed = re.search(r"on ISO 8583, `service` is the message's kind \((.*?)\), `path` the MTI", text)
    assert listed, "docs/callbacks.md no longer lists the ISO 8583 services"
    return set(re.findall(r"`([a-z-]+)`", listed.group(1)))
