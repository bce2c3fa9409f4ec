"""SNAP fixtures: a registered bank (key pair, credentials) and its client,
against the real gateway from tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from snap_support import register_partner

from bank_adapters.snap.client import SnapClient

@pytest.fixture
async def bank(gateway_server) -> AsyncIterator[SnapClient]:
    """Bank Kalbar, registered with its built-in profile, as a SNAP client."""
    credentials = await register_partner(gateway_server, partner_id="BANKKALBAR")
    async with SnapClient(gateway_server.url, credentials) as client:
        yield client


@pytest.fixture
async def make_bank(gateway_server) -> AsyncIterator:
    """Register another bank with chosen options and get its client."""
    clients: list[SnapClient] = []

    async def make(**options) -> SnapClient:
        client = SnapClient(gateway_server.url, await register_partner(gateway_server, **options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def slow_ledger_gateway(database_url, clock) -> AsyncIterator:
    """A real gateway whose SNAP adapter waits at most 200 ms for the ledger
    (KANAL_ADAPTERS__SNAP__PAYMENTS_TIMEOUT_MS), with Bank Kalbar registered."""
    from gateway.runtime import Gateway
    from gateway.settings import Settings

    settings = Settings(
        host="127.0.0.1",
        http_port=0,
        iso8583_port=0,
        sandbox=True,
        admin_token="adm_test_token",
        log_format="json",
        adapters={"snap": {"payments_timeout_ms": "200"}},
    )
    gateway = Gateway(settings=settings, database_url=database_url, clock=clock, adapter_names=["snap"])
    await gateway.start(migrate_first=False)

    class Server:
        url = gateway.url
        admin_token = "adm_test_token"

    try:
        credentials = await register_partner(Server, partner_id="BANKKALBAR")
        async with SnapClient(gateway.url, credentials) as client:
            yield gateway, client
    finally:
        await gateway.stop()

