"""The tampering matrix: a correctly signed payment, changed in one place after
signing, is refused with the right code and posts nothing. Then a lost
response, a repeat, and a status query; then both encodings and paddings."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from aiohttp import ClientSession, web
from snap_support import journal_count, payment_body, posted_count, signed

from bank_adapters.snap import protocol
from bank_adapters.snap.client import INQUIRY_PATH, PAYMENT_PATH, SnapClient


def _set(body: dict, dotted: str, value) -> dict:
    body = json.loads(json.dumps(body))
    target = body
    *parents, last = dotted.split(".")
    for part in parents:
        target = target[part]
    target[last] = value
    return body


BODY_CHANGES = [
    ("partnerServiceId", "   54321"),
    ("customerNo", "00000000001"),
    ("virtualAccountNo", "   1234500000000001"),
    ("paymentRequestId", "someone-else"),
    ("paidAmount.value", "1.00"),
    ("paidAmount.currency", "USD"),
    ("totalAmount.value", "1.00"),
    ("trxDateTime", "2020-01-01T00:00:00+07:00"),
    ("referenceNo", "forged"),
    ("flagAdvise", "Y"),
    ("channelCode", 6012),
]


@pytest.mark.parametrize(("field", "value"), BODY_CHANGES, ids=[f for f, _ in BODY_CHANGES])
async def test_body_field_changed_after_signing_is_refused(field, value, gateway_server, bank, bills):
    bill = await bills.create()
    body = payment_body(bank, bill)
    _, headers = await signed(bank, PAYMENT_PATH, body)
    response = await bank.send(PAYMENT_PATH, json.dumps(_set(body, field, value)), headers)
    assert response.code == "4012500", response.body
    assert response.body["additionalInfo"]["rule"] == "signature"
    assert await posted_count(gateway_server.pool) == 0


async def test_whitespace_is_not_tampering(gateway_server, bank, bills):
    """The body hash is over the minified body: re-indenting keeps the signature."""
    bill = await bills.create()
    body = payment_body(bank, bill)
    _, headers = await signed(bank, PAYMENT_PATH, body)
    response = await bank.send(PAYMENT_PATH, json.dumps(body, indent=4), headers)
    assert response.code == "2002500"


def _other_timestamp(headers: dict) -> str:
    moment = protocol.parse_timestamp(headers["X-TIMESTAMP"])
    return protocol.format_timestamp(moment + dt.timedelta(seconds=1))


HEADER_CHANGES = {
    "X-TIMESTAMP": (_other_timestamp, "4012500", "signature"),
    "X-SIGNATURE": (lambda h: h["X-SIGNATURE"][:-4] + ("AAA=" if not h["X-SIGNATURE"].endswith("AAA=") else "BBB="), "4012500", "signature"),
    "Authorization": (lambda h: h["Authorization"] + "x", "4012501", "token-unknown"),
    "CHANNEL-ID": (lambda h: "95999", "4012500", "channel-id"),
    "X-PARTNER-ID": (lambda h: "NOBODY", "4012500", "partner-id"),
}


@pytest.mark.parametrize("header", HEADER_CHANGES)
async def test_header_changed_after_signing_is_refused(header, gateway_server, bank, bills):
    bill = await bills.create()
    body_text, headers = await signed(bank, PAYMENT_PATH, payment_body(bank, bill))
    change, code, rule = HEADER_CHANGES[header]
    headers[header] = change(headers)
    response = await bank.send(PAYMENT_PATH, body_text, headers)
    assert (response.code, response.rule) == (code, rule), response.body
    assert await posted_count(gateway_server.pool) == 0


@pytest.mark.parametrize("url", ["/v1.0/transfer-va/payment?extra=1", "/v1.0/transfer-va/payment/"])
async def test_path_changed_after_signing_is_refused(url, gateway_server, bank, bills):
    bill = await bills.create()
    body_text, headers = await signed(bank, PAYMENT_PATH, payment_body(bank, bill))
    response = await bank.send(url, body_text, headers)
    assert response.http_status in (401, 404)
    if response.http_status == 401:
        assert (response.code, response.rule) == ("4012500", "signature")
    assert await posted_count(gateway_server.pool) == 0


async def test_request_signed_for_inquiry_sent_to_payment_is_refused(gateway_server, bank, bills):
    bill = await bills.create()
    body_text, headers = await signed(bank, INQUIRY_PATH, payment_body(bank, bill))
    response = await bank.send(PAYMENT_PATH, body_text, headers)
    assert (response.code, response.rule) == ("4012500", "signature")
    assert await posted_count(gateway_server.pool) == 0


async def test_other_partners_token_is_refused(gateway_server, bank, make_bank, bills):
    other = await make_bank()
    bill = await bills.create()
    body = payment_body(bank, bill)
    body_text = json.dumps(body)
    headers = bank.signed(PAYMENT_PATH, body_text, await other.token())
    response = await bank.send(PAYMENT_PATH, body_text, headers)
    assert (response.code, response.rule) == ("4012501", "token-partner")
    assert await posted_count(gateway_server.pool) == 0


async def test_expired_token_is_refused_and_the_client_fetches_a_new_one(gateway_server, bank, bills):
    bill = await bills.create()
    body_text, headers = await signed(bank, PAYMENT_PATH, payment_body(bank, bill))
    await gateway_server.pool.execute("update snap_tokens set expires_at = now() - interval '1 second'")
    response = await bank.send(PAYMENT_PATH, body_text, headers)
    assert (response.code, response.rule) == ("4012501", "token-expired")
    assert await posted_count(gateway_server.pool) == 0
    # The virtual bank recovers by itself: 401xx01 -> new token -> same request.
    assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "2002500"


@pytest.mark.parametrize("minutes", [-10, 10])
async def test_timestamp_outside_window_is_refused(minutes, gateway_server, bank, bills):
    bill = await bills.create()
    moment = protocol.format_timestamp(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes))
    body_text, headers = await signed(bank, PAYMENT_PATH, payment_body(bank, bill), timestamp=moment)
    response = await bank.send(PAYMENT_PATH, body_text, headers)
    assert (response.code, response.rule) == ("4012500", "timestamp-window")
    assert await posted_count(gateway_server.pool) == 0


async def test_reused_external_id_for_another_payment_is_refused(gateway_server, bank, bills):
    first, second = await bills.create(), await bills.create()
    body_text, headers = await signed(bank, PAYMENT_PATH, payment_body(bank, first, "p-1"))
    assert (await bank.send(PAYMENT_PATH, body_text, headers)).code == "2002500"
    body_text, headers = await signed(bank, PAYMENT_PATH, payment_body(bank, second, "p-2"), external_id=headers["X-EXTERNAL-ID"])
    response = await bank.send(PAYMENT_PATH, body_text, headers)
    assert (response.code, response.rule) == ("4092500", "external-id")
    assert await posted_count(gateway_server.pool) == 1


# ------------------------------------------------- lost response, repeat ----


class LosingProxy:
    """Forwards to the gateway; drops the first `losses` payment responses
    after the gateway has answered (the bank never sees them)."""

    def __init__(self, upstream: str, losses: int) -> None:
        self.upstream = upstream
        self.losses = losses
        self.forwarded = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with ClientSession() as session:
            async with session.post(self.upstream + request.path_qs, data=body, headers=headers) as upstream:
                payload = await upstream.read()
                status = upstream.status
        self.forwarded += 1
        if request.path.endswith("/payment") and self.losses > 0:
            self.losses -= 1
            assert request.transport is not None
            request.transport.close()  # the answer is lost on the way back
            await asyncio.sleep(0.05)
        return web.Response(body=payload, status=status, content_type="application/json")


@pytest.fixture
async def losing_proxy(gateway_server):
    proxy = LosingProxy(gateway_server.url, losses=1)
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    proxy.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield proxy
    await runner.cleanup()


async def test_lost_response_then_repeat_posts_once_and_status_shows_it(gateway_server, bank, bills, losing_proxy):
    bill = await bills.create()
    inquiry = await bank.inquiry(bill.payment_code)
    journal_before = await journal_count(gateway_server.pool)
    async with SnapClient(losing_proxy.url, bank.credentials, retries_max=2) as via_proxy:
        payment = await via_proxy.pay(bill.payment_code, bill.total_rupiah, inquiry.request_id)
    # The first answer was lost; the client repeated with the same X-EXTERNAL-ID
    # and paymentRequestId, and the gateway answered the committed result.
    assert payment.attempts == 2
    assert payment.code == "2002500"
    assert payment.body["additionalInfo"]["outcome"] == "replayed"
    assert await posted_count(gateway_server.pool) == 1
    assert await journal_count(gateway_server.pool) == journal_before + 1
    # A flagAdvise repeat, as banks send them later, changes nothing either.
    advice = await bank.pay(bill.payment_code, bill.total_rupiah, inquiry.request_id, flag_advise=True)
    assert advice.code == "2002500"
    assert await posted_count(gateway_server.pool) == 1
    status = await bank.status(bill.payment_code, inquiry.request_id, inquiry.request_id)
    assert status.code == "2002600"
    assert status.body["virtualAccountData"]["paymentFlagStatus"] == "00"
    assert status.body["virtualAccountData"]["paidAmount"]["value"] == f"{bill.total_rupiah}.00"
    assert status.body["additionalInfo"]["paymentId"] == payment.body["additionalInfo"]["paymentId"]


async def test_every_answer_lost_then_status_tells_the_bank(gateway_server, bank, bills, losing_proxy):
    losing_proxy.losses = 10
    bill = await bills.create()
    async with SnapClient(losing_proxy.url, bank.credentials, retries_max=1) as via_proxy:
        payment = await via_proxy.pay(bill.payment_code, bill.total_rupiah, "lost-twice")
    assert payment.service == "26"
    assert payment.code == "2002600"
    assert await posted_count(gateway_server.pool) == 1


# ---------------------------------------------- encodings and paddings ----


@pytest.mark.parametrize("encoding", ["base64", "hex"])
@pytest.mark.parametrize("padding", ["spaces", "zeros"])
async def test_full_flow_in_each_encoding_and_padding(encoding, padding, gateway_server, make_bank, bills):
    bank = await make_bank(encoding=encoding, padding=padding, service_id="12345")
    expected_service_id = "   12345" if padding == "spaces" else "00012345"
    assert bank.credentials.partner_service_id == expected_service_id
    bill = await bills.create()
    inquiry = await bank.inquiry(bill.payment_code)
    assert inquiry.code == "2002400", inquiry.body
    assert inquiry.body["virtualAccountData"]["virtualAccountNo"] == expected_service_id + bill.payment_code
    body_text, headers = await signed(bank, PAYMENT_PATH, payment_body(bank, bill, inquiry.request_id))
    assert len(headers["X-SIGNATURE"]) == (88 if encoding == "base64" else 128)
    assert (await bank.send(PAYMENT_PATH, body_text, headers)).code == "2002500"
    assert (await bank.status(bill.payment_code, inquiry.request_id)).code == "2002600"
    assert await posted_count(gateway_server.pool) == 1


async def test_signature_in_the_other_encoding_is_refused(gateway_server, make_bank, bills):
    bank = await make_bank(encoding="hex")
    bill = await bills.create()
    body_text, headers = await signed(bank, PAYMENT_PATH, payment_body(bank, bill))
    headers["X-SIGNATURE"] = protocol.encode_signature(bytes.fromhex(headers["X-SIGNATURE"]), "base64")
    response = await bank.send(PAYMENT_PATH, body_text, headers)
    assert (response.code, response.rule) == ("4012500", "signature")
    assert "hex" in response.body["additionalInfo"]["reason"]


async def test_partner_service_id_in_the_other_padding_is_refused(gateway_server, make_bank, bills):
    bank = await make_bank(padding="zeros")
    bill = await bills.create()
    body = payment_body(bank, bill)
    body.update(partnerServiceId="   12345", virtualAccountNo="   12345" + bill.payment_code)
    body_text, headers = await signed(bank, PAYMENT_PATH, body)
    response = await bank.send(PAYMENT_PATH, body_text, headers)
    assert (response.code, response.rule) == ("4002501", "partner-service-id-padding")
    assert "'00012345'" in response.body["additionalInfo"]["reason"]
    assert await posted_count(gateway_server.pool) == 0
