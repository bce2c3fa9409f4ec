"""Migrations are safe twice and from two processes at once; the live stream
never lets a slow listener hold back the others."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import asyncpg

from bank_adapters.registry import load_adapters
from gateway.http.stream import EventHub
from gateway.runtime import all_migrations
from gateway.store import database, migrate


async def test_migrations_from_two_connections_at_once_then_again(admin_url):
    name = f"kanal_mig_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'create database "{name}"')
    url = database.database_url_with_name(admin_url, name)
    try:
        migrations = all_migrations(load_adapters())
        a, b = await asyncpg.connect(url), await asyncpg.connect(url)
        try:
            applied = await asyncio.gather(migrate.apply_migrations(a, migrations), migrate.apply_migrations(b, migrations))
            # Each migration was applied exactly once, by one of the two.
            assert sorted(applied[0] + applied[1]) == sorted(m.version for m in migrations)
            assert await migrate.apply_migrations(a, migrations) == []
            assert await a.fetchval("select count(*) from schema_migrations") == len(migrations)
        finally:
            await a.close()
            await b.close()
    finally:
        await admin.execute(f'drop database "{name}" with (force)')
        await admin.close()


async def test_an_edited_applied_migration_is_refused(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        first = migrate.gateway_migrations()[0]
        tampered = migrate.Migration(first.version, first.sql + "\n-- edited")
        try:
            await migrate.apply_migrations(conn, [tampered])
        except migrate.MigrationError as error:
            assert "was changed after it was applied" in str(error)
        else:
            raise AssertionError("an edited migration was accepted")
    finally:
        await conn.close()


def test_kanal_migrate_command_twice(database_url):
    env = {**os.environ, "DATABASE_URL": database_url}
    run = [sys.executable, "-m", "gateway.cli", "migrate"]
    first = subprocess.run(run, env=env, capture_output=True, text=True, check=True)
    second = subprocess.run(run, env=env, capture_output=True, text=True, check=True)
    # The template database was migrated already, so both find nothing to do.
    assert "already up to date" in first.stdout and "already up to date" in second.stdout


async def test_slow_listener_keeps_only_the_newest_state(pool):
    hub = EventHub(pool, "unused", workforce=1000, listener_queue_events_max=2)
    slow = hub.subscribe()
    fast = hub.subscribe()
    for sequence in range(1, 6):
        hub.publish({"sequence": sequence})
        fast.get_nowait()  # the fast listener keeps up
    # The slow one never read: it holds at most its bound, and the newest state.
    assert slow.qsize() <= 2
    contents = [slow.get_nowait()["sequence"] for _ in range(slow.qsize())]
    assert contents[-1] == 5
    assert hub.dropped_messages >= 3
    hub.unsubscribe(slow)
    hub.unsubscribe(fast)
    assert hub.listener_count == 0
