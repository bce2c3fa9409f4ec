"""Versioned plain-SQL migrations.

Files are applied in name order, each in its own transaction, and recorded in
`schema_migrations` with their SHA-256. A transaction-scoped advisory lock
makes two processes migrating at once safe: the second waits, then finds the
work done. A recorded file whose content changed is refused, not re-applied.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

_LOCK_KEY = 0x4B414E414C  # "KANAL"


@dataclass(frozen=True)
class Migration:
    version: str  # e.g. "gateway/0001_init.sql", "snap/0001_partners.sql"
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    pass


def gateway_migrations() -> list[Migration]:
    folder = resources.files("gateway.store") / "migrations"
    return [
        Migration(f"gateway/{entry.name}", entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".sql")
    ]


def folder_migrations(namespace: str, folder: Path) -> list[Migration]:
    return [
        Migration(f"{namespace}/{path.name}", path.read_text(encoding="utf-8"))
        for path in sorted(Path(folder).glob("*.sql"))
    ]


async def apply_migrations(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    """Apply what is missing; return the versions applied now."""
    async with conn.transaction():
        # Under the lock: two processes creating the table at once would race.
        await conn.execute("select pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            """create table if not exists schema_migrations (
                   version text primary key,
                   sha256 text not null,
                   applied_at timestamptz not null default now())"""
        )
    applied_now: list[str] = []
    for migration in migrations:
        async with conn.transaction():
            await conn.execute("select pg_advisory_xact_lock($1)", _LOCK_KEY)
            recorded = await conn.fetchval("select sha256 from schema_migrations where version = $1", migration.version)
            if recorded is not None:
                if recorded != migration.sha256:
                    raise MigrationError(
                        f"migration {migration.version} was changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "insert into schema_migrations (version, sha256) values ($1, $2)", migration.version, migration.sha256
            )
            applied_now.append(migration.version)
    return applied_now
