"""Every SNAP response code that applies to services 73, 24, 25 and 26, each in
its own test, over real HTTP against the real gateway and PostgreSQL.

Codes of the shared table that do not apply (documented in docs/snap.md):
202xx00 (payments commit synchronously), 404xx01 outside service 26, 404xx13
for inquiry (an inquiry's optional amount is informative), 409 and 404 for 73.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from snap_support import journal_count, payment_body, posted_count, signed

from bank_adapters.snap import protocol
from bank_adapters.snap.client import INQUIRY_PATH, PAYMENT_PATH, STATUS_PATH, TOKEN_BODY, token_headers

# ------------------------------------------------------------ service 73 ----


async def test_2007300_token_issued(bank):
    response = await bank.request_token()
    assert response.code == "2007300"
    assert response.body["tokenType"] == "Bearer"
    assert response.body["expiresIn"] == "900"
    assert response.headers["X-TIMESTAMP"]


async def test_4007301_token_grant_type_wrong(bank):
    headers = token_headers(bank.credentials.client_key, bank.credentials.private_key_pem)
    response = await bank.send("/v1.0/access-token/b2b", '{"grantType":"password"}', headers)
    assert response.code == "4007301"
    assert response.body["additionalInfo"]["field"] == "grantType"


async def test_4007301_token_timestamp_format(bank):
    headers = token_headers(bank.credentials.client_key, bank.credentials.private_key_pem, "2025-09-24 10:55:00")
    response = await bank.send("/v1.0/access-token/b2b", TOKEN_BODY, headers)
    assert response.code == "4007301"
    assert "X-TIMESTAMP" in response.body["responseMessage"]


async def test_4007302_token_header_missing(bank):
    headers = token_headers(bank.credentials.client_key, bank.credentials.private_key_pem)
    del headers["X-CLIENT-KEY"]
    response = await bank.send("/v1.0/access-token/b2b", TOKEN_BODY, headers)
    assert response.code == "4007302"
    assert response.body["responseMessage"] == "Invalid Mandatory Field [X-CLIENT-KEY]"


async def test_4007302_token_grant_type_missing(bank):
    headers = token_headers(bank.credentials.client_key, bank.credentials.private_key_pem)
    response = await bank.send("/v1.0/access-token/b2b", "{}", headers)
    assert response.code == "4007302"
    assert response.body["additionalInfo"]["field"] == "grantType"


async def test_4017300_token_signature_wrong_key_shows_string_to_sign_in_sandbox(gateway_server, bank):
    from snap_support import key_pair

    other_private, _ = key_pair(1)
    headers = token_headers(bank.credentials.client_key, other_private)
    response = await bank.send("/v1.0/access-token/b2b", TOKEN_BODY, headers)
    assert response.code == "4017300"
    info = response.body["additionalInfo"]
    assert info["rule"] == "signature"
    assert gateway_server.sandbox
    assert info["stringToSign"] == f"{bank.credentials.client_key}|{headers['X-TIMESTAMP']}"


async def test_4017300_token_unknown_client_key(bank):
    headers = token_headers("nobody", bank.credentials.private_key_pem)
    response = await bank.send("/v1.0/access-token/b2b", TOKEN_BODY, headers)
    assert response.code == "4017300"
    assert response.body["additionalInfo"]["rule"] == "client-key"


async def test_4017300_token_timestamp_outside_window(bank):
    stale = protocol.format_timestamp(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
    headers = token_headers(bank.credentials.client_key, bank.credentials.private_key_pem, stale)
    response = await bank.send("/v1.0/access-token/b2b", TOKEN_BODY, headers)
    assert response.code == "4017300"
    assert response.body["additionalInfo"]["rule"] == "timestamp-window"
    # Which way the bank's clock is off, in words (the audit of session 8
    # found a 2020 timestamp reported as "+217784811 s").
    assert response.body["additionalInfo"]["reason"].startswith("X-TIMESTAMP is 60")
    assert " s behind the gateway's clock;" in response.body["additionalInfo"]["reason"]


async def test_4017300_token_timestamp_from_the_future(bank):
    early = protocol.format_timestamp(dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))
    headers = token_headers(bank.credentials.client_key, bank.credentials.private_key_pem, early)
    response = await bank.send("/v1.0/access-token/b2b", TOKEN_BODY, headers)
    assert (response.code, response.body["additionalInfo"]["rule"]) == ("4017300", "timestamp-window")
    reason = response.body["additionalInfo"]["reason"]
    assert reason.startswith(("X-TIMESTAMP is 7199 s ahead of", "X-TIMESTAMP is 7200 s ahead of")), reason


async def test_4297300_token_rate_limited(make_bank):
    bank = await make_bank(requests_per_second_max=1)
    codes = [(await bank.request_token()).code for _ in range(3)]
    assert codes[0] == "2007300"
    assert "4297300" in codes


# ------------------------------------------- header rules, services 24-26 ----

SERVICES = {"24": INQUIRY_PATH, "25": PAYMENT_PATH, "26": STATUS_PATH}


def body_for(service: str, bank, bill) -> dict:
    va = bank.virtual_account(bill.payment_code)
    if service == "24":
        return {**va, "inquiryRequestId": "inq-1"}
    if service == "25":
        return payment_body(bank, bill)
    return {**va, "paymentRequestId": "pay-0001"}


@pytest.mark.parametrize("service", SERVICES)
async def test_400xx01_header_format(service, gateway_server, bank, bills):
    bill = await bills.create()
    body_text, headers = await signed(bank, SERVICES[service], body_for(service, bank, bill))
    headers["X-EXTERNAL-ID"] = "ABC-not-numeric"
    response = await bank.send(SERVICES[service], body_text, headers)
    assert response.code == f"400{service}01"
    assert response.body["responseMessage"] == "Invalid Field Format [X-EXTERNAL-ID]"
    assert await posted_count(gateway_server.pool) == 0


@pytest.mark.parametrize("service", SERVICES)
async def test_400xx01_body_field_format(service, gateway_server, bank, bills):
    bill = await bills.create()
    body = body_for(service, bank, bill)
    body["customerNo"] = "12AB"
    body["virtualAccountNo"] = body["partnerServiceId"] + "12AB"
    body_text, headers = await signed(bank, SERVICES[service], body)
    response = await bank.send(SERVICES[service], body_text, headers)
    assert response.code == f"400{service}01"
    assert response.body["additionalInfo"]["field"] == "customerNo"


@pytest.mark.parametrize("service", SERVICES)
async def test_400xx02_header_missing(service, bank, bills):
    bill = await bills.create()
    body_text, headers = await signed(bank, SERVICES[service], body_for(service, bank, bill))
    del headers["CHANNEL-ID"]
    response = await bank.send(SERVICES[service], body_text, headers)
    assert response.code == f"400{service}02"
    assert response.body["responseMessage"] == "Invalid Mandatory Field [CHANNEL-ID]"


@pytest.mark.parametrize("service", SERVICES)
async def test_400xx02_body_field_missing(service, bank, bills):
    bill = await bills.create()
    body = body_for(service, bank, bill)
    del body["virtualAccountNo"]
    body_text, headers = await signed(bank, SERVICES[service], body)
    response = await bank.send(SERVICES[service], body_text, headers)
    assert response.code == f"400{service}02"
    assert response.body["responseMessage"] == "Invalid Mandatory Field [virtualAccountNo]"


@pytest.mark.parametrize("service", SERVICES)
async def test_401xx00_signature(service, gateway_server, bank, bills):
    bill = await bills.create()
    body_text, headers = await signed(bank, SERVICES[service], body_for(service, bank, bill))
    headers["X-SIGNATURE"] = protocol.sign_transaction("not-the-secret", "x", "base64")
    response = await bank.send(SERVICES[service], body_text, headers)
    assert response.code == f"401{service}00"
    info = response.body["additionalInfo"]
    assert info["rule"] == "signature"
    # Sandbox: what the gateway signed, so the integrator can diff; never the secret.
    token = headers["Authorization"].removeprefix("Bearer ")
    path = "/snap" + SERVICES[service]
    assert info["stringToSign"] == f"POST:{path}:{token}:{protocol.body_sha256_hex(body_text)}:{headers['X-TIMESTAMP']}"
    assert info["bodySha256"] == protocol.body_sha256_hex(body_text)
    assert bank.credentials.client_secret not in response.body.__repr__()


@pytest.mark.parametrize("service", SERVICES)
async def test_401xx01_token_unknown(service, bank, bills):
    bill = await bills.create()
    body = body_for(service, bank, bill)
    body_text = __import__("json").dumps(body)
    headers = bank.signed(SERVICES[service], body_text, "not-a-token-we-issued")
    response = await bank.send(SERVICES[service], body_text, headers)
    assert response.code == f"401{service}01"
    assert response.body["additionalInfo"]["rule"] == "token-unknown"


@pytest.mark.parametrize("service", SERVICES)
async def test_409xx00_external_id_reused(service, gateway_server, bank, bills):
    bill = await bills.create()
    first = body_for(service, bank, bill)
    body_text, headers = await signed(bank, SERVICES[service], first)
    assert (await bank.send(SERVICES[service], body_text, headers)).http_status != 409
    second = dict(first, customerNo="99999999999", virtualAccountNo=first["partnerServiceId"] + "99999999999")
    body_text, headers = await signed(bank, SERVICES[service], second, external_id=headers["X-EXTERNAL-ID"])
    response = await bank.send(SERVICES[service], body_text, headers)
    assert response.code == f"409{service}00"
    assert response.body["additionalInfo"]["rule"] == "external-id"


@pytest.mark.parametrize("service", SERVICES)
async def test_429xx00_rate_limited(service, make_bank, bills):
    bank = await make_bank(requests_per_second_max=1)
    bill = await bills.create()
    await bank.token()
    codes = []
    for _ in range(3):
        body_text, headers = await signed(bank, SERVICES[service], body_for(service, bank, bill))
        codes.append((await bank.send(SERVICES[service], body_text, headers)).code)
    assert f"429{service}00" in codes


@pytest.mark.parametrize("service", SERVICES)
async def test_404xx11_partner_service_id_not_ours(service, bank, bills):
    bill = await bills.create()
    body = body_for(service, bank, bill)
    body["partnerServiceId"] = "   99999"
    body["virtualAccountNo"] = "   99999" + bill.payment_code
    body_text, headers = await signed(bank, SERVICES[service], body)
    response = await bank.send(SERVICES[service], body_text, headers)
    assert response.code == f"404{service}11"


@pytest.mark.parametrize("service", SERVICES)
async def test_404xx18_virtual_account_inconsistent(service, gateway_server, bank, bills):
    bill = await bills.create()
    body = body_for(service, bank, bill)
    body["virtualAccountNo"] = body["partnerServiceId"] + "00000000000"
    body_text, headers = await signed(bank, SERVICES[service], body)
    response = await bank.send(SERVICES[service], body_text, headers)
    assert response.code == f"404{service}18"
    assert response.body["additionalInfo"]["rule"] == "virtual-account-no"
    assert await posted_count(gateway_server.pool) == 0


# ------------------------------------------------------------ service 24 ----


async def test_2002400_inquiry(bank, bills):
    bill = await bills.create(workers=3)
    response = await bank.inquiry(bill.payment_code)
    assert response.code == "2002400"
    data = response.body["virtualAccountData"]
    assert data["inquiryStatus"] == "00"
    assert data["totalAmount"] == {"value": f"{bill.total_rupiah}.00", "currency": "IDR"}
    assert data["virtualAccountNo"] == "   12345" + bill.payment_code
    assert data["inquiryRequestId"] == response.request_id
    assert sum(int(d["billAmount"]["value"][:-3]) for d in data["billDetails"]) == bill.total_rupiah
    assert {d["billName"] for d in data["billDetails"]} >= {"JKK", "JKM", "JHT"}


async def test_4042412_inquiry_bill_not_found(bank):
    response = await bank.inquiry("99999999999")
    assert response.code == "4042412"
    assert response.body["virtualAccountData"]["inquiryStatus"] == "01"


async def test_4042414_inquiry_paid_bill(bank, bills):
    bill = await bills.create()
    assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "2002500"
    response = await bank.inquiry(bill.payment_code)
    assert response.code == "4042414"


async def test_4042419_inquiry_bill_expired(bank, bills, clock):
    bill = await bills.create()
    clock.advance(days=400)
    response = await bank.inquiry(bill.payment_code)
    assert response.code == "4042419"


# ------------------------------------------------------------ service 25 ----


async def test_2002500_payment_posts_once(gateway_server, bank, bills):
    bill = await bills.create()
    inquiry = await bank.inquiry(bill.payment_code)
    journal_before = await journal_count(gateway_server.pool)
    response = await bank.pay(bill.payment_code, bill.total_rupiah, inquiry.request_id)
    assert response.code == "2002500"
    data = response.body["virtualAccountData"]
    assert data["paymentFlagStatus"] == "00"
    assert data["paidAmount"] == {"value": f"{bill.total_rupiah}.00", "currency": "IDR"}
    assert response.body["additionalInfo"]["outcome"] == "posted"
    assert await posted_count(gateway_server.pool) == 1
    assert await journal_count(gateway_server.pool) == journal_before + 1


async def test_2002500_repeated_payment_with_flag_advise_posts_nothing(gateway_server, bank, bills):
    bill = await bills.create()
    first = await bank.pay(bill.payment_code, bill.total_rupiah, "pay-repeat-1")
    journal_after_first = await journal_count(gateway_server.pool)
    again = await bank.pay(bill.payment_code, bill.total_rupiah, "pay-repeat-1", flag_advise=True)
    plain = await bank.pay(bill.payment_code, bill.total_rupiah, "pay-repeat-1")
    assert [first.code, again.code, plain.code] == ["2002500"] * 3
    assert again.body["additionalInfo"]["outcome"] == "replayed"
    assert again.body["additionalInfo"]["paymentId"] == first.body["additionalInfo"]["paymentId"]
    assert await posted_count(gateway_server.pool) == 1
    assert await journal_count(gateway_server.pool) == journal_after_first


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("value", "1000.50", "non-zero decimals"),
        ("value", "1000.000", "exactly two decimals"),
        ("value", "1000", "exactly two decimals"),
        ("currency", "USD", "IDR"),
    ],
)
async def test_4002501_amount_format(field, value, reason, gateway_server, bank, bills):
    bill = await bills.create()
    body = payment_body(bank, bill)
    body["paidAmount"] = {**body["paidAmount"], field: value}
    body_text, headers = await signed(bank, PAYMENT_PATH, body)
    response = await bank.send(PAYMENT_PATH, body_text, headers)
    assert response.code == "4002501"
    assert response.body["responseMessage"] == f"Invalid Field Format [paidAmount.{field}]"
    assert reason in response.body["additionalInfo"]["reason"]
    assert await posted_count(gateway_server.pool) == 0


async def test_4002502_payment_request_id_missing(bank, bills):
    bill = await bills.create()
    body = payment_body(bank, bill)
    del body["paymentRequestId"]
    body_text, headers = await signed(bank, PAYMENT_PATH, body)
    response = await bank.send(PAYMENT_PATH, body_text, headers)
    assert response.code == "4002502"
    assert response.body["responseMessage"] == "Invalid Mandatory Field [paymentRequestId]"


async def test_4042512_payment_bill_not_found(gateway_server, bank):
    response = await bank.pay("99999999999", 100_000)
    assert response.code == "4042512"
    assert await posted_count(gateway_server.pool) == 0


async def test_4042513_payment_wrong_amount(gateway_server, bank, bills):
    bill = await bills.create()
    response = await bank.pay(bill.payment_code, bill.total_rupiah - 1)
    assert response.code == "4042513"
    assert response.body["virtualAccountData"]["paymentFlagStatus"] == "01"
    assert await posted_count(gateway_server.pool) == 0


async def test_4042514_payment_paid_bill(gateway_server, bank, bills):
    bill = await bills.create()
    assert (await bank.pay(bill.payment_code, bill.total_rupiah, "first-payer")).code == "2002500"
    response = await bank.pay(bill.payment_code, bill.total_rupiah, "second-payer")
    assert response.code == "4042514"
    assert await posted_count(gateway_server.pool) == 1


async def test_4042518_payment_request_id_differs_from_inquiry(gateway_server, bank, bills):
    bill = await bills.create()
    inquiry = await bank.inquiry(bill.payment_code)
    response = await bank.pay(bill.payment_code, bill.total_rupiah, "not-" + inquiry.request_id)
    assert response.code == "4042518"
    assert response.body["additionalInfo"]["rule"] == "payment-request-id"
    assert inquiry.request_id in response.body["additionalInfo"]["reason"]
    assert await posted_count(gateway_server.pool) == 0


async def test_4042518_payment_request_id_reused_for_another_amount(gateway_server, bank, bills):
    first_bill = await bills.create()
    second_bill = await bills.create(workers=2)
    assert (await bank.pay(first_bill.payment_code, first_bill.total_rupiah, "same-id")).code == "2002500"
    response = await bank.pay(second_bill.payment_code, second_bill.total_rupiah, "same-id")
    assert response.code == "4042518"
    assert await posted_count(gateway_server.pool) == 1


async def test_4042519_payment_bill_expired(gateway_server, bank, bills, clock):
    bill = await bills.create()
    clock.advance(days=400)
    response = await bank.pay(bill.payment_code, bill.total_rupiah)
    assert response.code == "4042519"
    assert await posted_count(gateway_server.pool) == 0


# ------------------------------------------------------------ service 26 ----


async def test_2002600_status_of_committed_payment(bank, bills):
    bill = await bills.create()
    await bank.pay(bill.payment_code, bill.total_rupiah, "pay-status-1")
    response = await bank.status(bill.payment_code, "pay-status-1")
    assert response.code == "2002600"
    data = response.body["virtualAccountData"]
    assert data["paymentFlagStatus"] == "00"
    assert data["paidAmount"]["value"] == f"{bill.total_rupiah}.00"


async def test_4042601_status_transaction_not_found(bank, bills):
    bill = await bills.create()
    response = await bank.status(bill.payment_code, "never-paid")
    assert response.code == "4042601"


async def test_4042618_status_for_another_customer_no(bank, bills):
    bill = await bills.create()
    other = await bills.create(workers=1)
    await bank.pay(bill.payment_code, bill.total_rupiah, "pay-status-2")
    response = await bank.status(other.payment_code, "pay-status-2")
    assert response.code == "4042618"


# ------------------------------------------- 500 and 504: our side fails ----


@pytest.mark.parametrize("service", SERVICES)
async def test_500xx00_general_error_when_the_ledger_fails(service, gateway_server, bank, bills, monkeypatch):
    bill = await bills.create()
    payments = gateway_server.payments

    async def broken(*args, **kwargs):
        raise RuntimeError("ledger down (test)")

    monkeypatch.setattr(payments, {"24": "inquire", "25": "pay", "26": "status"}[service], broken)
    body_text, headers = await signed(bank, SERVICES[service], body_for(service, bank, bill))
    response = await bank.send(SERVICES[service], body_text, headers)
    assert response.code == f"500{service}00"
    assert await posted_count(gateway_server.pool) == 0


async def test_5007300_general_error_when_the_token_store_fails(gateway_server, bank):
    await gateway_server.pool.execute("alter table snap_tokens rename to snap_tokens_away")
    try:
        response = await bank.request_token()
    finally:
        await gateway_server.pool.execute("alter table snap_tokens_away rename to snap_tokens")
    assert response.code == "5007300"


@pytest.mark.parametrize("service", SERVICES)
async def test_504xx00_timeout_when_the_ledger_is_slow(service, slow_ledger_gateway, bills, monkeypatch):
    gateway, bank = slow_ledger_gateway
    bill = await bills.create()  # same database as the gateway's
    payments = gateway.payments
    name = {"24": "inquire", "25": "pay", "26": "status"}[service]
    original = getattr(payments, name)

    async def slow(*args, **kwargs):
        await asyncio.sleep(0.5)
        return await original(*args, **kwargs)

    monkeypatch.setattr(payments, name, slow)
    body_text, headers = await signed(bank, SERVICES[service], body_for(service, bank, bill))
    response = await bank.send(SERVICES[service], body_text, headers)
    assert response.code == f"504{service}00"
