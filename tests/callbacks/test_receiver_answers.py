"""What a receiver answers must never stop Kanal's delivery workers: each
answer, however odd, is one logged attempt on the documented schedule, and
other endpoints' deliveries go on. Real gateway, real receivers on loopback.

Before these fixes, a NUL in the response body or a Retry-After of "²" made
recording the attempt fail: the attempt was rolled back, the delivery stayed
due, and the workers sent it again at once, hundreds of times a minute, ahead
of every other endpoint's delivery. An endpoint URL whose host cannot be
looked up ("a..b") did the same from the client's side."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from tests.callbacks.test_delivery import _employer_endpoint

ATTEMPTS_MAX = 4  # FAST_ENV's schedule: 50,50,50 ms, so 4 attempts in a round


@pytest.fixture
async def answering() -> AsyncIterator[Callable]:
    """A receiver that answers every POST with `make_response()`, counting them."""
    runners: list[web.AppRunner] = []

    async def make(make_response: Callable[[], web.Response]) -> tuple[str, collections.Counter]:
        hits: collections.Counter = collections.Counter()

        async def handle(request: web.Request) -> web.Response:
            await request.read()
            hits["posts"] += 1
            return make_response()

        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook", hits

    yield make
    for runner in runners:
        await runner.cleanup()


async def _finished_delivery(api, endpoint_id: str, token: str) -> dict:
    """The endpoint's only delivery, once it is no longer pending."""
    async with asyncio.timeout(15):
        while True:
            page = await api("GET", f"/api/v1/callbacks/endpoints/{endpoint_id}/deliveries", token=token, expect=200)
            if page["deliveries"] and page["deliveries"][0]["status"] != "pending":
                [delivery] = page["deliveries"]
                return await api("GET", f"/api/v1/callbacks/deliveries/{delivery['id']}", token=token, expect=200)
            await asyncio.sleep(0.05)


async def _register(api, bills, url: str):
    employer, api_key, kpjs = await bills.create_employer(workers=1)
    endpoint = await api(
        "POST", f"/api/v1/employers/{employer['npp']}/callbacks/endpoints", token=api_key,
        json_body={"url": url, "event_types": ["bill.created"]}, expect=201,
    )
    return employer, api_key, kpjs, endpoint


async def test_a_nul_in_the_response_is_logged_and_retried_on_schedule(callback_gateway, api, bills, answering, make_receiver):
    url, hits = await answering(lambda: web.Response(status=500, body=b"broken\x00answer", content_type="text/plain"))
    employer, api_key, kpjs, endpoint = await _register(api, bills, url)
    await bills.report(employer, api_key, kpjs, bills.default_period())

    delivery = await _finished_delivery(api, endpoint["id"], api_key)
    assert delivery["status"] == "failed" and delivery["attempts"] == ATTEMPTS_MAX
    assert [a["outcome"] for a in delivery["attempt_log"]] == ["retry"] * (ATTEMPTS_MAX - 1) + ["exhausted"]
    # The NUL is kept as U+2400, as the conformance exchanges keep it.
    assert {a["response_excerpt"] for a in delivery["attempt_log"]} == {"broken\u2400answer"}
    assert hits["posts"] == ATTEMPTS_MAX, "each attempt is sent once, not again and again"

    # The workers are free for everyone else.
    receiver = await make_receiver()
    other, other_key, other_kpjs, _ = await _employer_endpoint(api, bills, receiver, events=("bill.created",))
    await bills.report(other, other_key, other_kpjs, bills.default_period())
    await receiver.wait_for(lambda: receiver.ids(200))


