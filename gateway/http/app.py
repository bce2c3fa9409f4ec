"""The aiohttp application factory."""

from __future__ import annotations

import asyncio
import importlib

import asyncpg
from aiohttp import web

from bank_adapters.base import AdapterContext, BankAdapter
from gateway.http import employer, openapi
from gateway.http.common import make_middlewares
from gateway.http.keys import adapters_key, hub_key, payments_key, pool_key, settings_key
from gateway.http.stream import EventHub, hub_routes
from gateway.service.payments import PaymentsService
from gateway.settings import Settings


# Feature packages plug themselves in: each module exposes `setup(app)`, which
# adds its routes, middlewares and `cleanup_ctx` background tasks. A module
# that does not exist (yet) is skipped.
EXTENSIONS = (
    "gateway.ops.http",
    "gateway.callbacks.http",
    "gateway.portal.http",
    "gateway.sim.http",
)


def _load_extensions() -> list:
    modules = []
    for name in EXTENSIONS:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as error:
            if error.name != name and not name.startswith(str(error.name) + "."):
                raise  # the module exists but one of its imports is missing
    return modules


def create_app(
    settings: Settings,
    pool: asyncpg.Pool,
    payments: PaymentsService,
    hub: EventHub,
    adapters: list[tuple[BankAdapter, AdapterContext]],
) -> web.Application:
    prefixes = tuple(f"/{adapter.name}" for adapter, _ in adapters)
    app = web.Application(
        middlewares=make_middlewares(prefixes),
        # Our own handlers enforce tighter per-route limits; this is the ceiling.
        client_max_size=max(settings.request_body_bytes_max, settings.csv_body_bytes_max) + 1024,
    )
    app[settings_key] = settings
    app[pool_key] = pool
    app[payments_key] = payments
    app[hub_key] = hub
    app[adapters_key] = [a for a, _ in adapters]
    app.add_routes(employer.routes)
    app.add_routes(openapi.routes)
    app.add_routes(hub_routes(hub_key))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", index)
    for module in _load_extensions():
        module.setup(app)
    for adapter, context in adapters:
        sub = adapter.http_app(context)
        if sub is not None:
            app.add_subapp(f"/{adapter.name}", sub)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready only while PostgreSQL answers."""
    try:
        async with asyncio.timeout(2):
            await request.app[pool_key].fetchval("select 1")
    except Exception as error:  # noqa: BLE001 - any failure to answer means "not ready", never a 500
        return web.json_response({"status": "unavailable", "database": type(error).__name__}, status=503)
    return web.json_response({"status": "ready", "database": "ok"})


async def index(request: web.Request) -> web.Response:
    links = {
        "docs": "/docs",
        "openapi": "/openapi.json",
        "coverage": "/api/v1/coverage",
        "coverage_stream": "/api/v1/stream/coverage",
        "dashboard": "/ops/",
        "metrics": "/metrics",
        "portal": "/portal/",
        "health": "/healthz",
        "ready": "/readyz",
    }
    return web.json_response({"service": "kanal", "links": links})
