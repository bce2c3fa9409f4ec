"""Fixtures of the simulator's tests: empty databases the code under test
migrates itself (as `kanal simulate` does), dropped afterwards."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from gateway.store import database


@pytest.fixture
async def fresh_database(admin_url: str):
    names = []

    async def make() -> str:
        name = f"kanal_sim_test_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'create database "{name}"')
        finally:
            await conn.close()
        names.append(name)
        return database.database_url_with_name(admin_url, name)

    yield make
    conn = await asyncpg.connect(admin_url)
    try:
        for name in names:
            await conn.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await conn.close()
