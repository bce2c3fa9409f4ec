"""Delivery workers in separate processes (`kanal deliver`): two at once
deliver each event once; one killed with SIGKILL mid-run and another
started, every event still arrives."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from gateway.callbacks import service
from gateway.callbacks.settings import CallbackSettings

EVENTS = 40


def start_deliverer(database_url: str, log_path, workers: int = 2) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KANAL_CALLBACKS_POLL_INTERVAL_MS": "20",
        "KANAL_CALLBACKS_RETRY_SCHEDULE_MS": "50,50,50",
        "KANAL_CALLBACKS_TIMEOUT_MS": "2000",
        "KANAL_LOG_FORMAT": "json",
    }
    with log_path.open("w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "deliver", "--workers", str(workers)],
            env=env, stdout=subprocess.DEVNULL, stderr=log,
        )


async def ready(log_path, timeout_s: float = 30) -> None:
    """Wait for the line `kanal deliver` prints once its workers run."""
    async with asyncio.timeout(timeout_s):
        while "kanal deliver:" not in log_path.read_text():
            await asyncio.sleep(0.05)


@pytest.fixture
async def processes(tmp_path):
    started: list[subprocess.Popen] = []

    async def start(database_url: str, workers: int = 2) -> subprocess.Popen:
        log_path = tmp_path / f"deliver-{len(started)}.log"
        process = start_deliverer(database_url, log_path, workers)
        started.append(process)
        await ready(log_path)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _partner_endpoint(pool, receiver) -> dict:
    created = await service.register(
        pool, CallbackSettings(), owner_kind="partner", owner_id="BANKKALBAR",
        data=service.EndpointIn(url=receiver.url, event_types=["bill.created"]),
    )
    receiver.secrets.append(created["secret"])
    return created


async def _expected_ids(pool) -> set[str]:
    rows = await pool.fetch("select event_id from outbox where topic = 'bill.created'")
    return {"evt_" + r["event_id"].hex for r in rows}


async def _until_delivered(pool, count: int, timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while await pool.fetchval("select count(*) from callback_deliveries where status = 'delivered'") < count:
            await asyncio.sleep(0.05)


async def test_two_worker_processes_deliver_each_event_exactly_once(database_url, pool, bills, make_receiver, processes):
    receiver = await make_receiver(delay_s=0.01)
    await _partner_endpoint(pool, receiver)
    first, second = await asyncio.gather(processes(database_url), processes(database_url))
    for _ in range(EVENTS):
        await bills.create(workers=1)
    await _until_delivered(pool, EVENTS)
    assert first.poll() is None and second.poll() is None, "both processes were running throughout"
    ids = [d.webhook_id for d in receiver.deliveries]
    assert receiver.rejected == []
    assert sorted(ids) == sorted(await _expected_ids(pool)), "every event arrived, none twice"
    processes_seen = await pool.fetch("select distinct split_part(worker, '/', 1) as process from callback_attempts")
    assert len(processes_seen) == 2, "both processes took a share"


async def test_worker_killed_mid_run_another_takes_over(database_url, pool, bills, make_receiver, processes):
    receiver = await make_receiver(delay_s=0.05)
    await _partner_endpoint(pool, receiver)
    victim = await processes(database_url)
    for _ in range(EVENTS):
        await bills.create(workers=1)
    await receiver.wait_for(lambda: len(receiver.deliveries) >= 5, timeout_s=30)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    arrived_before_kill = len({d.webhook_id for d in receiver.deliveries})
    assert arrived_before_kill < EVENTS, "the worker was killed mid-run"
    await processes(database_url)
    await _until_delivered(pool, EVENTS)
    expected = await _expected_ids(pool)
    assert {d.webhook_id for d in receiver.deliveries} == expected, "every event delivered at least once"
    assert await pool.fetchval("select count(*) from callback_deliveries where status <> 'delivered'") == 0
