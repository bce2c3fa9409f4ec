"""An ops engineer's audit of session 8, each finding reproduced: what the
metrics count, what a damaged workbook gets, what the JSON log keeps of an
error, what a too-large body is told. Real HTTP, real PostgreSQL."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.portal.conftest import XLSX, call, workbook_bytes


def _responses(text: str) -> dict[tuple[str, str], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        if family.name == "kanal_http_responses":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    found[(sample.labels["prefix"], sample.labels["status"])] = sample.value
    return found


async def test_refusals_are_counted_with_the_status_the_client_got(gateway_server, bills):
    """Every employer 4xx was counted as status 500: the counting middleware
    ran inside the one that turns a refusal into its problem response."""
    employer, key, _ = await bills.create_employer(workers=1)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway_server.url}/metrics") as r:
            before = _responses(await r.text())
        async with http.get(f"{gateway_server.url}/api/v1/employers/{employer['npp']}/bills",
                            headers={"Authorization": "Bearer kanal_sk_wrong"}) as r:
            assert r.status == 401
        async with http.post(f"{gateway_server.url}/api/v1/employers/{employer['npp']}/wage-reports",
                             json={"period": "2099-01"}, headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 422
        async with http.get(f"{gateway_server.url}/api/v1/bills/00000000000",
                            headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status in (404, 422)
            third = str(r.status)
        async with http.get(f"{gateway_server.url}/metrics") as r:
            after = _responses(await r.text())

    def grew(status: str) -> float:
        return after.get(("/api", status), 0) - before.get(("/api", status), 0)

    assert (grew("401"), grew("422") + (grew("404") if third == "404" else 0)) == (1, 2)
    assert grew("500") == 0


async def test_a_closed_event_stream_is_not_counted_as_a_server_error(gateway_server, bills):
    bill = await bills.create(workers=1)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway_server.url}/metrics") as r:
            before = _responses(await r.text())
        async with http.get(f"{gateway_server.url}/api/v1/stream/coverage") as r:
            assert r.status == 200
            await r.content.readline()  # the stream is open; then the client goes away
        # A payment moves coverage: the stream's next event finds the client gone.
        from bank_adapters.base import PayCommand

        await gateway_server.payments.pay(PayCommand(bill.payment_code, bill.total_rupiah, "test:BANK", "closed-1", "R1"))
        for _ in range(100):
            async with http.get(f"{gateway_server.url}/metrics") as r:
                after = _responses(await r.text())
            if after.get(("/api", "499"), 0) > before.get(("/api", "499"), 0):
                break
            await __import__("asyncio").sleep(0.1)
    assert after.get(("/api", "499"), 0) == before.get(("/api", "499"), 0) + 1
    assert after.get(("/api", "500"), 0) == before.get(("/api", "500"), 0)


def _cut_sheet(content: bytes) -> bytes:
    """The workbook with its first sheet's XML cut in half."""
    source, target = zipfile.ZipFile(io.BytesIO(content)), io.BytesIO()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data[: len(data) // 2]
            out.writestr(item, data)
    return target.getvalue()


async def test_a_workbook_with_a_damaged_sheet_is_a_422_naming_the_file(gateway_server, bills):
    employer, key, _ = await bills.create_employer(workers=1)
    rows = [(f"6199900{n:04d}", f"617101170890{n:04d}", f"Pekerja {n}", 4_500_000, "PU") for n in range(40)]
    status, body, _ = await call(gateway_server, "POST", "/portal/api/participants/upload", key,
                                 data=_cut_sheet(workbook_bytes(rows)), headers={"Content-Type": XLSX})
    assert status == 422, body
    assert body["errors"][0]["field"] == "file" and "cannot read the workbook" in body["errors"][0]["problem"]


def test_an_unhandled_error_keeps_its_traceback_in_the_json_log():
    """The log line of a 500 carried `"exc_info": true` and no stack: the
    request id a user quotes led nowhere."""
    program = (
        "import structlog\n"
        "from gateway.logging import configure_logging\n"
        "configure_logging('json')\n"
        "try:\n"
        "    {}['missing']\n"
        "except KeyError:\n"
        "    structlog.get_logger('kanal.test').exception('unhandled_error', path='/x')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)
    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert line["event"] == "unhandled_error"
    assert "Traceback" in line["exception"] and "KeyError: 'missing'" in line["exception"]


async def test_a_too_large_body_is_told_the_limit_in_bytes(gateway_server, bills):
    employer, key, _ = await bills.create_employer(workers=1)
    limit = gateway_server.gateway.settings.request_body_bytes_max
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gateway_server.url}/api/v1/employers/{employer['npp']}/participants",
                             data=io.BytesIO(b"{" + b" " * (limit + 10) + b"}"),
                             headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}) as r:
            assert r.status == 413
            body = await r.json()
    assert body["detail"] == f"request body is larger than the limit of {limit:,} bytes"
    # Every 4xx names its field: here the body (it was "errors": []).
    assert body["errors"] == [{"field": "body", "problem": f"larger than {limit} bytes"}]


def test_logging_configured_twice_in_one_process_keeps_cached_loggers_on_the_chain():
    """Two commands run in one process (tests run the CLI in-process) each
    configure logging. A logger cached after the first was bound to the first
    chain's list, so what the second installed (or a test's capture_logs)
    never reached it."""
    program = (
        "import structlog\n"
        "from structlog.testing import capture_logs\n"
        "from gateway.logging import configure_logging\n"
        "configure_logging('json', 'info')\n"
        "log = structlog.get_logger('kanal.test')\n"
        "log.info('first')\n"  # cached now, bound to the first chain
        "configure_logging('json', 'info')\n"
        "with capture_logs() as logs:\n"
        "    log.info('second')\n"
        "print([entry['event'] for entry in logs])\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['second']"
