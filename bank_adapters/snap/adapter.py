"""The SNAP adapter as the gateway sees it: a name, migrations, an HTTP app,
CLI commands."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from bank_adapters.base import AdapterContext
from bank_adapters.snap import store

log = structlog.get_logger("kanal.snap")

HOUSEKEEPING_INTERVAL_S = 3600


class SnapAdapter:
    name = "snap"
    migrations_dir: Path | None = Path(__file__).parent / "migrations"

    def __init__(self) -> None:
        self._housekeeping: asyncio.Task[None] | None = None

    def http_app(self, context: AdapterContext) -> web.Application:
        from bank_adapters.snap.routes import SnapServer

        return SnapServer(context).app()

    async def start(self, context: AdapterContext) -> None:
        self._housekeeping = asyncio.create_task(self._tidy(context), name="snap-housekeeping")

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None

    def cli_commands(self) -> list[Any]:
        from bank_adapters.snap.cli import partner_group, snap_group

        return [partner_group, snap_group]

    async def _tidy(self, context: AdapterContext) -> None:
        while True:
            try:
                await store.forget_old(context.pool)
            except Exception:  # housekeeping failing must not stop the adapter
                log.exception("snap.housekeeping_failed")
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
