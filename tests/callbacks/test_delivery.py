"""Outbound callbacks end to end: real gateway, real receivers verifying
with the `standardwebhooks` library."""

from __future__ import annotations

import asyncio

from bank_adapters.snap.client import SnapClient
from tests.snap.snap_support import register_partner


async def _employer_endpoint(api, bills, receiver, events=("bill.created", "payment.posted")):
    employer, api_key, kpjs = await bills.create_employer(workers=2)
    created = await api(
        "POST", f"/api/v1/employers/{employer['npp']}/callbacks/endpoints", token=api_key,
        json_body={"url": receiver.url, "event_types": list(events)}, expect=201,
    )
    receiver.secrets.append(created["secret"])
    return employer, api_key, kpjs, created


async def test_employer_endpoint_gets_signed_events_with_stable_ids(callback_gateway, api, bills, make_receiver):
    receiver = await make_receiver()
    employer, api_key, kpjs, endpoint = await _employer_endpoint(api, bills, receiver)
    assert endpoint["secret"].startswith("whsec_")
    bill = await bills.report(employer, api_key, kpjs, bills.default_period())
    other = await bills.create(workers=1)  # another employer's bill: not for this endpoint
    async with SnapClient(callback_gateway.url, await register_partner(callback_gateway, partner_id="BANKKALBAR")) as bank:
        inquiry = await bank.inquiry(bill.payment_code)
        paid = await bank.pay(bill.payment_code, bill.total_rupiah, inquiry.request_id)
        assert paid.ok, paid.body

    await receiver.wait_for(lambda: len(receiver.deliveries) >= 2)
    await asyncio.sleep(0.3)  # nothing else may arrive
    assert receiver.rejected == []
    types = [d.body["type"] for d in receiver.deliveries]
    assert types == ["bill.created", "payment.posted"]
    created, posted = (d.body for d in receiver.deliveries)
    assert created["data"]["payment_code"] == bill.payment_code and created["data"]["npp"] == employer["npp"]
    assert posted["data"]["amount_rupiah"] == bill.total_rupiah
    assert other.payment_code not in {d.body["data"].get("payment_code") for d in receiver.deliveries}
    # The body's id is the webhook-id, the outbox event's id.
    for delivery in receiver.deliveries:
        assert delivery.body["id"] == delivery.webhook_id and delivery.webhook_id.startswith("evt_")
    event_ids = {str(r["event_id"]).replace("-", "") for r in await callback_gateway.pool.fetch("select event_id from outbox where npp = $1", employer["npp"])}
    assert {d.webhook_id[4:] for d in receiver.deliveries} <= event_ids

    page = await api("GET", f"/api/v1/callbacks/endpoints/{endpoint['id']}/deliveries", token=api_key, expect=200)
    assert [d["status"] for d in page["deliveries"]] == ["delivered", "delivered"]
    one = await api("GET", f"/api/v1/callbacks/deliveries/{page['deliveries'][0]['id']}", token=api_key, expect=200)
    assert one["attempt_log"][0]["http_status"] == 200 and one["attempt_log"][0]["latency_ms"] >= 0
    assert '"received"' in one["attempt_log"][0]["response_excerpt"]


async def test_retries_5xx_429_and_timeouts_then_delivers_the_same_event(callback_gateway, api, bills, make_receiver):
    receiver = await make_receiver()
    receiver.script.extend([500, 429, 503])
    employer, api_key, kpjs, endpoint = await _employer_endpoint(api, bills, receiver, events=("bill.created",))
    await bills.report(employer, api_key, kpjs, bills.default_period())
    await receiver.wait_for(lambda: receiver.ids(200))
    ids = {d.webhook_id for d in receiver.deliveries}
    assert len(receiver.deliveries) == 4 and len(ids) == 1, "one event, four attempts, one id"
    page = await api("GET", f"/api/v1/callbacks/endpoints/{endpoint['id']}/deliveries", token=api_key)
    log = await api("GET", f"/api/v1/callbacks/deliveries/{page['deliveries'][0]['id']}", token=api_key)
    assert [a["http_status"] for a in log["attempt_log"]] == [500, 429, 503, 200]
    assert [a["outcome"] for a in log["attempt_log"]] == ["retry", "retry", "retry", "delivered"]


