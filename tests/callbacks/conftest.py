"""Callback fixtures: a real gateway with a fast retry schedule, and real
aiohttp receivers on loopback that verify every delivery with the
`standardwebhooks` library (not Kanal's signer)."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import standardwebhooks
from aiohttp import web

from gateway.runtime import Gateway
from tests.conftest import RunningGateway, test_settings

FAST_ENV = {
    "KANAL_CALLBACKS_RETRY_SCHEDULE_MS": "50,50,50",
    "KANAL_CALLBACKS_JITTER_PERCENT": "20",
    "KANAL_CALLBACKS_POLL_INTERVAL_MS": "20",
    "KANAL_CALLBACKS_TIMEOUT_MS": "1000",
    "KANAL_CALLBACKS_WORKERS": "2",
    "KANAL_CALLBACKS_RELAY_HORIZON_S": "5",
}


@dataclass
class Delivery:
    webhook_id: str
    body: dict
    headers: dict
    status: int
    raw: bytes = b""


@dataclass
class Receiver:
    """A webhook receiver. `script` is the statuses to answer, in order (then 200)."""

    secrets: list[str] = field(default_factory=list)
    script: collections.deque = field(default_factory=collections.deque)
    delay_s: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def verify(self, raw: bytes, headers: dict) -> dict | None:
        for secret in self.secrets:
            try:
                return standardwebhooks.Webhook(secret).verify(raw, headers)
            except standardwebhooks.WebhookVerificationError:
                continue
        return None

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = dict(request.headers)
        body = self.verify(raw, headers)
        if body is None:
            self.rejected.append(headers.get("webhook-id", "?"))
            return web.Response(status=400, text="signature does not verify")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status = self.script.popleft() if self.script else 200
        self.deliveries.append(Delivery(headers["webhook-id"], body, headers, status, raw))
        self.arrived.set()
        return web.Response(status=status, text=json.dumps({"received": headers["webhook-id"], "status": status}))

    def ids(self, status: int = 200) -> list[str]:
        return [d.webhook_id for d in self.deliveries if d.status == status]

    async def wait_for(self, predicate, timeout_s: float = 15.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.arrived.clear()
                with __import__("contextlib").suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), 0.1)


@pytest.fixture
async def make_receiver() -> AsyncIterator:
    runners: list[web.AppRunner] = []

    async def make(**kwargs) -> Receiver:
        receiver = Receiver(**kwargs)
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        receiver.url = f"http://127.0.0.1:{port}/hook"
        runners.append(runner)
        return receiver

    yield make
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def callback_gateway(database_url, clock, monkeypatch) -> AsyncIterator[RunningGateway]:
    """The real gateway, with a retry schedule of 50 ms steps and short fault holds."""
    for key, value in FAST_ENV.items():
        monkeypatch.setenv(key, value)
    settings = test_settings(
        adapters={"snap": {"fault_hold_ms": "300", "magic_latency_ms": "300"}, "iso8583": {"magic_latency_ms": "300"}}
    )
    gateway = Gateway(settings=settings, database_url=database_url, clock=clock)
    await gateway.start(migrate_first=False)
    try:
        yield RunningGateway(gateway)
    finally:
        await gateway.stop()


@pytest.fixture
async def api(callback_gateway) -> AsyncIterator:
    """An aiohttp session and a call helper against the gateway's API."""
    async with aiohttp.ClientSession(callback_gateway.url) as session:

        async def call(method: str, path: str, *, token: str | None = None, json_body=None, expect: int | None = None):
            headers = {"Authorization": f"Bearer {token or callback_gateway.admin_token}"}
            async with session.request(method, path, json=json_body, headers=headers) as response:
                text = await response.text()
                data = json.loads(text) if text and response.content_type.endswith("json") else text
                if expect is not None:
                    assert response.status == expect, (response.status, data)
                return data

        yield call
