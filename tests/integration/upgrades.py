"""Upgrade tests: a scratch database migrated up to, not including, the
migrations under test, so that rows of the old schema can be written before
the upgrade runs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from bank_adapters.registry import load_adapters
from gateway.runtime import all_migrations
from gateway.store import database, migrate


@dataclass
class OldDatabase:
    url: str
    conn: asyncpg.Connection
    migrations: list
    later: set[str]  # the versions not applied yet

    async def upgrade(self) -> list[str]:
        """Apply the missing migrations; the versions applied now."""
        return await migrate.apply_migrations(self.conn, self.migrations)


@asynccontextmanager
async def database_before(admin_url: str, is_later: Callable[[str], bool]) -> AsyncIterator[OldDatabase]:
    """A new database with every migration whose version `is_later` refuses."""
    name = f"kanal_up_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'create database "{name}"')
    url = database.database_url_with_name(admin_url, name)
    conn = await asyncpg.connect(url)
    try:
        migrations = all_migrations(load_adapters())
        later = {m.version for m in migrations if is_later(m.version)}
        await migrate.apply_migrations(conn, [m for m in migrations if m.version not in later])
        yield OldDatabase(url, conn, migrations, later)
    finally:
        await conn.close()
        await admin.execute(f'drop database "{name}" with (force)')
        await admin.close()
