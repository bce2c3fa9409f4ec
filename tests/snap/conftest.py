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
