"""End to end: a virtual bank on a real TCP link to the running gateway, real PostgreSQL.

Each MTI and each response code of the Bank Kalbar profile has its own test;
the ledger is checked with SQL, not through the adapter.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from iso8583_helpers import (
    BrokenPayments,
    SlowPayments,
    journal_count,
    posted_count,
    start_adapter,
)

from bank_adapters.iso8583 import codec
from bank_adapters.iso8583.client import Iso8583Client, LinkDown
from bank_adapters.iso8583.profile import load_profile

KALBAR = load_profile("bank_kalbar")


# --- network management: 0800 / 0810 -------------------------------------------------


async def test_0800_logon_echo_cutover_logoff_answer_0810_00(gateway_server):
    async with Iso8583Client("127.0.0.1", gateway_server.iso_port, logon=False) as bank:
        for reply in [await bank.logon(), await bank.echo(), await bank.cutover(), await bank.logoff()]:
            assert reply.response["t"] == "0810"
            assert reply.code == "00"
            assert reply.response["70"] == reply.request["70"]
            assert reply.response["11"] == reply.request["11"]


async def test_0800_with_an_unknown_network_code_answers_30(bank):
    reply = await bank.network("999")
    assert (reply.response["t"], reply.code) == ("0810", "30")


# --- inquiry and payment: 0200 / 0210 --------------------------------------------------


async def test_0200_inquiry_answers_00_with_amount_and_bill_data(bank, bill):
    reply = await bank.inquiry(bill.payment_code)
    assert (reply.response["t"], reply.code) == ("0210", "00")
    assert int(reply.response["4"]) == bill.total_rupiah
    data = reply.bill(KALBAR)
    assert data["payer_name"].startswith("PT Uji")
    assert data["period"] == bill.period.replace("-", "")
    assert sum(int(d["amount_rupiah"]) for d in data["details"]) == bill.total_rupiah


async def test_0200_payment_answers_00_and_posts_exactly_once(bank, bill, gateway_server):
    reply = await bank.pay(bill.payment_code, bill.total_rupiah)
    assert (reply.response["t"], reply.code) == ("0210", "00")
    assert reply.response["37"] == reply.request["37"]
    pool = gateway_server.pool
    assert await posted_count(pool) == 1
    assert await journal_count(pool) == 1
    row = await pool.fetchrow("select channel, idempotency_key, bank_reference from payments")
    request = reply.request
    assert row["channel"] == "iso8583:123"
    assert row["idempotency_key"] == f"123:{request['11']}:{request['37']}:{request['7']}"
    assert row["bank_reference"] == request["37"]


async def test_duplicate_0200_answers_00_again_and_posts_nothing_twice(bank, bill, gateway_server):
    first = await bank.pay(bill.payment_code, bill.total_rupiah)
    again = await bank.request(first.request)
    assert (first.code, again.code) == ("00", "00")
    assert await posted_count(gateway_server.pool) == 1
    assert await journal_count(gateway_server.pool) == 1


async def test_response_code_00_approved(bank, bill):
    assert (await bank.pay_bill(bill.payment_code)).code == "00"


async def test_response_code_05_payment_after_its_own_reversal(bank, bill, gateway_server):
    paid = await bank.pay(bill.payment_code, bill.total_rupiah)
    assert (await bank.reverse(paid.request)).code == "00"
    again = await bank.request(paid.request)
    assert again.code == "05"
    assert await posted_count(gateway_server.pool) == 0
    assert await journal_count(gateway_server.pool) == 2  # the payment and its reversal, nothing more


async def test_response_code_05_for_an_acquirer_the_profile_does_not_serve(gateway_server, bill):
    async with Iso8583Client("127.0.0.1", gateway_server.iso_port, acquirer="999", logon=False) as bank:
        assert (await bank.logon()).code == "05"  # its logon is refused too
        reply = await bank.pay(bill.payment_code, bill.total_rupiah)
    assert reply.code == "05"
    assert await posted_count(gateway_server.pool) == 0


async def test_response_code_13_wrong_amount(bank, bill, gateway_server):
    assert (await bank.pay(bill.payment_code, bill.total_rupiah - 1)).code == "13"
    assert (await bank.pay(bill.payment_code, bill.total_rupiah + 1)).code == "13"
    assert (await bank.pay(bill.payment_code, 0)).code == "13"
    assert await posted_count(gateway_server.pool) == 0


async def test_response_code_13_wrong_currency(bank, bill, gateway_server):
    assert (await bank.pay(bill.payment_code, bill.total_rupiah, **{"49": "840"})).code == "13"
    assert await posted_count(gateway_server.pool) == 0


async def test_response_code_14_unknown_payment_code(bank, gateway_server):
    assert (await bank.inquiry("99999999999")).code == "14"
    assert (await bank.pay("99999999999", 100_000)).code == "14"
    assert await posted_count(gateway_server.pool) == 0


async def test_response_code_30_for_a_field_of_the_wrong_type(bank, bill, gateway_server):
    request = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah)
    request["4"] = "00000025000X"
    reply = await bank.request(request)
    assert (reply.response["t"], reply.code) == ("0210", "30")
    assert await posted_count(gateway_server.pool) == 0


async def test_response_code_30_for_a_missing_required_field(bank, bill):
    request = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah)
    del request["37"]
    assert (await bank.request(request)).code == "30"


async def test_response_code_30_for_an_unknown_processing_code(bank, bill):
    request = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah)
    request["3"] = "990000"
    assert (await bank.request(request)).code == "30"


async def test_response_code_30_for_an_unknown_mti(bank):
    reply = await bank.request({"t": "0300", "7": "0615103000", "32": "123"})
    assert (reply.response["t"], reply.code) == ("0310", "30")


async def test_response_code_54_bill_already_paid(bank, bill, gateway_server):
    assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "00"
    assert (await bank.inquiry(bill.payment_code)).code == "54"
    assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "54"  # another key: another payment
    assert await posted_count(gateway_server.pool) == 1


async def test_response_code_68_when_the_deadline_passes_then_the_advice_settles_it(gateway_server, bill):
    adapter = await start_adapter(
        gateway_server, {"message_deadline_ms": "100"}, payments=SlowPayments(gateway_server.payments, 0.4)
    )
    try:
        async with Iso8583Client("127.0.0.1", adapter.port, timeout_ms=5_000) as slow_link:
            late = await slow_link.pay(bill.payment_code, bill.total_rupiah)
            assert late.code == "68"
    finally:
        await adapter.stop()  # waits for the payment still under way behind the 68
    assert await posted_count(gateway_server.pool) == 1
    # The bank, told 68, sends an advice (here over the gateway's own link): it is settled, not paid twice.
    async with Iso8583Client("127.0.0.1", gateway_server.iso_port) as bank:
        advice = await bank.advice(late.request)
    assert (advice.response["t"], advice.code) == ("0230", "00")
    assert await posted_count(gateway_server.pool) == 1
    assert await journal_count(gateway_server.pool) == 1


async def test_response_code_88_bill_no_longer_available(bank, bill, clock, gateway_server):
    clock.advance(days=400)
    assert (await bank.inquiry(bill.payment_code)).code == "88"
    assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "88"
    assert await posted_count(gateway_server.pool) == 0


async def test_response_code_90_during_the_cutoff_window(gateway_server, bill):
    local = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=KALBAR.utc_offset_minutes)
    window = f"{(local - dt.timedelta(minutes=1)):%H:%M}-{(local + dt.timedelta(minutes=3)):%H:%M}"
    adapter = await start_adapter(gateway_server, {"cutoff_window_local": window})
    try:
        async with Iso8583Client("127.0.0.1", adapter.port) as bank:
            assert (await bank.inquiry(bill.payment_code)).code == "90"
            assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "90"
            assert (await bank.echo()).code == "00"  # the link itself stays up
    finally:
        await adapter.stop()
    assert await posted_count(gateway_server.pool) == 0


async def test_response_code_91_before_logon_and_after_logoff(gateway_server, bill):
    async with Iso8583Client("127.0.0.1", gateway_server.iso_port, logon=False) as bank:
        assert (await bank.inquiry(bill.payment_code)).code == "91"
        assert (await bank.logon()).code == "00"
        assert (await bank.inquiry(bill.payment_code)).code == "00"
        assert (await bank.logoff()).code == "00"
        assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "91"
    assert await posted_count(gateway_server.pool) == 0


async def test_response_code_92_status_of_a_payment_never_made(bank, bill):
    request = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah)
    reply = await bank.status(request)
    assert reply.code == "92"


async def test_status_of_a_posted_then_reversed_payment(bank, bill):
    paid = await bank.pay(bill.payment_code, bill.total_rupiah)
    posted = await bank.status(paid.request)
    assert (posted.code, int(posted.response["4"])) == ("00", bill.total_rupiah)
    await bank.reverse(paid.request)
    assert (await bank.status(paid.request)).code == "05"


async def test_response_code_94_same_key_different_amount(bank, bill, gateway_server):
    paid = await bank.pay(bill.payment_code, bill.total_rupiah)
    changed = dict(paid.request, **{"4": str(bill.total_rupiah + 1000)})
    assert (await bank.request(changed)).code == "94"
    assert await posted_count(gateway_server.pool) == 1
    assert await journal_count(gateway_server.pool) == 1


async def test_response_code_96_when_the_payments_service_fails(gateway_server, bill):
    adapter = await start_adapter(gateway_server, payments=BrokenPayments())
    try:
        async with Iso8583Client("127.0.0.1", adapter.port) as bank:
            assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "96"
            assert (await bank.echo()).code == "00"
    finally:
        await adapter.stop()


def test_every_response_code_of_the_profile_has_a_test_above():
    import pathlib

    text = pathlib.Path(__file__).read_text()
    for code in KALBAR.response_code_meanings:
        assert f"def test_response_code_{code}_" in text, code


# --- advice: 0220 / 0230 ------------------------------------------------------------------


async def test_late_0220_advice_answers_00_and_posts_nothing_twice(bank, bill, gateway_server):
    paid = await bank.pay(bill.payment_code, bill.total_rupiah)
    advice = await bank.advice(paid.request)
    repeat = await bank.advice(paid.request, repeat=True)
    assert (advice.response["t"], advice.code) == ("0230", "00")
    assert (repeat.response["t"], repeat.code) == ("0230", "00")
    assert await posted_count(gateway_server.pool) == 1
    assert await journal_count(gateway_server.pool) == 1


async def test_0220_advice_of_a_payment_never_received_posts_it_once(bank, bill, gateway_server):
    lost = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah)
    assert (await bank.advice(lost)).code == "00"
    assert (await bank.request(lost)).code == "00"  # the original, arriving after all: replayed
    assert await posted_count(gateway_server.pool) == 1


# --- reversal: 0400 / 0410 and 0420 / 0430 --------------------------------------------------


async def test_0400_reversal_after_payment_undoes_it_once(bank, bill, gateway_server):
    paid = await bank.pay(bill.payment_code, bill.total_rupiah)
    reversal = await bank.reverse(paid.request)
    assert (reversal.response["t"], reversal.code) == ("0410", "00")
    pool = gateway_server.pool
    assert await posted_count(pool) == 0
    assert await pool.fetchval("select count(*) from payments where status = 'reversed'") == 1
    assert await journal_count(pool) == 2
    again = await bank.reverse(paid.request, repeat=True)
    assert (again.response["t"], again.code) == ("0410", "00")
    assert await journal_count(pool) == 2
    assert (await bank.inquiry(bill.payment_code)).code == "00"  # the bill is open again


async def test_0400_reversal_before_payment_answers_00_posts_nothing_and_declines_the_payment(
    bank, bill, gateway_server
):
    never_seen = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah)
    reversal = await bank.reverse(never_seen)
    assert (reversal.response["t"], reversal.code) == ("0410", "00")
    assert await journal_count(gateway_server.pool) == 0
    late = await bank.request(never_seen)
    assert late.code == "05"
    assert await posted_count(gateway_server.pool) == 0
    assert await journal_count(gateway_server.pool) == 0


async def test_0420_reversal_advice_answers_0430(bank, bill, gateway_server):
    paid = await bank.pay(bill.payment_code, bill.total_rupiah)
    advice = await bank.reverse(paid.request, advice=True)
    assert (advice.response["t"], advice.code) == ("0430", "00")
    repeat = await bank.reverse(paid.request, advice=True, repeat=True)
    assert (repeat.response["t"], repeat.code) == ("0430", "00")
    assert await posted_count(gateway_server.pool) == 0
    assert await journal_count(gateway_server.pool) == 2


async def test_0400_without_original_data_answers_30(bank, bill, gateway_server):
    paid = await bank.pay(bill.payment_code, bill.total_rupiah)
    request = dict(paid.request, t="0400", **{"11": bank.next_stan()})
    assert (await bank.request(request)).code == "30"
    assert await posted_count(gateway_server.pool) == 1


# --- the second profile proves the dialect is data -------------------------------------------


async def test_the_37_80_profile_pays_with_its_own_processing_codes(gateway_server, bill):
    adapter = await start_adapter(gateway_server, {"profile": "h2h_37_80"})
    try:
        async with Iso8583Client("127.0.0.1", adapter.port, profile="h2h_37_80", acquirer="456") as bank:
            inquiry = await bank.inquiry(bill.payment_code)
            assert (inquiry.request["3"], inquiry.code) == ("370000", "00")
            paid = await bank.pay(bill.payment_code, bill.total_rupiah)
            assert (paid.request["3"], paid.code) == ("800000", "00")
            kalbar_code = dict(paid.request, **{"3": "500000", "11": bank.next_stan()})
            assert (await bank.request(kalbar_code)).code == "30"
    finally:
        await adapter.stop()
    assert await gateway_server.pool.fetchval("select channel from payments") == "iso8583:456"


# --- limits and broken peers ------------------------------------------------------------------


async def test_an_oversized_frame_answers_30_and_the_link_carries_on(bank):
    await bank.send_raw(codec.frame(b"0200" + b"0" * 5000))
    await asyncio.sleep(0.1)
    assert (await bank.echo()).code == "00"


async def test_an_unreadable_mti_closes_that_link_only(gateway_server, bank):
    async with Iso8583Client("127.0.0.1", gateway_server.iso_port, reconnect_attempts_max=1) as victim:
        await victim.send_raw(codec.frame(b"\xff\xfegarbage"))
        for _ in range(50):
            if not victim.connected:
                break
            await asyncio.sleep(0.02)
        assert not victim.connected
    assert (await bank.echo()).code == "00"


async def test_the_client_reconnects_and_logs_on_again(gateway_server):
    async with Iso8583Client("127.0.0.1", gateway_server.iso_port) as bank:
        await bank.send_raw(codec.frame(b"junk"))
        for _ in range(50):
            if not bank.connected:
                break
            await asyncio.sleep(0.02)
        assert (await bank.echo()).code == "00"
        assert bank.connects == 2


async def test_a_request_cancelled_in_the_turn_its_answer_comes_is_cancelled():
    # asyncio.wait_for (Python 3.11) returned the answer and dropped the
    # cancellation: a bank looping over echoes could never be stopped.
    links: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _reader, writer: links.append(writer), "127.0.0.1", 0)
    try:
        async with Iso8583Client("127.0.0.1", silent.sockets[0].getsockname()[1], logon=False) as bank:
            echo = asyncio.create_task(bank.echo())
            while not bank._pending and not echo.done():
                await asyncio.sleep(0)
            (answer,) = bank._pending.values()
            answer.set_result({"t": "0810", "39": "00"})  # what the read loop does when the answer comes
            echo.cancel()
            with pytest.raises(asyncio.CancelledError):
                await echo
    finally:
        for writer in links:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_a_silent_link_is_closed_after_the_idle_timeout(gateway_server):
    adapter = await start_adapter(gateway_server, {"idle_timeout_ms": "200"})
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", adapter.port)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the server
        writer.close()
    finally:
        await adapter.stop()


async def test_connections_over_the_maximum_are_refused(gateway_server):
    adapter = await start_adapter(gateway_server, {"connections_max": "2"})
    try:
        async with (
            Iso8583Client("127.0.0.1", adapter.port) as one,
            Iso8583Client("127.0.0.1", adapter.port) as two,
        ):
            with pytest.raises(LinkDown):
                async with Iso8583Client("127.0.0.1", adapter.port, reconnect_attempts_max=1, timeout_ms=1_000):
                    pass
            assert (await one.echo()).code == "00" and (await two.echo()).code == "00"
    finally:
        await adapter.stop()


async def test_a_link_answers_in_its_own_order(gateway_server, bill):
    adapter = await start_adapter(gateway_server, payments=SlowPayments(gateway_server.payments, 0.3))
    try:
        async with Iso8583Client("127.0.0.1", adapter.port) as bank:
            order = []

            async def run(name, call):
                await call
                order.append(name)

            await asyncio.gather(run("inquiry", bank.inquiry(bill.payment_code)), run("echo", bank.echo()))
            assert order == ["echo", "inquiry"]
    finally:
        await adapter.stop()


async def test_one_log_line_per_message_names_the_neutral_outcome(bank, bill):
    import structlog

    with structlog.testing.capture_logs() as logs:
        paid = await bank.pay(bill.payment_code, bill.total_rupiah)
        await bank.request(paid.request)
        await asyncio.sleep(0.05)
    lines = [e for e in logs if e["event"] == "iso8583.message" and e.get("rrn") == paid.request["37"]]
    assert [(e["mti"], e["response_code"], e["outcome"]) for e in lines] == [
        ("0200", "00", "posted"),
        ("0200", "00", "replayed"),
    ]


def _payment_body(stan: str = "000321") -> bytes:
    return codec.encode(
        {
            "t": "0200",
            "2": "99999999999",
            "3": "500000",
            "4": "150000",
            "7": "0615103000",
            "11": stan,
            "32": "123",
            "37": "000000000321",
            "49": "360",
        },
        KALBAR,
    )


@pytest.mark.parametrize(
    ("name", "frame", "expected_stan"),
    [
        ("broken bitmap", codec.frame(b"0200ZZZZ" + _payment_body()[4:]), None),
        ("truncated message", codec.frame(_payment_body()[:-6]), "000321"),
        ("letters in a numeric field", codec.frame(_payment_body().replace(b"150000", b"15OOOO")), "000321"),
        ("extra bytes after the last field", codec.frame(_payment_body() + b"tail"), "000321"),
        ("longer than frame_bytes_max", codec.frame(b"0200" + b"9" * 5_000), None),
        ("reversal with a broken bitmap", codec.frame(b"0400" + b"G" * 40), None),
    ],
)
async def test_malformed_input_with_a_readable_mti_gets_30_on_the_same_link(gateway_server, name, frame, expected_stan):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway_server.iso_port)
    try:
        writer.write(
            frame + codec.frame(codec.encode({"t": "0800", "7": "0615103000", "11": "000999", "70": "301"}, KALBAR))
        )
        await writer.drain()
        async with asyncio.timeout(5):
            answers = [codec.decode((await codec.read_frame(reader, 4096)).body, KALBAR) for _ in range(2)]
    finally:
        writer.close()
    answers.sort(key=lambda a: a["t"])
    broken, echo = answers
    assert (broken["t"], broken["39"]) == (("0410" if frame[2:6] == b"0400" else "0210"), "30"), name
    assert broken.get("11") == expected_stan
    assert (echo["t"], echo["39"]) == ("0810", "00")  # the link carried on
    assert await posted_count(gateway_server.pool) == 0


async def test_two_gateway_processes_can_share_the_port_with_reuse_port(gateway_server, bill):
    first = await start_adapter(gateway_server, {"reuse_port": "true"})
    second = await start_adapter(gateway_server, {"reuse_port": "true", "port": str(first.port)})
    try:
        assert second.port == first.port
        async with Iso8583Client("127.0.0.1", first.port) as bank:
            assert (await bank.pay_bill(bill.payment_code)).code == "00"
    finally:
        await second.stop()
        await first.stop()
    assert await posted_count(gateway_server.pool) == 1
