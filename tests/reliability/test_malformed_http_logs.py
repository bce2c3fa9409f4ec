"""A request aiohttp cannot parse is the client's mistake, answered 400. The
gateway's log said so at ERROR with a traceback, as if Kanal had failed: an
ops engineer paged for a port scanner. Now one WARNING line names the client
and the problem, and keeps no stack."""

from __future__ import annotations

import asyncio
import json

import aiohttp

MALFORMED = [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
]


async def _send(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_a_malformed_request_is_a_warning_naming_the_problem_not_an_error_with_a_stack(gateway_process):
    gateway = gateway_process(extra_env={"KANAL_LOG_FORMAT": "json"})
    await gateway.start_ready()
    answers = [await _send(gateway.http_port, raw) for raw in MALFORMED]
    async with aiohttp.ClientSession() as session, session.get(gateway.url + "/healthz") as response:
        assert response.status == 200  # the gateway is unharmed
    gateway.stop()
    assert all(answer.split(b"\r\n")[0].endswith(b" 400 Bad Request") for answer in answers), answers
    lines = [json.loads(line) for line in gateway.log_text().splitlines() if line.startswith("{")]
    about = [line for line in lines if line.get("event") == "http.malformed_request"]
    assert len(about) == len(MALFORMED), about
    for line in about:
        assert line["level"] == "warning", line
        assert "exception" not in line and "Traceback" not in json.dumps(line), line
        assert line["client"] == "127.0.0.1" and line["status"] == 400, line
    assert [line["problem"].split(":")[0] for line in about] == [
        "Invalid header token", "Invalid character in Content-Length", "Bad status line",
    ]
    assert not [line for line in lines if line.get("level") == "error"], [line for line in lines if line.get("level") == "error"]
