"""Two `kanal deliver` processes against one PostgreSQL share the outbox
(FOR UPDATE SKIP LOCKED): every event reaches the receiver, each exactly once."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import os
import subprocess
import sys

from aiohttp import web

from bank_adapters.base import PayCommand, PayOutcome
from gateway.domain.periods import WIB, Period
from tests.reliability.support import REPO

BILLS = 12


async def test_two_delivery_processes_deliver_every_event_exactly_once(database_url, bills, payments, clock, tmp_path):
    received: collections.Counter[str] = collections.Counter()

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        received[request.headers["webhook-id"]] += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    env = {**os.environ, "DATABASE_URL": database_url, "KANAL_LOG_FORMAT": "json"}
    employer, api_key, kpjs = await bills.create_employer(workers=1)
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "callbacks", "add", "--employer", employer["npp"],
         "--url", f"http://127.0.0.1:{port}/hook", "--event", "payment.posted"],
        cwd=REPO, env=env, check=True, capture_output=True,
    )
    today = clock()
    for months_back in reversed(range(BILLS)):  # each month's bill reported and paid in its own month
        clock.set(today - dt.timedelta(days=31 * months_back))
        period = Period.from_date(clock().astimezone(WIB).date()) - 1
        bill = await bills.report(employer, api_key, kpjs, str(period))
        result = await payments.pay(PayCommand(bill.payment_code, bill.total_rupiah, "iso8583:123", f"k{months_back}", "r"))
        assert result.outcome is PayOutcome.POSTED
    clock.set(today)
    workers = []
    for n in range(2):
        with open(tmp_path / f"deliver-{n}.log", "wb") as log:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gateway.cli", "deliver", "--workers", "2"], cwd=REPO, env=env,
                    stdout=log, stderr=subprocess.STDOUT,
                )
            )
    try:
        for _ in range(600):
            if len(received) >= BILLS:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a late duplicate would show up now
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(15)
        await runner.cleanup()
    assert len(received) == BILLS, (received, (tmp_path / "deliver-0.log").read_text()[-2000:])
    assert set(received.values()) == {1}
