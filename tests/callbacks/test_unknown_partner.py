"""A partner id that names no partner is refused by the conformance gate and
by the fault profiles, on the command line and over HTTP, instead of being
answered as a conformant partner with nothing to show (a typo in CI passed)."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.callbacks.test_cli import kanal
from tests.snap.snap_support import register_partner


async def run(database_url: str, *args: str):
    return await asyncio.to_thread(kanal, database_url, *args)


async def stored_faults(pool, partner_id: str) -> int:
    return await pool.fetchval(
        "select (select count(*) from callback_partner_faults where partner_id = $1)"
        " + (select count(*) from partner_inbound_faults where partner_id = $1)",
        partner_id,
    )


async def test_the_conformance_gate_refuses_a_partner_nobody_registered(callback_gateway, database_url):
    await register_partner(callback_gateway, partner_id="BANKREAL")
    typo = await run(database_url, "conformance", "NOSUCH", "--fail-on-error")
    assert typo.returncode == 2, typo.stdout + typo.stderr
    assert "0 exchanges" not in typo.stdout and "followed the protocol" not in typo.stdout
    # The registered SNAP partner, and the ISO 8583 link's partner of the default profile (acquirer 123).
    assert "Invalid value for PARTNER_ID: no partner NOSUCH; registered: BANKREAL, iso8583-123" in typo.stderr

    # A registered partner with nothing in the window passes the gate, and says so honestly.
    quiet = await run(database_url, "conformance", "BANKREAL", "--since", "1h", "--fail-on-error")
    assert quiet.returncode == 0, quiet.stderr
    assert "0 exchanges" in quiet.stdout and "No exchanges in this window: nothing to judge." in quiet.stdout
    assert "Every exchange followed the protocol." not in quiet.stdout
    iso = await run(database_url, "conformance", "iso8583-123", "--fail-on-error")
    assert iso.returncode == 0, iso.stderr


async def test_the_conformance_routes_answer_404_for_a_partner_nobody_registered(callback_gateway, api):
    await register_partner(callback_gateway, partner_id="BANKREAL")
    async with aiohttp.ClientSession(callback_gateway.url) as session:
        for suffix in ("", ".json", ".html"):
            headers = {"Authorization": f"Bearer {callback_gateway.admin_token}"}
            async with session.get(f"/api/v1/partners/NOSUCH/conformance{suffix}", headers=headers) as response:
                assert response.status == 404, suffix
                assert response.content_type == "application/problem+json"
                problem = await response.json()
            assert problem["detail"].startswith("no partner NOSUCH; registered: BANKREAL")
            assert problem["errors"] == [{"field": "partner_id", "problem": "no such partner"}]
    page = await api("GET", "/api/v1/partners/BANKREAL/conformance", expect=200)
    assert page["summary"]["exchanges"] == 0
    html = await api("GET", "/api/v1/partners/BANKREAL/conformance.html", expect=200)
    assert "no exchanges" in html and "every exchange followed the protocol" not in html


async def test_faults_refuse_a_partner_nobody_registered(callback_gateway, api, database_url):
    pool = callback_gateway.pool
    await register_partner(callback_gateway, partner_id="BANKREAL")
    refused = await run(database_url, "faults", "set", "--partner", "NOSUCHBANK", "--server-error-percent", "100")
    assert refused.returncode == 2
    assert "Invalid value for '--partner': no partner NOSUCHBANK; registered: BANKREAL" in refused.stderr
    for command in ("show", "clear"):
        other = await run(database_url, "faults", command, "--partner", "NOSUCHBANK")
        assert other.returncode == 2 and "no partner NOSUCHBANK" in other.stderr
    problem = await api("PUT", "/api/v1/partners/NOSUCHBANK/faults", json_body={"inbound": {"server_error_percent": 100}}, expect=404)
    assert problem["detail"].startswith("no partner NOSUCHBANK")
    await api("GET", "/api/v1/partners/NOSUCHBANK/faults", expect=404)
    await api("DELETE", "/api/v1/partners/NOSUCHBANK/faults", expect=404)
    assert await stored_faults(pool, "NOSUCHBANK") == 0

    # Registered partners, SNAP or ISO 8583, still take faults.
    accepted = await run(database_url, "faults", "set", "--partner", "BANKREAL", "--server-error-percent", "100")
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["inbound"]["server_error_percent"] == 100
    await api("PUT", "/api/v1/partners/iso8583-123/faults", json_body={"inbound": {"server_error_percent": 100}}, expect=200)
    assert await stored_faults(pool, "iso8583-123") == 1


async def test_the_portal_virtual_bank_is_a_partner_before_its_first_payment(database_url):
    """Found in review: KANAL-PORTAL-VBANK is registered on the portal's first
    payment, and until then faults and conformance refused it."""
    for command in (["faults", "set", "--partner", "KANAL-PORTAL-VBANK", "--server-error-percent", "100"],
                    ["conformance", "KANAL-PORTAL-VBANK"]):
        done = await run(database_url, *command)
        assert done.returncode == 0, (command, done.stderr)


async def test_a_refused_partner_id_says_where_iso8583_names_come_from(database_url):
    done = await run(database_url, "conformance", "BPDKALBAR")
    assert done.returncode == 2
    assert "KANAL_ADAPTERS__ISO8583__PARTNER_IDS" in done.stderr, done.stderr


async def test_a_shell_without_the_gateways_settings_knows_its_iso8583_partners(database_url, tmp_path):
    """Found in review: the gateway runs with PARTNER_IDS 123=BPDKALBAR, the
    operator's shell has DATABASE_URL only. Once that gateway has started on
    the database (migration 0026), `kanal faults set --partner BPDKALBAR`
    and `kanal conformance BPDKALBAR` take the name; before, exit 2."""
    from tests.e2e.test_admin_token import start_serve, stop

    before = await run(database_url, "conformance", "BPDKALBAR")
    assert before.returncode == 2
    process, _, _ = await start_serve(database_url, tmp_path / "serve-data", KANAL_ADMIN_TOKEN="adm_partners",
                                      KANAL_ADAPTERS__ISO8583__PARTNER_IDS="123=BPDKALBAR")
    await stop(process)
    for command in (["faults", "set", "--partner", "BPDKALBAR", "--server-error-percent", "100"],
                    ["conformance", "BPDKALBAR"]):
        done = await run(database_url, *command)
        assert done.returncode == 0, (command, done.stderr)
    listed = (await run(database_url, "conformance", "NOSUCH")).stderr
    assert "registered: BPDKALBAR, " in listed, listed
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        noted = [tuple(r) for r in await conn.fetch("select partner_id, adapter from configured_partners")]
    finally:
        await conn.close()
    assert noted == [("BPDKALBAR", "iso8583")]  # acquirer 123 is BPDKALBAR, not iso8583-123
