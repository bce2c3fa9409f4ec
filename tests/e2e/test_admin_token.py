"""`kanal serve` without KANAL_ADMIN_TOKEN: the operator can still reach the
admin routes, through a token kept in a file only they may read, and the
token never reaches the logs. Runs `kanal serve` as a process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import sys
from pathlib import Path

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[2]


async def start_serve(database_url: str, data_dir: Path, **env: str):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KANAL_") and k != "DATABASE_URL"}
    environment.update({"DATABASE_URL": database_url, "KANAL_LOG_FORMAT": "json", "KANAL_DATA_DIR": str(data_dir), **env})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--port", "0", "--iso8583-port", "0",
        env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []
    async with asyncio.timeout(60):
        while True:
            line = (await process.stderr.readline()).decode()
            assert line, "".join(lines)
            lines.append(line)
            found = re.search(r"Kanal serving on (http://\S+) ", line)
            if found:
                return process, found.group(1), lines


async def stop(process) -> str:
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    return out.decode() + err.decode()


async def status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url + "/ops/health/ledger", headers=headers) as response:
        return response.status


async def test_serve_without_a_token_says_where_it_is_and_never_logs_it(database_url, tmp_path):
    data_dir = tmp_path / "kanal-data"
    process, url, lines = await start_serve(database_url, data_dir)
    try:
        token_file = data_dir / "admin-token"
        told = [line for line in lines if "KANAL_ADMIN_TOKEN" in line]
        assert told == [
            f"KANAL_ADMIN_TOKEN is not set: the admin token is in {token_file} (readable only by you); "
            "send it as 'Authorization: Bearer <token>', or set KANAL_ADMIN_TOKEN to choose it.\n"
        ]
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert token.startswith("adm_") and len(token) > 20
        assert await status(url, token) == 200
        assert await status(url, None) == 401
        assert await status(url, "adm_wrong") == 401
    finally:
        output = "".join(lines) + await stop(process)
    assert token not in output  # neither the terminal line nor any log line carries it

    # The next start keeps the same token: scripts that read the file go on working.
    process, url, lines = await start_serve(database_url, data_dir)
    try:
        assert token_file.read_text().strip() == token
        assert await status(url, token) == 200
    finally:
        output = "".join(lines) + await stop(process)
    assert token not in output


async def test_a_token_file_others_can_read_is_replaced(database_url, tmp_path):
    data_dir = tmp_path / "kanal-data"
    data_dir.mkdir()
    token_file = data_dir / "admin-token"
    token_file.write_text("adm_seen_by_everyone\n")
    token_file.chmod(0o644)
    process, url, _ = await start_serve(database_url, data_dir)
    try:
        assert await status(url, "adm_seen_by_everyone") == 401
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert await status(url, token_file.read_text().strip()) == 200
    finally:
        await stop(process)


async def test_serve_with_a_token_set_writes_no_file_and_says_nothing_of_it(database_url, tmp_path):
    data_dir = tmp_path / "kanal-data"
    process, url, lines = await start_serve(database_url, data_dir, KANAL_ADMIN_TOKEN="adm_chosen_by_the_operator")
    try:
        assert await status(url, "adm_chosen_by_the_operator") == 200
        assert not (data_dir / "admin-token").exists()
    finally:
        output = "".join(lines) + await stop(process)
    assert "admin-token" not in output and "adm_chosen_by_the_operator" not in output


def test_docker_compose_requires_an_admin_token_and_ships_none():
    """`docker compose up` without KANAL_ADMIN_TOKEN stops with the message
    below instead of starting a gateway whose admin routes nobody can use,
    and no token is written in the repository for everyone to know."""
    value = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["gateway"]["environment"]["KANAL_ADMIN_TOKEN"]
    found = re.fullmatch(r"\$\{KANAL_ADMIN_TOKEN:\?([^}$]+)\}", value)
    assert found, value
    assert "set KANAL_ADMIN_TOKEN" in found.group(1)


# ------------------------------------------- review of the token file -------
# (each failed on a4b19be, the first version of the file)


def test_a_symlink_planted_at_any_name_beside_the_token_is_never_written_through(tmp_path):
    """Whoever can write in the data dir may plant links: at the token's name,
    at names a temporary file might take. No file behind a link is read,
    truncated, re-moded or written, and the token ends in a file of its own."""
    from gateway.settings import admin_token_from_file

    data_dir = tmp_path / "kanal-data"
    data_dir.mkdir(mode=0o700)
    precious = tmp_path / "deploy.sh"
    precious.write_text("#!/bin/sh\necho keep me\n")
    precious.chmod(0o755)
    secret = tmp_path / "some-other-secret"
    secret.write_text("hunter2\n")
    secret.chmod(0o600)
    (data_dir / "admin-token").symlink_to(secret)
    for pid in range(os.getpid() - 5, os.getpid() + 50):  # the names the first version wrote through
        (data_dir / f".admin-token.{pid}").symlink_to(precious)
    token = admin_token_from_file(data_dir / "admin-token")
    assert token != "hunter2" and token.startswith("adm_")
    assert precious.read_text() == "#!/bin/sh\necho keep me\n" and stat.S_IMODE(precious.stat().st_mode) == 0o755
    assert secret.read_text() == "hunter2\n"
    assert not (data_dir / "admin-token").is_symlink()
    assert (data_dir / "admin-token").read_text().strip() == token
    assert stat.S_IMODE((data_dir / "admin-token").stat().st_mode) == 0o600
    assert admin_token_from_file(data_dir / "admin-token") == token  # and it is kept


def _one_start(path: str, barrier, results) -> None:
    from gateway.settings import admin_token_from_file

    barrier.wait()
    results.put(admin_token_from_file(Path(path)))


def test_gateways_starting_together_end_with_the_one_token_in_the_file(tmp_path):
    """Four processes released at once on a new data dir, 20 times: each one
    uses the token the file holds (with no lock, one in two rounds ended with
    a process serving a token that was in no file)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for round_ in range(20):
        path = tmp_path / f"data-{round_}" / "admin-token"
        barrier = context.Barrier(4)
        results = context.Queue()
        processes = [context.Process(target=_one_start, args=(str(path), barrier, results)) for _ in range(4)]
        for p in processes:
            p.start()
        tokens = {results.get(timeout=30) for _ in processes}
        for p in processes:
            p.join()
        assert tokens == {path.read_text().strip()}, f"round {round_}: {len(tokens)} different tokens in use"


async def test_serve_starts_when_the_token_file_cannot_be_written_and_says_so(database_url, tmp_path):
    """With DATABASE_URL the data dir need not be writable (a read-only root
    file system): serve starts, banks are served, and one line says the admin
    routes are closed until KANAL_ADMIN_TOKEN is set. (As root, chmod cannot
    make a folder unwritable: a path under a regular file fails the same way.)"""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    process, url, lines = await start_serve(database_url, blocker / "kanal")
    try:
        told = [line for line in lines if "KANAL_ADMIN_TOKEN" in line]
        assert len(told) == 1 and "cannot be written" in told[0] and "refuse every request" in told[0], lines
        assert await status(url, None) == 401
        async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as response:
            assert response.status == 200
    finally:
        await stop(process)
