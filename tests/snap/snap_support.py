"""Helpers for the SNAP tests: key pairs, partner registration, ledger counts."""

from __future__ import annotations

import functools
import itertools

import aiohttp

from bank_adapters.snap import protocol
from bank_adapters.snap.client import Credentials

_partner_serial = itertools.count(1)


@functools.cache
def key_pair(index: int = 0) -> tuple[str, str]:
    """RSA key pairs are slow to make: a few per session, reused."""
    return protocol.generate_key_pair()


async def register_partner(server, *, partner_id: str | None = None, key_index: int = 0, **options) -> Credentials:
    """Register a bank through the ops API, as an operator would."""
    private_pem, public_pem = key_pair(key_index)
    partner_id = partner_id or f"BANK{next(_partner_serial):04d}"
    payload = {"partner_id": partner_id, "client_key": f"key-{partner_id}", "public_key": public_pem, **options}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{server.url}/snap/admin/partners", json=payload, headers={"Authorization": f"Bearer {server.admin_token}"}
        ) as response:
            created = await response.json()
            assert response.status == 201, created
    return Credentials(
        partner_id=created["partner_id"],
        client_key=created["client_key"],
        client_secret=created["client_secret"],
        private_key_pem=private_pem,
        channel_id=created["channel_id"],
        partner_service_id=created["partner_service_id"],
        encoding=created["encoding"],
    )


async def posted_count(pool) -> int:
    return await pool.fetchval("select count(*) from payments where status = 'posted'")


async def journal_count(pool) -> int:
    return await pool.fetchval("select count(*) from journal_entries")


async def signed(bank, service_path: str, body: dict, *, external_id: str | None = None, timestamp: str | None = None):
    """(body text, headers) of a correctly signed request, for tests to tamper with."""
    from bank_adapters.snap.client import dumps

    body_text = dumps(body)
    token = await bank.token()
    return body_text, bank.signed(service_path, body_text, token, external_id=external_id, timestamp=timestamp)


def payment_body(bank, bill, request_id: str = "pay-0001", **changes) -> dict:
    body = bank.payment_body(bill.payment_code, bill.total_rupiah, request_id)
    body.update(changes)
    return body
