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
