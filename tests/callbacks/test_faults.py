"""Each fault and each magic value, end to end: real gateway, a real SNAP
bank client, real receivers."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from bank_adapters.snap import protocol
from bank_adapters.snap.client import SnapClient
from bank_adapters.snap.routes import response_string_to_sign
from tests.snap.snap_support import register_partner, signed

PAYMENT = "/v1.0/transfer-va/payment"
INQUIRY = "/v1.0/transfer-va/inquiry"
HOLD_S = 0.3  # fault_hold_ms and magic_latency_ms of callback_gateway


@pytest.fixture
async def bank(callback_gateway):
    async with SnapClient(callback_gateway.url, await register_partner(callback_gateway, partner_id="BANKFAULT")) as client:
        yield client


async def _pay_raw(bank, bill, sen: str = "00", request_id: str = "pay-1", timeout_s: float = 5.0):
    body = bank.payment_body(bill.payment_code, bill.total_rupiah, request_id)
    for key in ("paidAmount", "totalAmount"):
        body[key]["value"] = f"{bill.total_rupiah}.{sen}"
    text, headers = await signed(bank, PAYMENT, body)
    return await bank.send(PAYMENT, text, headers, timeout_s=timeout_s)


async def _posted(pool, bill) -> int:
    return await pool.fetchval("select count(*) from payments p join bills b on b.id = p.bill_id where b.payment_code = $1", bill.payment_code)


def _signature_ok(bank, path: str, token: str, response) -> bool:
    sts = response_string_to_sign("POST", bank.url_path(path), token, response.text, response.headers["X-TIMESTAMP"])
    return protocol.verify_transaction(bank.credentials.client_secret, sts, response.headers["X-SIGNATURE"], bank.credentials.encoding)


# ------------------------------------------------------------ magic values --


async def test_magic_11_adds_latency_and_pays(callback_gateway, bank, bills):
    bill = await bills.create(workers=1)
    started = time.monotonic()
    response = await _pay_raw(bank, bill, "11")
    assert time.monotonic() - started >= HOLD_S
    assert response.ok and response.body["virtualAccountData"]["paidAmount"]["value"] == f"{bill.total_rupiah}.00"
    assert await _posted(callback_gateway.pool, bill) == 1


async def test_magic_22_posts_then_loses_the_answer_and_status_tells_the_truth(callback_gateway, bank, bills):
    bill = await bills.create(workers=1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _pay_raw(bank, bill, "22", request_id="lost-1")
    assert await _posted(callback_gateway.pool, bill) == 1, "committed before the answer was lost"
    status = await bank.status(bill.payment_code, "lost-1")
    assert status.ok and status.body["virtualAccountData"]["paymentFlagStatus"] == "00"


async def test_magic_33_times_out_before_commit_and_posts_nothing(callback_gateway, bank, bills):
    bill = await bills.create(workers=1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _pay_raw(bank, bill, "33", request_id="never-1")
    assert await _posted(callback_gateway.pool, bill) == 0
    status = await bank.status(bill.payment_code, "never-1")
    assert status.case == "40401" and status.rule == "transaction-not-found"
    # The bank may simply pay again, now without the magic sen.
    assert (await _pay_raw(bank, bill, "00", request_id="never-2")).ok


@pytest.mark.parametrize(("sen", "case"), [("55", "50000"), ("66", "42900")])
async def test_magic_5xx_and_429_refuse_and_post_nothing(callback_gateway, bank, bills, sen, case):
    bill = await bills.create(workers=1)
    response = await _pay_raw(bank, bill, sen)
    assert response.case == case and response.http_status == int(case[:3])
    assert await _posted(callback_gateway.pool, bill) == 0


async def test_magic_44_answers_with_a_signature_that_does_not_verify(callback_gateway, bank, bills):
    bill, other = await bills.create(workers=1), await bills.create(workers=1)
    token = await bank.token()
    good = await _pay_raw(bank, other, "00", request_id="good-1")
    assert good.ok and _signature_ok(bank, PAYMENT, token, good), "normal answers are signed"
    bad = await _pay_raw(bank, bill, "44", request_id="bad-1")
    assert bad.ok and await _posted(callback_gateway.pool, bill) == 1
    assert not _signature_ok(bank, PAYMENT, token, bad)


@pytest.mark.parametrize(("code", "case"), [("99999999955", "50000"), ("99999999966", "42900"), ("99999999911", "40412")])
async def test_magic_payment_codes_on_inquiry(callback_gateway, bank, code, case):
    started = time.monotonic()
    response = await bank.inquiry(code)
    assert response.case == case
    if code.endswith("11"):
        assert time.monotonic() - started >= HOLD_S


async def test_magic_values_need_a_sandbox_partner(callback_gateway, bills):
    async with SnapClient(callback_gateway.url, await register_partner(callback_gateway, partner_id="BANKLIVE", sandbox=False)) as live:
        bill = await bills.create(workers=1)
        response = await _pay_raw(live, bill, "55")
        assert response.case == "40001" and "decimals" in response.body["additionalInfo"]["reason"]


# -------------------------------------------------------- partner profiles --


async def test_inbound_profile_set_through_the_api(callback_gateway, api, bank, bills):
    bill = await bills.create(workers=1)
    set_ = await api("PUT", "/api/v1/partners/BANKFAULT/faults", json_body={"inbound": {"server_error_percent": 100}}, expect=200)
    assert set_["inbound"]["server_error_percent"] == 100
    assert (await bank.inquiry(bill.payment_code)).case == "50000"
    await api("PUT", "/api/v1/partners/BANKFAULT/faults", json_body={"inbound": {"too_many_requests_percent": 100}}, expect=200)
    assert (await bank.inquiry(bill.payment_code)).case == "42900"
    await api("PUT", "/api/v1/partners/BANKFAULT/faults", json_body={"inbound": {"latency_ms": 300, "wrong_signature_percent": 100}}, expect=200)
    started = time.monotonic()
    slow = await bank.inquiry(bill.payment_code)
    assert slow.ok and time.monotonic() - started >= 0.3
    assert not _signature_ok(bank, INQUIRY, await bank.token(), slow)
    await api("PUT", "/api/v1/partners/BANKFAULT/faults", json_body={"inbound": {"lost_response_percent": 100, "hold_ms": 100}}, expect=200)
    lost = await bills.create(workers=1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _pay_raw(bank, lost, request_id="p-lost")
    assert await _posted(callback_gateway.pool, lost) == 1
    await api("PUT", "/api/v1/partners/BANKFAULT/faults", json_body={"inbound": {"timeout_before_commit_percent": 100, "hold_ms": 100}}, expect=200)
    other = await bills.create(workers=1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _pay_raw(bank, other, request_id="p-never")
    assert await _posted(callback_gateway.pool, other) == 0
    await api("DELETE", "/api/v1/partners/BANKFAULT/faults", expect=204)
    assert (await bank.inquiry(other.payment_code)).ok
    refused = await api("PUT", "/api/v1/partners/BANKFAULT/faults", json_body={"inbound": {"server_error_percent": 101}}, expect=422)
    assert refused["errors"][0]["field"] == "inbound.server_error_percent"


# ---------------------------------------------------------------- outbound --


async def _endpoint(api, receiver, partner="BANKOUT"):
    created = await api("POST", f"/api/v1/partners/{partner}/callbacks/endpoints",
                        json_body={"url": receiver.url, "event_types": ["bill.created"]}, expect=201)
    receiver.secrets.append(created["secret"])
    return created


async def test_duplicated_delivery_arrives_twice_with_one_id(callback_gateway, api, bills, make_receiver):
    receiver = await make_receiver()
    endpoint = await _endpoint(api, receiver)
    await api("PUT", f"/api/v1/callbacks/endpoints/{endpoint['id']}/faults", json_body={"duplicate_percent": 100}, expect=200)
    await bills.create(workers=1)
    await receiver.wait_for(lambda: len(receiver.deliveries) == 2)
    assert receiver.deliveries[0].webhook_id == receiver.deliveries[1].webhook_id
    assert receiver.deliveries[0].raw == receiver.deliveries[1].raw


async def test_dropped_delivery_never_arrives_until_replayed(callback_gateway, api, bills, make_receiver):
    receiver = await make_receiver()
    endpoint = await _endpoint(api, receiver)
    await api("PUT", f"/api/v1/callbacks/endpoints/{endpoint['id']}/faults", json_body={"drop_percent": 100}, expect=200)
    await bills.create(workers=1)
    async with asyncio.timeout(5):
        while not (page := await api("GET", f"/api/v1/callbacks/endpoints/{endpoint['id']}/deliveries"))["deliveries"]:
            await asyncio.sleep(0.05)
    assert page["deliveries"][0]["status"] == "dropped" and page["deliveries"][0]["faults"] == ["dropped"]
    await asyncio.sleep(0.3)
    assert receiver.deliveries == []
    await api("POST", f"/api/v1/callbacks/endpoints/{endpoint['id']}/replay-failed", expect=200)
    await receiver.wait_for(lambda: receiver.deliveries)
    assert receiver.deliveries[0].webhook_id == page["deliveries"][0]["event_id"]


async def test_partner_outbound_profile_delays_and_reorders(callback_gateway, api, bills, make_receiver):
    receiver = await make_receiver()
    endpoint = await _endpoint(api, receiver, partner="BANKORDER")
    await api("PUT", "/api/v1/partners/BANKORDER/faults",
              json_body={"outbound": {"delay_ms": 200, "out_of_order_percent": 100, "out_of_order_hold_ms": 600}}, expect=200)
    first, second = await bills.create(workers=1), await bills.create(workers=1)
    await receiver.wait_for(lambda: len(receiver.deliveries) == 2)
    assert [d.body["data"]["payment_code"] for d in receiver.deliveries] == [second.payment_code, first.payment_code]
    async with asyncio.timeout(5):
        while await callback_gateway.pool.fetchval("select count(*) from callback_deliveries where status = 'delivered'") < 2:
            await asyncio.sleep(0.05)
    rows = await callback_gateway.pool.fetch(
        """select d.faults, a.started_at - d.created_at as waited from callback_deliveries d
             join callback_attempts a on a.delivery_id = d.id where d.endpoint_id = $1 order by d.sequence""", endpoint["id"])
    assert [r["faults"] for r in rows] == [["delayed", "out_of_order"], ["delayed"]]
    assert rows[0]["waited"].total_seconds() >= 0.8 and rows[1]["waited"].total_seconds() >= 0.2
