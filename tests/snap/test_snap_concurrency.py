"""Requests that arrive together share one database round trip for the token,
the fault profile and the X-EXTERNAL-ID claim (store.Authorizer). Sent at
once, they must be decided exactly as if they had come one by one; and each
request still has exactly one log line."""

from __future__ import annotations

import asyncio

from snap_support import payment_body, posted_count, signed
import structlog
from structlog.testing import capture_logs

from bank_adapters.snap.client import PAYMENT_PATH, new_external_id


async def test_one_external_id_sent_at_once_for_different_payments_is_claimed_once(gateway_server, bank, bills):
    bill_list = [await bills.create() for _ in range(6)]
    external_id = new_external_id()
    requests = [await signed(bank, PAYMENT_PATH, payment_body(bank, bill, f"p-{i}"), external_id=external_id) for i, bill in enumerate(bill_list)]
    responses = await asyncio.gather(*(bank.send(PAYMENT_PATH, body_text, headers) for body_text, headers in requests))
    codes = sorted(response.code for response in responses)
    assert codes == ["2002500"] + ["4092500"] * 5, [r.body for r in responses]
    assert {r.rule for r in responses if r.code == "4092500"} == {"external-id"}
    assert await posted_count(gateway_server.pool) == 1


async def test_one_payment_retried_at_once_is_answered_alike_and_posted_once(gateway_server, bank, bills):
    bill = await bills.create()
    body_text, headers = await signed(bank, PAYMENT_PATH, payment_body(bank, bill, "p-retry"))
    responses = await asyncio.gather(*(bank.send(PAYMENT_PATH, body_text, headers) for _ in range(5)))
    assert [r.code for r in responses] == ["2002500"] * 5, [r.body for r in responses]
    assert await posted_count(gateway_server.pool) == 1


async def test_a_forged_request_does_not_burn_the_external_id(gateway_server, bank, bills):
    """Sent together: the same X-EXTERNAL-ID with a wrong signature (refused,
    claims nothing) and with the right one (posted)."""
    bill = await bills.create()
    body_text, headers = await signed(bank, PAYMENT_PATH, payment_body(bank, bill, "p-genuine"))
    forged_text, forged = await signed(bank, PAYMENT_PATH, payment_body(bank, bill, "p-forged"), external_id=headers["X-EXTERNAL-ID"])
    forged["X-SIGNATURE"] = headers["X-SIGNATURE"]  # a signature over the other body
    refused, posted = await asyncio.gather(bank.send(PAYMENT_PATH, forged_text, forged), bank.send(PAYMENT_PATH, body_text, headers))
    assert (refused.code, refused.rule) == ("4012500", "signature")
    assert posted.code == "2002500", posted.body
    assert await posted_count(gateway_server.pool) == 1


async def test_each_snap_request_has_one_log_line_with_its_request_id_and_no_secret(gateway_server, bank, bills):
    bill = await bills.create()
    token = await bank.token()
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        inquiry = await bank.inquiry(bill.payment_code)
        payment = await bank.pay(bill.payment_code, bill.total_rupiah, inquiry.request_id)
    assert (inquiry.code, payment.code) == ("2002400", "2002500")
    lines = [line for line in logs if line.get("path", "").startswith("/snap/")]
    assert [line["event"] for line in lines] == ["snap.exchange", "snap.exchange"], lines
    assert [line["response_code"] for line in lines] == ["2002400", "2002500"]
    assert all(line["status"] == 200 and line["method"] == "POST" and line["partner"] == "BANKKALBAR" for line in lines)
    assert [line["request_id"] for line in lines] == [inquiry.headers["X-Request-ID"], payment.headers["X-Request-ID"]]
    assert not any(token in repr(line) or bank.credentials.client_secret in repr(line) for line in lines)


async def test_a_request_the_database_cannot_read_fails_only_itself(gateway_server, bank, bills):
    """A NUL in virtualAccountNo (a JSON escape) with a made-up token, sent among
    genuine payments: before the fix it failed the shared statement, and
    genuine payments grouped with it were answered 5002500."""
    bill_list = [await bills.create() for _ in range(20)]
    genuine = [await signed(bank, PAYMENT_PATH, payment_body(bank, bill, f"g-{i}")) for i, bill in enumerate(bill_list)]
    bad_text, bad_headers = await signed(bank, PAYMENT_PATH, payment_body(bank, bill_list[0], "bad", virtualAccountNo="\u0000"))
    bad_headers = {**bad_headers, "Authorization": "Bearer not-a-real-token"}
    sends = [bank.send(PAYMENT_PATH, text, headers) for text, headers in genuine[:10]]
    sends.append(bank.send(PAYMENT_PATH, bad_text, bad_headers))
    sends += [bank.send(PAYMENT_PATH, text, headers) for text, headers in genuine[10:]]
    responses = await asyncio.gather(*sends)
    bad = responses.pop(10)
    assert [r.code for r in responses] == ["2002500"] * 20, [r.body for r in responses if r.code != "2002500"]
    assert bad.rule == "token-unknown" and bad.code.startswith("401"), bad.body
    assert await posted_count(gateway_server.pool) == 20


async def test_a_request_answered_429_has_not_used_up_its_external_id(gateway_server, make_bank, bills):
    """Two payments at once on a one-per-second limit: one is refused 429, and
    its X-EXTERNAL-ID stays free for the bank's next, different request."""
    bank = await make_bank(partner_id="SLOWBANK", requests_per_second_max=1)
    first, second, third = await bills.create(), await bills.create(), await bills.create()
    requests = [await signed(bank, PAYMENT_PATH, payment_body(bank, bill, f"r-{i}")) for i, bill in enumerate((first, second))]
    await asyncio.sleep(1.1)  # a full bucket (the token request took from it): one request's worth
    responses = await asyncio.gather(*(bank.send(PAYMENT_PATH, text, headers) for text, headers in requests))
    assert sorted(r.rule or "" for r in responses) == ["", "rate-limit"], [r.body for r in responses]
    refused_headers = requests[[r.rule for r in responses].index("rate-limit")][1]
    await asyncio.sleep(1.1)
    text, headers = await signed(bank, PAYMENT_PATH, payment_body(bank, third, "r-next"),
                                 external_id=refused_headers["X-EXTERNAL-ID"])
    reused = await bank.send(PAYMENT_PATH, text, headers)
    assert reused.code == "2002500", reused.body