async def test_a_retry_after_in_non_ascii_digits_is_ignored_not_fatal(callback_gateway, api, bills, answering):
    # "²".isdigit() is True, and int("²") raised ValueError in the worker.
    url, hits = await answering(lambda: web.Response(status=429, headers={"Retry-After": "\u00b2"}))
    employer, api_key, kpjs, endpoint = await _register(api, bills, url)
    await bills.report(employer, api_key, kpjs, bills.default_period())

    delivery = await _finished_delivery(api, endpoint["id"], api_key)
    assert delivery["status"] == "failed" and delivery["attempts"] == ATTEMPTS_MAX
    assert {a["http_status"] for a in delivery["attempt_log"]} == {429}
    assert hits["posts"] == ATTEMPTS_MAX


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://example.com:abc/hook", "port"),
        ("http://example.com:99999/hook", "port"),
        ("http://example.com:0/hook", "port"),
        ("http://kanal..example/hook", "host name"),
        ("http://" + "a" * 64 + ".example/hook", "host name"),
    ],
)
async def test_an_url_no_request_can_reach_is_refused_naming_url(callback_gateway, api, bills, url, problem):
    employer, api_key, _ = await bills.create_employer(workers=1)
    for method, path, body in [
        ("POST", f"/api/v1/employers/{employer['npp']}/callbacks/endpoints", {"url": url, "event_types": ["bill.created"]}),
        ("POST", "/api/v1/partners/BANKX/callbacks/endpoints", {"url": url, "event_types": ["bill.created"]}),
    ]:
        refused = await api(method, path, token=api_key if "employers" in path else None, json_body=body, expect=422)
        [error] = refused["errors"]
        assert error["field"] == "url" and problem in error["problem"], refused
    endpoint = await api(
        "POST", f"/api/v1/employers/{employer['npp']}/callbacks/endpoints", token=api_key,
        json_body={"url": "https://example.com/hook", "event_types": ["bill.created"]}, expect=201,
    )
    refused = await api("PATCH", f"/api/v1/callbacks/endpoints/{endpoint['id']}", token=api_key, json_body={"url": url}, expect=422)
    assert [e["field"] for e in refused["errors"]] == ["url"]
    assert (await api("GET", f"/api/v1/callbacks/endpoints/{endpoint['id']}", token=api_key))["url"] == "https://example.com/hook"


async def test_a_stored_url_whose_host_cannot_be_looked_up_fails_each_attempt_once(callback_gateway, api, bills, make_receiver):
    """An endpoint registered before the URL check (written here as an older
    gateway did): its deliveries fail attempt by attempt, they are not a loop."""
    employer, api_key, kpjs, endpoint = await _register(api, bills, "https://example.com/hook")
    await callback_gateway.pool.execute(
        "update callback_endpoints set url = 'http://kanal..example/hook' where id = $1", endpoint["id"]
    )
    await bills.report(employer, api_key, kpjs, bills.default_period())

    delivery = await _finished_delivery(api, endpoint["id"], api_key)
    assert delivery["status"] == "failed" and delivery["attempts"] == ATTEMPTS_MAX
    assert all("kanal..example" in a["error"] or "idna" in a["error"] for a in delivery["attempt_log"])

    receiver = await make_receiver()
    other, other_key, other_kpjs, _ = await _employer_endpoint(api, bills, receiver, events=("bill.created",))
    await bills.report(other, other_key, other_kpjs, bills.default_period())
    await receiver.wait_for(lambda: receiver.ids(200))


async def _first_post_then_another_endpoint_served(hits, api, bills, make_receiver) -> None:
    """Wait for the failing receiver's first request; then another endpoint's
    event, written after it, is delivered: the workers are not stuck."""
    async with asyncio.timeout(15):
        while hits["posts"] == 0:
            await asyncio.sleep(0.02)
    receiver = await make_receiver()
    other, other_key, other_kpjs, _ = await _employer_endpoint(api, bills, receiver, events=("bill.created",))
    await bills.report(other, other_key, other_kpjs, bills.default_period())
    await receiver.wait_for(lambda: receiver.ids(200))


