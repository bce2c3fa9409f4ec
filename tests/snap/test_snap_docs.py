"""docs/snap.md's "A session with curl", run as written by bash against a
real gateway: the key pair, `kanal partner add`, the token and the inquiry,
payment and status requests signed by `kanal snap sign` and sent by curl.

Only what a reader replaces is replaced: the address, the open bill's code
and its amount. The commands run in a folder of their own whose `.venv` is
the virtual environment running the tests, as `python3 dev.py` leaves it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None,
                                reason="the documented session needs bash and curl")


def session_blocks() -> list[str]:
    text = (ROOT / "docs" / "snap.md").read_text()
    section = text.split("## A session with curl", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


async def test_the_documented_curl_session_pays_a_bill(gateway_server, bills, database_url, tmp_path):
    bill = await bills.create(workers=1)
    blocks = session_blocks()
    assert len(blocks) == 2
    first, second = blocks
    assert "BASE=http://127.0.0.1:8080 CODE=00000000021" in first and '"53423.00"' in second
    script = (first + second).replace("BASE=http://127.0.0.1:8080 CODE=00000000021",
                                      f"BASE={gateway_server.url} CODE={bill.payment_code}")
    script = script.replace('"53423.00"', f'"{bill.total_rupiah}.00"')
    # Each answer on a line of its own, to be read back.
    script = re.sub(r"(\n(?:curl[^\n]*\\\n)(?:[^\n]*\\\n)*[^\n]*\n)", r"\1echo\n", "\n" + script)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {**os.environ, "DATABASE_URL": database_url, "KANAL_LOG_FORMAT": "json"}
    # On a thread: the gateway answers on this test's event loop.
    done = await asyncio.to_thread(subprocess.run, ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                                   capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stdout, done.stderr)
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [a["responseCode"] for a in answers] == ["2002400", "2002500", "2002600"], done.stdout
    inquiry, payment, status = answers
    assert inquiry["virtualAccountData"]["totalAmount"]["value"] == f"{bill.total_rupiah}.00"
    assert payment["virtualAccountData"]["paymentFlagStatus"] == "00"
    assert payment["additionalInfo"]["outcome"] == "posted"
    assert status["virtualAccountData"]["paymentFlagStatus"] == "00"
    assert status["additionalInfo"]["paymentId"] == payment["additionalInfo"]["paymentId"]
    paid = await gateway_server.pool.fetchrow(
        "select status, (select channel from payments where id = $2) as channel from bills where payment_code = $1",
        bill.payment_code, payment["additionalInfo"]["paymentId"],
    )
    assert (paid["status"], paid["channel"]) == ("paid", "snap:BANKDOC")
