"""Fixes from an integrator's audit of the SNAP adapter, each as the bank sees
it over HTTP: the Authorization scheme's case, the field a refusal names, the
admin API's conflict field, and a repeated paymentRequestId with "0.00"."""

from __future__ import annotations

import datetime as dt

import aiohttp
import pytest
from snap_support import key_pair, payment_body, posted_count, signed

from bank_adapters.snap import protocol
from bank_adapters.snap.client import (
    INQUIRY_PATH,
    PAYMENT_PATH,
    TOKEN_BODY,
    TOKEN_PATH,
    token_headers,
)

# ------------------------------------------- Authorization scheme's case ----


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
async def test_the_bearer_scheme_is_accepted_in_any_case(bank, bills, scheme):
    """RFC 9110 11.1: an authentication scheme is case-insensitive."""
    bill = await bills.create()
    text, headers = await signed(bank, INQUIRY_PATH, {**bank.virtual_account(bill.payment_code), "inquiryRequestId": "case-0001"})
    token = headers["Authorization"].removeprefix("Bearer ")
    headers["Authorization"] = f"{scheme} {token}"
    response = await bank.send(INQUIRY_PATH, text, headers)
    assert response.code == "2002400", response.body


async def test_another_scheme_is_still_token_format(bank, bills):
    bill = await bills.create()
    text, headers = await signed(bank, INQUIRY_PATH, {**bank.virtual_account(bill.payment_code), "inquiryRequestId": "case-0002"})
    headers["Authorization"] = "Basic x"
    response = await bank.send(INQUIRY_PATH, text, headers)
    assert (response.code, response.rule) == ("4012401", "token-format")


# ------------------------------------------------- admin API conflicts ----


async def _add_partner(server, **fields) -> tuple[int, dict]:
    payload = {"public_key": key_pair(0)[1], **fields}
    async with aiohttp.ClientSession() as session, session.post(
        f"{server.url}/snap/admin/partners", json=payload, headers={"Authorization": f"Bearer {server.admin_token}"}
    ) as response:
        return response.status, await response.json()


async def test_a_taken_client_key_is_named_client_key_and_a_taken_partner_id_partner_id(gateway_server):
    assert (await _add_partner(gateway_server, partner_id="BANKTAKEN", client_key="taken-key"))[0] == 201
    status, answer = await _add_partner(gateway_server, partner_id="BANKOTHER", client_key="taken-key")
    assert (status, answer["field"]) == (409, "client_key"), answer
    assert "client key" in answer["error"]
    status, answer = await _add_partner(gateway_server, partner_id="BANKTAKEN", client_key="fresh-key")
    assert (status, answer["field"]) == (409, "partner_id"), answer
    assert "partner id" in answer["error"]


# ------------------------------------- the field a refusal is about ----


def _info(response) -> tuple[str, str | None, str | None]:
    info = response.body["additionalInfo"]
    return response.code, info["rule"], info.get("field")


async def test_amount_refusals_name_the_amount_field(bank, bills):
    bill = await bills.create()
    assert _info(await bank.pay(bill.payment_code, bill.total_rupiah - 1)) == ("4042513", "amount", "paidAmount.value")
    body = payment_body(bank, bill, "total-0001", totalAmount={"value": f"{bill.total_rupiah + 1}.00", "currency": "IDR"})
    text, headers = await signed(bank, PAYMENT_PATH, body)
    assert _info(await bank.send(PAYMENT_PATH, text, headers)) == ("4042513", "total-amount", "totalAmount.value")


async def test_inconsistent_ids_name_their_field(bank, bills):
    bill = await bills.create()
    other = await bills.create(workers=1)
    inquiry = await bank.inquiry(bill.payment_code)
    refused = await bank.pay(bill.payment_code, bill.total_rupiah, "not-" + inquiry.request_id)
    assert _info(refused) == ("4042518", "payment-request-id", "paymentRequestId")
    assert refused.body["responseMessage"] == "Inconsistent Request [paymentRequestId]"  # unchanged
    assert (await bank.pay(bill.payment_code, bill.total_rupiah, inquiry.request_id)).code == "2002500"
    refused = await bank.status(other.payment_code, inquiry.request_id)
    assert _info(refused) == ("4042618", "customer-no", "customerNo")
    assert refused.body["responseMessage"] == "Inconsistent Request [customerNo]"  # unchanged
    reused = await bank.pay(other.payment_code, other.total_rupiah, inquiry.request_id)
    assert _info(reused) == ("4042518", "payment-request-id-reused", "paymentRequestId")