async def test_an_attempt_that_cannot_be_recorded_holds_its_delivery_back_instead_of_looping(
    callback_gateway, api, bills, answering, make_receiver
):
    """Whatever makes recording an attempt fail next (here a trigger in the
    database refuses the attempt row for one receiver's answers), the attempt
    rolls back and its delivery stays pending. It used to stay due at the head
    of the claim order: the workers sent it again at every poll, forever. Now
    it waits KANAL_CALLBACKS_UNRECORDED_ATTEMPT_HOLD_MS (60 s) with the reason
    in last_error, and every other endpoint's deliveries go on."""
    pool = callback_gateway.pool
    await pool.execute(
        """create or replace function test_refuse_poisoned_attempt() returns trigger language plpgsql as $$
           begin
             if new.response_excerpt = 'poisoned' then raise exception 'cannot record this attempt'; end if;
             return new;
           end $$;
           create trigger test_refuse_poisoned_attempt before insert on callback_attempts
             for each row execute function test_refuse_poisoned_attempt();"""
    )
    try:
        url, hits = await answering(lambda: web.Response(status=500, text="poisoned"))
        employer, api_key, kpjs, endpoint = await _register(api, bills, url)
        await bills.report(employer, api_key, kpjs, bills.default_period())
        await _first_post_then_another_endpoint_served(hits, api, bills, make_receiver)

        # Before the fix, the poisoned delivery had been sent again at every 20 ms poll by now.
        assert hits["posts"] == 1
        delivery = await pool.fetchrow(
            """select status, attempts, last_error, next_attempt_at - now() as wait
                 from callback_deliveries where endpoint_id = $1""",
            endpoint["id"],
        )
        assert delivery["status"] == "pending" and delivery["attempts"] == 0
        assert "could not record the attempt" in delivery["last_error"]
        assert delivery["wait"].total_seconds() > 50  # held back for about 60 s, not due at once
    finally:
        await pool.execute(
            "drop trigger test_refuse_poisoned_attempt on callback_attempts; drop function test_refuse_poisoned_attempt()"
        )


async def test_a_retry_after_too_long_for_int_is_capped_not_fatal(callback_gateway, api, bills, answering):
    # 5,000 ASCII digits pass isascii() and isdigit(), but int() refuses more
    # than sys.get_int_max_str_digits() (4,300) digits with a ValueError: the
    # attempt rolled back and was never recorded, so the delivery never ran
    # out of attempts.
    url, hits = await answering(lambda: web.Response(status=429, headers={"Retry-After": "9" * 5000}))
    employer, api_key, kpjs, endpoint = await _register(api, bills, url)
    await bills.report(employer, api_key, kpjs, bills.default_period())
    async with asyncio.timeout(15):
        while hits["posts"] == 0:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    row = await callback_gateway.pool.fetchrow(
        "select attempts, last_http_status, last_error from callback_deliveries where endpoint_id = $1", endpoint["id"]
    )
    assert row["attempts"] == 1 and row["last_http_status"] == 429, dict(row)


async def test_a_bug_while_recording_holds_the_delivery_before_another_worker_can_take_it(
    callback_gateway, api, bills, answering, make_receiver, monkeypatch
):
    """A bug in the worker's own code (here injected into the Retry-After
    reading of a 429) used to roll the claim back first and write the hold
    after, on another connection, with a slow traceback in between: the other
    worker claimed the delivery in that gap and sent it again. The hold is
    now written in the claim's transaction, under its row lock."""
    from gateway.callbacks import schedule

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug in Kanal")

    monkeypatch.setattr(schedule, "parse_retry_after_ms", broken)
    url, hits = await answering(lambda: web.Response(status=429, headers={"Retry-After": "1"}))
    employer, api_key, kpjs, endpoint = await _register(api, bills, url)
    await bills.report(employer, api_key, kpjs, bills.default_period())
    await _first_post_then_another_endpoint_served(hits, api, bills, make_receiver)
    assert hits["posts"] == 1
    delivery = await callback_gateway.pool.fetchrow(
        "select status, attempts, last_error from callback_deliveries where endpoint_id = $1", endpoint["id"]
    )
    assert (delivery["status"], delivery["attempts"]) == ("pending", 0)
    assert "could not record the attempt (RuntimeError)" in delivery["last_error"]
