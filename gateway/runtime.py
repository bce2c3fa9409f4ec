"""Assembles a running gateway: database (embedded or DATABASE_URL),
migrations, pool, services, adapters and the HTTP server. Used by `kanal
serve`, `kanal demo` and the test suite alike, so tests run what users run."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from dataclasses import dataclass, field

import asyncpg
import structlog
from aiohttp import web

from bank_adapters.base import AdapterContext, AdapterSettingsError, BankAdapter
from bank_adapters.registry import load_adapters
from gateway.http.app import create_app
from gateway.http.stream import EventHub
from gateway.observability import observe_response
from gateway.service import coverage
from gateway.service.payments import Clock, PaymentsService, utc_now
from gateway.settings import Settings
from gateway.store import database, migrate

log = structlog.get_logger("kanal.runtime")


class PortInUse(Exception):
    """A port the gateway must listen on is taken; the message says which and
    how to choose another."""

    def __init__(self, what: str, host: str, port: int, change: str) -> None:
        super().__init__(
            f"{what} port {port} on {host} is already in use (another Kanal, or another program); "
            f"choose another with {change} (0 picks a free one)"
        )
        self.port = port


def _in_use(error: OSError) -> bool:
    return error.errno == errno.EADDRINUSE


def resolve_database_url(settings: Settings) -> tuple[str, database.EmbeddedServer | None]:
    """The URL to use, and the embedded server when Kanal started one."""
    if settings.database_url:
        return settings.database_url, None
    server = database.start_embedded(settings.data_dir / "pgdata")
    return server.url_for(database.APP_DATABASE), server


async def prepare_database(url: str, adapters: list[BankAdapter], *, embedded: bool = False) -> list[str]:
    """Create the application database on the embedded server, then migrate.
    With DATABASE_URL the database named there must exist (it is the user's)."""
    if embedded:
        await database.ensure_database(database.database_url_with_name(url, "postgres"), database.APP_DATABASE)
    async with database.connecting(url):
        conn = await asyncpg.connect(url)
    try:
        return await migrate.apply_migrations(conn, all_migrations(adapters))
    finally:
        await conn.close()


def all_migrations(adapters: list[BankAdapter]) -> list[migrate.Migration]:
    migrations = migrate.gateway_migrations()
    for adapter in adapters:
        if adapter.migrations_dir is not None:
            migrations += migrate.folder_migrations(adapter.name, adapter.migrations_dir)
    return migrations


def adapter_settings(settings: Settings, name: str) -> dict[str, str]:
    values = {k.lower(): v for k, v in settings.adapters.get(name, {}).items()}
    if name == "iso8583":
        values.setdefault("port", str(settings.iso8583_port))
        if settings.reuse_port:
            values.setdefault("reuse_port", "true")
    return values


@dataclass
class Gateway:
    settings: Settings
    database_url: str
    clock: Clock = utc_now
    adapter_names: list[str] | None = None
    baseline_participants: int = 0
    embedded: bool = False
    pool: asyncpg.Pool | None = None
    payments: PaymentsService | None = None
    hub: EventHub | None = None
    coverage_folder: asyncio.Task | None = None
    adapters: list[BankAdapter] = field(default_factory=list)
    contexts: list[AdapterContext] = field(default_factory=list)
    app: web.Application | None = None
    runner: web.AppRunner | None = None
    http_port: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.http_port}"

    def adapter(self, name: str) -> BankAdapter:
        return next(a for a in self.adapters if a.name == name)

    async def start(self, *, reuse_port: bool | None = None, migrate_first: bool = True) -> Gateway:
        settings = self.settings
        admin_token = settings.ensure_admin_token()
        self.adapters = load_adapters(self.adapter_names)
        if migrate_first:
            applied = await prepare_database(self.database_url, self.adapters, embedded=self.embedded)
            if applied:
                log.info("migrated", versions=applied)
        self.pool = await database.create_pool(
            self.database_url,
            size_min=settings.pool_size_min,
            size_max=settings.pool_size_max,
            statement_timeout_ms=settings.statement_timeout_ms,
        )
        self.payments = PaymentsService(
            self.pool,
            clock=self.clock,
            batch_size_max=settings.posting_batch_size_max,
            batch_wait_ms=settings.posting_batch_wait_ms,
            batches_in_flight_max=settings.posting_batches_in_flight_max,
        )
        self.hub = EventHub(
            self.pool,
            self.database_url,
            workforce=settings.province_workforce,
            baseline_participants=self.baseline_participants,
            clock=self.clock,
        )
        await self.hub.start()
        self.coverage_folder = asyncio.create_task(
            coverage.fold_forever(
                self.pool, interval_ms=settings.coverage_fold_interval_ms, rows_max=settings.coverage_fold_rows_max
            ),
            name="kanal-coverage-fold",
        )
        self.contexts = [
            AdapterContext(
                payments=self.payments,
                pool=self.pool,
                settings=adapter_settings(settings, adapter.name),
                host=settings.host,
                sandbox=settings.sandbox,
                admin_token=admin_token,
                extras={"observe_response": observe_response, "clock": self.clock},
            )
            for adapter in self.adapters
        ]
        for adapter, context in zip(self.adapters, self.contexts, strict=True):
            try:
                await adapter.start(context)
            except AdapterSettingsError as error:
                error.adapter = error.adapter or adapter.name
                raise
            except OSError as error:
                if not _in_use(error):
                    raise
                port = context.settings.get("port", "?")
                change = (
                    "--iso8583-port or KANAL_ISO8583_PORT" if adapter.name == "iso8583"
                    else f"KANAL_ADAPTERS__{adapter.name.upper()}__PORT"
                )
                what = "The ISO 8583" if adapter.name == "iso8583" else f"The {adapter.name} adapter's"
                raise PortInUse(what, settings.host, port, change) from None
        self.app = create_app(settings, self.pool, self.payments, self.hub, list(zip(self.adapters, self.contexts, strict=True)))
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=5)
        await self.runner.setup()
        sock = _listen_socket(settings.host, settings.http_port, settings.reuse_port if reuse_port is None else reuse_port)
        site = web.SockSite(self.runner, sock)
        await site.start()
        self.http_port = sock.getsockname()[1]
        return self

    async def stop(self) -> None:
        for adapter in reversed(self.adapters):
            with contextlib.suppress(Exception):
                await adapter.stop()
        if self.coverage_folder is not None:
            self.coverage_folder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # stopping goes on whatever it ended with
                await self.coverage_folder
        if self.hub is not None:
            await self.hub.stop()  # ends open streams before the server waits for them
        if self.runner is not None:
            await self.runner.cleanup()
        if self.payments is not None:
            await self.payments.close()
        if self.pool is not None:
            await self.pool.close()


def _listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if _in_use(error):
            raise PortInUse("The HTTP", host, port, "--port or KANAL_HTTP_PORT") from None
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock
