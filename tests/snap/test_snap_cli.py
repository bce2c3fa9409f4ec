"""`kanal partner add/list` for scripts, run as a user runs them (a subprocess
against the configured database), then used by a bank against the gateway."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from snap_support import key_pair

from bank_adapters.snap import protocol
from bank_adapters.snap.client import Credentials, SnapClient


async def kanal(database_url: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "KANAL_DATABASE_URL": database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from gateway.cli import main; main()", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, out.decode(), err.decode()


async def test_partner_add_json_then_the_bank_is_served(gateway_server, database_url, bills, tmp_path):
    private_pem, public_pem = key_pair(2)
    pem = tmp_path / "bank.pem"
    pem.write_text(public_pem)
    code, out, err = await kanal(
        database_url, "partner", "add", "--partner-id", "BANKKALBAR", "--client-key", "kalbar-key",
        "--public-key", str(pem), "--encoding", "hex", "--padding", "zeros", "--sandbox", "--json",
    )
    assert code == 0, err
    created = json.loads(out)
    assert created["client_secret"]
    assert created["bank_code"] == "123" and created["profile"] == "bank_kalbar"
    assert (created["channel_id"], created["partner_service_id"], created["encoding"]) == ("95221", "00012345", "hex")

    credentials = Credentials(
        partner_id="BANKKALBAR", client_key="kalbar-key", client_secret=created["client_secret"],
        private_key_pem=private_pem, partner_service_id="00012345", encoding="hex",
    )
    bill = await bills.create()
    async with SnapClient(gateway_server.url, credentials) as bank:
        assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "2002500"

    code, out, _ = await kanal(database_url, "partner", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [p["partner_id"] for p in listed] == ["BANKKALBAR"]
    assert "client_secret" not in out


async def test_partner_add_refuses_a_duplicate_naming_the_field(gateway_server, database_url, tmp_path):
    _, public_pem = key_pair(2)
    pem = tmp_path / "bank.pem"
    pem.write_text(public_pem)
    args = ("partner", "add", "--partner-id", "DUP", "--client-key", "dup-key", "--public-key", str(pem), "--json")
    assert (await kanal(database_url, *args))[0] == 0
    code, out, _ = await kanal(database_url, *args)
    assert code == 1
    assert json.loads(out)["field"] == "partner_id"


async def test_admin_api_requires_the_admin_token(gateway_server):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway_server.url}/snap/admin/partners") as response:
            assert response.status == 401
        async with session.post(
            f"{gateway_server.url}/snap/admin/partners",
            json={"partner_id": "X", "client_key": "k", "public_key": "nope"},
            headers={"Authorization": f"Bearer {gateway_server.admin_token}"},
        ) as response:
            assert response.status == 400
            assert (await response.json())["field"] == "public_key"


async def test_every_exchange_is_recorded_with_its_verdict_and_rule(gateway_server, bank, bills):
    bill = await bills.create()
    await bank.pay(bill.payment_code, bill.total_rupiah - 1)  # refused: amount
    await bank.pay(bill.payment_code, bill.total_rupiah)
    rows = await gateway_server.pool.fetch(
        """select service_code, response_code, http_status, rule, request_headers::text as headers
             from partner_exchanges where channel = 'snap' order by id"""
    )
    assert [(r["service_code"], r["response_code"], r["http_status"], r["rule"]) for r in rows] == [
        ("73", "2007300", 200, None),
        ("25", "4042513", 404, "amount"),
        ("25", "2002500", 200, None),
    ]
    token = await bank.token()
    assert all(token not in r["headers"] for r in rows)


@pytest.mark.parametrize("partner", [".", ".."])
async def test_a_partner_id_that_a_url_path_would_resolve_away_is_refused(gateway_server, partner):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{gateway_server.url}/snap/admin/partners",
            json={"partner_id": partner, "client_key": "k", "public_key": protocol.generate_key_pair()[1]},
            headers={"Authorization": f"Bearer {gateway_server.admin_token}"},
        ) as response:
            assert response.status == 400
            body = await response.json()
    assert body["field"] == "partner_id" and "URL path" in body["error"]
    assert await gateway_server.pool.fetchval("select count(*) from snap_partners") == 0
