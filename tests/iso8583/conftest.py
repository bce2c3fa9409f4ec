"""Fixtures the ISO 8583 tests share: a logged-on bank link to the test
gateway, and an open bill to pay over it."""

from __future__ import annotations

import pytest

from bank_adapters.iso8583.client import Iso8583Client


@pytest.fixture
async def bank(gateway_server):
    async with Iso8583Client("127.0.0.1", gateway_server.iso_port) as client:
        yield client


@pytest.fixture
async def bill(bills):
    return await bills.create(workers=3)
