"""The demo's closing lines tell the user what to run next from another
terminal; the command must run as printed. After `python3 dev.py demo`
`kanal` is .venv/bin/kanal, not on PATH."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def install_kanal_script(folder: Path) -> Path:
    """A `kanal` console script like the one pip writes into .venv/bin, running this tree's code."""
    folder.mkdir(parents=True)
    script = folder / "kanal"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from gateway.cli import main\n"
        "sys.exit(main())\n"
    )
    script.chmod(0o755)
    return script


async def demo_banner(command: str, cwd: Path, database_url: str, path: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANAL_")}
    env.update({"DATABASE_URL": database_url, "KANAL_LOG_FORMAT": "json", "PATH": path})
    process = await asyncio.create_subprocess_exec(
        command, "demo", "--port", "0", "--iso8583-port", "0", "--employers", "2", "--workers", "6", "--exit-after-seed",
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    return out.decode()


def next_steps(banner: str) -> tuple[str, str]:
    check = re.search(r"Check the ledger from another terminal: +(.+)$", banner, re.MULTILINE).group(1)
    simulate = re.search(r"Simulate the go-live: +(.+)$", banner, re.MULTILINE).group(1)
    return check, simulate


async def test_after_dev_py_demo_the_banner_names_venv_bin_kanal(database_url, tmp_path):
    clone = tmp_path / "clone"
    script = install_kanal_script(clone / ".venv" / "bin")
    banner = await demo_banner(str(script), clone, database_url, path="/usr/bin:/bin")
    check, simulate = next_steps(banner)
    assert check == ".venv/bin/kanal check"
    assert simulate == ".venv/bin/kanal simulate --help"
    # And it runs as printed, from the same directory.
    process = await asyncio.create_subprocess_shell(
        simulate, cwd=clone, env={"PATH": "/usr/bin:/bin"}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert b"Simulate the Bank Kalbar go-live" in out


async def test_with_kanal_on_path_the_banner_says_kanal(database_url, tmp_path):
    folder = tmp_path / "bin"
    install_kanal_script(folder)
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    banner = await demo_banner("kanal", elsewhere, database_url, path=f"{folder}:/usr/bin:/bin")
    assert next_steps(banner) == ("kanal check", "kanal simulate --help")


async def test_the_banner_checks_the_demos_own_ledger(tmp_path):
    """`kanal --data-dir D demo`: the printed check command names D, so that
    run from another terminal it checks this demo's ledger, not the default
    data dir's (found in review: it printed `kanal check`, which started the
    default server and could call an empty ledger healthy)."""
    data_dir = tmp_path / "demo-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANAL_") and k != "DATABASE_URL"}
    env["KANAL_LOG_FORMAT"] = "json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "--data-dir", str(data_dir), "demo", "--port", "0", "--iso8583-port", "0",
        "--employers", "2", "--workers", "6", "--exit-after-seed",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    check = re.search(r"Check the ledger from another terminal: +(.+)$", out.decode(), re.MULTILINE).group(1)
    assert check.endswith(f" --data-dir {data_dir} check"), check
    ran = await asyncio.create_subprocess_shell(check + " --json", env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    report, err = await asyncio.wait_for(ran.communicate(), timeout=120)
    assert ran.returncode == 0, err.decode()
    trial = next(c for c in json.loads(report)["checks"] if c["name"] == "trial_balance")
    assert trial["figures"]["by_kind"]["asset"] > 0  # the demo's paid bills: its ledger, not an empty one
