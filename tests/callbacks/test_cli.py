"""The callbacks and faults commands, as an operator types them, against the
database a running gateway delivers from."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

import pytest
from click.testing import CliRunner


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def kanal(database_url: str, *args: str) -> Ran:
    """`kanal ARGS` in-process (the same click commands, without a new
    interpreter per call), against this test's database."""
    from gateway.cli import main

    runner = CliRunner()
    result = runner.invoke(main, list(args), env={"DATABASE_URL": database_url, "KANAL_LOG_FORMAT": "json"}, catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)


async def run(database_url: str, *args: str) -> Ran:
    return await asyncio.to_thread(kanal, database_url, *args)


async def test_register_fault_replay_from_the_command_line(callback_gateway, database_url, bills, make_receiver):
    receiver = await make_receiver()
    added = await run(database_url, "callbacks", "add", "--partner", "BANKCLI", "--url", receiver.url, "--event", "bill.created")
    assert added.returncode == 0, added.stderr
    endpoint_id = re.search(r"endpoint (ep_\w+)", added.stdout).group(1)
    receiver.secrets.append(re.search(r"secret\s+(whsec_\S+)", added.stdout).group(1))

    dropped = await run(database_url, "faults", "set", "--endpoint", endpoint_id, "--drop-percent", "100")
    assert json.loads(dropped.stdout)["outbound"]["drop_percent"] == 100
    await bills.create(workers=1)
    pool = callback_gateway.pool
    async with asyncio.timeout(5):
        while not await pool.fetchval("select count(*) from callback_deliveries where status = 'dropped'"):
            await asyncio.sleep(0.05)
    listed = await run(database_url, "callbacks", "deliveries", endpoint_id)
    assert "dropped" in listed.stdout and "faults=dropped" in listed.stdout
    assert receiver.deliveries == []
    delivery_id = listed.stdout.split()[0]

    assert (await run(database_url, "faults", "clear", "--endpoint", endpoint_id)).returncode == 0
    replayed = await run(database_url, "callbacks", "replay", delivery_id)
    assert json.loads(replayed.stdout)["status"] == "pending"
    await receiver.wait_for(lambda: receiver.deliveries)
    async with asyncio.timeout(5):
        while await pool.fetchval("select status from callback_deliveries where id = $1", int(delivery_id)) != "delivered":
            await asyncio.sleep(0.05)
    shown = json.loads((await run(database_url, "callbacks", "show", delivery_id)).stdout)
    assert shown["replays"] == 1 and shown["attempt_log"][-1]["http_status"] == 200

    listed = json.loads((await run(database_url, "callbacks", "list", "--partner", "BANKCLI", "--json")).stdout)
    assert [e["id"] for e in listed["endpoints"]] == [endpoint_id] and "secret" not in listed["endpoints"][0]


async def test_inbound_faults_from_the_command_line_and_precise_errors(callback_gateway, database_url):
    from tests.snap.snap_support import register_partner

    await register_partner(callback_gateway, partner_id="BANKCLI")  # faults are set for partners that exist
    set_ = await run(database_url, "faults", "set", "--partner", "BANKCLI", "--latency-ms", "250", "--server-error-percent", "10")
    assert set_.returncode == 0, set_.stderr
    shown = json.loads((await run(database_url, "faults", "show", "--partner", "BANKCLI")).stdout)
    assert shown["inbound"]["latency_ms"] == 250 and shown["inbound"]["server_error_percent"] == 10
    too_much = await run(database_url, "faults", "set", "--partner", "BANKCLI", "--drop-percent", "150")
    assert too_much.returncode == 2 and "outbound.drop_percent" not in too_much.stdout
    assert "Invalid value for '--drop-percent': 150 is not in the range 0<=x<=100" in too_much.stderr
    unknown = await run(database_url, "callbacks", "add", "--employer", "ZZ999999", "--url", "http://127.0.0.1:9/x", "--event", "bill.created")
    assert unknown.returncode == 1 and "no employer ZZ999999" in unknown.stderr
    assert await callback_gateway.pool.fetchval("select count(*) from callback_endpoints") == 0


@pytest.mark.parametrize("partner", [".", ".."])
async def test_a_partner_id_that_a_url_path_would_resolve_away_is_refused(callback_gateway, database_url, pool, partner):
    """`..` matches the partner-id characters, but /api/v1/partners/../conformance
    is /api/v1/conformance: such a partner could never be addressed."""
    added = await run(database_url, "callbacks", "add", "--partner", partner, "--url", "https://bank.example/hook",
                      "--event", "bill.created")
    assert added.returncode == 1 and "partner_id" in added.stderr and "URL path" in added.stderr
    assert await pool.fetchval("select count(*) from callback_endpoints") == 0


@pytest.mark.parametrize("command", ["show", "replay"])
async def test_a_delivery_id_beyond_bigint_is_a_usage_error(database_url, command):
    """It reached PostgreSQL, and the driver's DataError came out as a traceback."""
    ran = await run(database_url, "callbacks", command, "99999999999999999999")
    assert ran.returncode == 2
    assert "DELIVERY_ID" in ran.stderr and "99999999999999999999" in ran.stderr
