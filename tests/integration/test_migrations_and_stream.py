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
from tests.integration.upgrades import database_before


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


async def test_upgrade_keeps_snap_exchanges_and_fault_profiles(admin_url):
    """A database from before the partner tables: its SNAP exchange log and
    fault profiles are carried into partner_exchanges and
    partner_inbound_faults, and the old tables are gone."""
    later = {"gateway/0011_partner_exchanges.sql", "snap/0003_partner_tables.sql"}
    async with database_before(admin_url, later.__contains__) as old:
        conn = old.conn
        await conn.execute(
            """insert into snap_exchanges (partner_id, service_code, path, request_headers, request_body, http_status,
                   response_code, response_body, verdict, rule, duration_ms, fault)
               values ('BANKOLD', '25', '/snap/v1.0/transfer-va/payment', '{}', '{}', 400, '4002501', '{}', 'refused', 'body-format', 3.5, null),
                      ('BANKOLD', '25', '/snap/v1.0/transfer-va/payment', '{}', '{}', 0, '', '{}', 'refused', null, 300, 'magic:lost-response')"""
        )
        await conn.execute("""insert into snap_faults (partner_id, profile) values ('BANKOLD', '{"latency_ms": 250}')""")
        assert sorted(await old.upgrade()) == sorted(old.later)
        rows = await conn.fetch("select channel, http_status, answered, rule, fault from partner_exchanges order by id")
        assert [tuple(r) for r in rows] == [
            ("snap", 400, True, "body-format", None),
            ("snap", None, False, None, "magic:lost-response"),
        ]
        assert await conn.fetchval("select profile->>'latency_ms' from partner_inbound_faults where partner_id = 'BANKOLD'") == "250"
        assert await conn.fetchval("select to_regclass('snap_exchanges') is null and to_regclass('snap_faults') is null")
