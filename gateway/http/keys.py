"""Typed application keys: one module, never string keys."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from gateway.service.payments import PaymentsService
from gateway.settings import Settings

settings_key = web.AppKey("settings", Settings)
pool_key = web.AppKey("pool", asyncpg.Pool)
payments_key = web.AppKey("payments", PaymentsService)
hub_key = web.AppKey("hub", object)  # gateway.http.stream.EventHub
adapters_key = web.AppKey("adapters", list)
