"""Both adapters report each answered code, and /metrics shows it."""

import sys
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bank_adapters.iso8583.client import Iso8583Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "snap"))
from snap_support import register_partner  # noqa: E402

from bank_adapters.snap.client import SnapClient  # noqa: E402


def responses(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kanal_adapter_responses_total":
                out[(sample.labels["adapter"], sample.labels["code"])] = sample.value
    return out


async def test_snap_and_iso8583_response_codes_are_counted(gateway_server, bills):
    bill = await bills.create()
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway_server.url + "/metrics") as r:
            before = responses(await r.text())
        credentials = await register_partner(gateway_server, partner_id="BANKKALBAR")
        async with SnapClient(gateway_server.url, credentials) as bank:
            inquiry = await bank.inquiry(bill.payment_code)
            assert inquiry.code == "2002400"
        async with Iso8583Client("127.0.0.1", gateway_server.iso_port) as link:
            reply = await link.inquiry("99999999999")
            assert reply.code == "14"
        async with http.get(gateway_server.url + "/metrics") as r:
            after = responses(await r.text())
    assert after[("snap", "2002400")] - before.get(("snap", "2002400"), 0) == 1
    assert after[("snap", "2007300")] - before.get(("snap", "2007300"), 0) >= 1
    assert after[("iso8583", "14")] - before.get(("iso8583", "14"), 0) == 1