async def test_exhausted_retries_disable_the_endpoint_and_replay_failed_delivers(callback_gateway, api, bills, make_receiver):
    receiver = await make_receiver()
    receiver.script.extend([500] * 4)  # the schedule allows 4 attempts
    employer, api_key, kpjs, endpoint = await _employer_endpoint(api, bills, receiver, events=("bill.created",))
    await bills.report(employer, api_key, kpjs, bills.default_period())
    await receiver.wait_for(lambda: len(receiver.deliveries) == 4)
    async with asyncio.timeout(5):
        while (state := await api("GET", f"/api/v1/callbacks/endpoints/{endpoint['id']}", token=api_key))["status"] != "disabled":
            await asyncio.sleep(0.05)
    assert "failed 4 attempts" in state["disabled_reason"]
    failed = await api("GET", f"/api/v1/callbacks/endpoints/{endpoint['id']}/deliveries?status=failed", token=api_key)
    assert len(failed["deliveries"]) == 1
    # While disabled, new events wait; a replay of the failed ones re-enables the endpoint.
    await bills.report(employer, api_key, kpjs, "2024-01")
    await asyncio.sleep(0.3)
    assert len(receiver.deliveries) == 4
    replayed = await api("POST", f"/api/v1/callbacks/endpoints/{endpoint['id']}/replay-failed", token=api_key, expect=200)
    assert replayed["replayed"] == 1
    await receiver.wait_for(lambda: len(receiver.ids(200)) == 2)
    assert len(set(receiver.ids(200))) == 2


async def test_410_stops_and_disables_and_one_delivery_replays(callback_gateway, api, bills, make_receiver):
    receiver = await make_receiver()
    receiver.script.append(410)
    employer, api_key, kpjs, endpoint = await _employer_endpoint(api, bills, receiver, events=("bill.created",))
    await bills.report(employer, api_key, kpjs, bills.default_period())
    await receiver.wait_for(lambda: receiver.deliveries)
    await asyncio.sleep(0.3)
    assert len(receiver.deliveries) == 1, "410 is never retried"
    state = await api("GET", f"/api/v1/callbacks/endpoints/{endpoint['id']}", token=api_key)
    assert state["status"] == "disabled" and "410" in state["disabled_reason"]
    [gone] = (await api("GET", f"/api/v1/callbacks/endpoints/{endpoint['id']}/deliveries", token=api_key))["deliveries"]
    assert gone["status"] == "gone"
    await api("POST", f"/api/v1/callbacks/deliveries/{gone['id']}/replay", token=api_key, expect=200)
    await receiver.wait_for(lambda: receiver.ids(200))
    assert receiver.ids(200) == [receiver.deliveries[0].webhook_id]


async def test_rotation_signs_with_both_secrets(callback_gateway, api, bills, make_receiver):
    old_receiver = await make_receiver()
    employer, api_key, kpjs, endpoint = await _employer_endpoint(api, bills, old_receiver, events=("bill.created",))
    rotated = await api("POST", f"/api/v1/callbacks/endpoints/{endpoint['id']}/rotate-secret", token=api_key, expect=200)
    assert rotated["secret"] != endpoint["secret"] and rotated["previous_secret_valid_until"]
    await bills.report(employer, api_key, kpjs, bills.default_period())
    await old_receiver.wait_for(lambda: old_receiver.deliveries)
    delivery = old_receiver.deliveries[0]
    assert len(delivery.headers["webhook-signature"].split(" ")) == 2
    # A receiver that only knows the new secret verifies the same request too.
    new_only = await make_receiver(secrets=[rotated["secret"]])
    old_only = await make_receiver(secrets=[endpoint["secret"]])
    assert new_only.verify(delivery.raw, delivery.headers) == delivery.body
    assert old_only.verify(delivery.raw, delivery.headers) == delivery.body
    stranger = await make_receiver(secrets=["whsec_" + "QUJD" * 8])
    assert stranger.verify(delivery.raw, delivery.headers) is None


async def test_partner_endpoint_registered_with_admin_token_sees_all_employers(callback_gateway, api, bills, make_receiver):
    receiver = await make_receiver()
    created = await api(
        "POST", "/api/v1/partners/BANKKALBAR/callbacks/endpoints",
        json_body={"url": receiver.url, "event_types": ["bill.created"]}, expect=201,
    )
    receiver.secrets.append(created["secret"])
    first, second = await bills.create(workers=1), await bills.create(workers=1)
    await receiver.wait_for(lambda: len(receiver.deliveries) == 2)
    assert {d.body["data"]["npp"] for d in receiver.deliveries} == {first.npp, second.npp}
    # Without the admin token: 401; an employer cannot see a partner's endpoint.
    refused = await api("POST", "/api/v1/partners/BANKKALBAR/callbacks/endpoints", token="nope",
                        json_body={"url": receiver.url, "event_types": ["bill.created"]}, expect=401)
    assert refused["errors"][0]["field"] == "Authorization"
    await api("GET", f"/api/v1/callbacks/endpoints/{created['id']}", token=first.api_key, expect=404)


async def test_bad_endpoint_input_is_refused_precisely_and_writes_nothing(callback_gateway, api, bills):
    employer, api_key, _ = await bills.create_employer(workers=1)
    refused = await api(
        "POST", f"/api/v1/employers/{employer['npp']}/callbacks/endpoints", token=api_key,
        json_body={"url": "ftp://example.com/x", "event_types": ["payment.posted", "bill.paid"]}, expect=422,
    )
    assert {e["field"] for e in refused["errors"]} == {"url", "event_types.1"}
    assert await callback_gateway.pool.fetchval("select count(*) from callback_endpoints") == 0