async def test_header_refusals_after_the_format_checks_name_their_header(bank, make_bank, bills):
    bill = await bills.create()
    body = {**bank.virtual_account(bill.payment_code), "inquiryRequestId": "hdr-field-1"}
    text, headers = await signed(bank, INQUIRY_PATH, body)
    assert (await bank.send(INQUIRY_PATH, text, headers)).code == "2002400"
    again = dict(body, inquiryRequestId="hdr-field-2")
    text, headers = await signed(bank, INQUIRY_PATH, again, external_id=headers["X-EXTERNAL-ID"])
    assert _info(await bank.send(INQUIRY_PATH, text, headers)) == ("4092400", "external-id", "X-EXTERNAL-ID")
    text, headers = await signed(bank, INQUIRY_PATH, body)
    headers["X-PARTNER-ID"] = "NOSUCHBANK"
    assert _info(await bank.send(INQUIRY_PATH, text, headers)) == ("4012400", "partner-id", "X-PARTNER-ID")
    text, headers = await signed(bank, INQUIRY_PATH, body)
    headers["CHANNEL-ID"] = "99999"
    assert _info(await bank.send(INQUIRY_PATH, text, headers)) == ("4012400", "channel-id", "CHANNEL-ID")
    text, headers = await signed(bank, INQUIRY_PATH, body)
    headers["Authorization"] = "Basic x"
    assert _info(await bank.send(INQUIRY_PATH, text, headers)) == ("4012401", "token-format", "Authorization")
    stale = protocol.format_timestamp(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    text, headers = await signed(bank, INQUIRY_PATH, body, timestamp=stale)
    assert _info(await bank.send(INQUIRY_PATH, text, headers)) == ("4012400", "timestamp-window", "X-TIMESTAMP")
    token = token_headers("no-such-key", bank.credentials.private_key_pem)
    assert _info(await bank.send(TOKEN_PATH, TOKEN_BODY, token)) == ("4017300", "client-key", "X-CLIENT-KEY")


# ------------------------------- a used paymentRequestId with "0.00" ----


async def test_a_used_payment_request_id_is_judged_before_the_amount_even_for_zero(gateway_server, bank, bills):
    """The ledger looks at a used paymentRequestId first: a repeat with another
    amount is 4042518 payment-request-id-reused, and "0.00" is another amount.
    It was 4042513 amount, as if the id were new."""
    bill = await bills.create()
    assert (await bank.pay(bill.payment_code, bill.total_rupiah, "zero-0001")).code == "2002500"
    other = await bank.pay(bill.payment_code, bill.total_rupiah + 1, "zero-0001")
    zero = await bank.pay(bill.payment_code, 0, "zero-0001")
    assert zero.body["virtualAccountData"]["paidAmount"]["value"] == "0.00"
    assert _info(other) == _info(zero) == ("4042518", "payment-request-id-reused", "paymentRequestId")
    assert zero.body["virtualAccountData"]["paymentFlagStatus"] == "01"
    # A new id with "0.00" is the wrong amount, as before.
    fresh = await bills.create(workers=1)
    assert _info(await bank.pay(fresh.payment_code, 0, "zero-0002")) == ("4042513", "amount", "paidAmount.value")
    assert await posted_count(gateway_server.pool) == 1


# ------------------------------------------------ the answer's trxDateTime ----


async def test_the_answers_trx_date_time_is_the_posting_time_not_the_requests(bank, bills):
    """The request's trxDateTime has no format in the SNAP facts and is not
    used; the answer's is when the payment was posted (docs/snap.md)."""
    bill = await bills.create()
    body = payment_body(bank, bill, "trx-0001", trxDateTime="2020-01-01T00:00:00+07:00")
    text, headers = await signed(bank, PAYMENT_PATH, body)
    paid = await bank.send(PAYMENT_PATH, text, headers)
    assert paid.code == "2002500"
    answered = paid.body["virtualAccountData"]["trxDateTime"]
    assert answered != body["trxDateTime"]
    status = await bank.status(bill.payment_code, "trx-0001")
    assert answered == status.body["virtualAccountData"]["transactionDate"]
    assert protocol.parse_timestamp(answered) is not None
