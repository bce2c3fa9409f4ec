"""The README's two commands, as a new user types them."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_first_two_commands_are_demo_and_test():
    commands = readme_commands()
    assert commands[:2] == ["python3 dev.py demo", "python3 dev.py test"]
    # CI runs the second one and nothing else.
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 dev.py test" in ci


async def test_demo_command_starts_seeds_and_serves(tmp_path):
    data_dir = Path(tempfile.mkdtemp(prefix="kanal-demo-"))
    env = {**os.environ, "KANAL_DATA_DIR": str(data_dir), "KANAL_LOG_FORMAT": "json"}
    env.pop("DATABASE_URL", None)
    command = readme_commands()[0].split() + ["--port", "0", "--iso8583-port", "0", "--employers", "20", "--workers", "100"]
    assert command[0] == "python3"
    command[0] = sys.executable if not Path(ROOT / ".venv").exists() else "python3"
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Ctrl-C to stop" in line:
                break
        text = "".join(output)
        assert "Ctrl-C to stop" in text, text
        docs = re.search(r"API docs\s+(http://\S+)", text).group(1)
        base = docs.removesuffix("/docs")
        # The printed curl example works as printed.
        body = re.search(r"-d '(\{\"npp\".*?\})'", text).group(1)
        async with aiohttp.ClientSession() as http:
            async with http.get(docs) as r:
                assert r.status == 200
            async with http.post(base + "/api/v1/employers", data=body, headers={"Content-Type": "application/json"}) as r:
                assert r.status == 201, await r.text()
                assert (await r.json())["api_key"].startswith("kanal_sk_")
            async with http.get(base + "/api/v1/coverage") as r:
                snapshot = await r.json()
        assert len(snapshot["regencies"]) == 14
        assert snapshot["province"]["protected"] > 0  # the seed paid some bills
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.stdout.close()
            shutil.rmtree(data_dir, ignore_errors=True)
