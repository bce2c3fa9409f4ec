"""The SNAP benchmark's windows (bench.common.CheckpointSampler.windows): each
payment counted once, in the window it finished in, next to what the
checkpointer and the WAL did in that window."""

from bench.common import CheckpointSampler, LoadResult


def _sampler(samples: list[tuple[float, dict[str, int]]]) -> CheckpointSampler:
    sampler = CheckpointSampler("postgresql://unused")
    sampler.samples = samples
    return sampler


def counters(begun: int, written: int, fpi: int, wal: int, vacuums: int = 0) -> dict[str, int]:
    return {"checkpoints_begun": begun, "buffers_written": written, "wal_fpi": fpi, "wal_bytes": wal, "autovacuum_runs": vacuums}


def test_windows_split_the_run_and_line_up_the_checkpointer():
    # A run that started at perf_counter 100.0 and lasted 12 s: 3 payments in
    # the first 5 s, 1 in the next, 2 in the last 2 s.
    result = LoadResult(
        operations=6, seconds=12.0, latencies_ms=[10.0, 20.0, 30.0, 90.0, 5.0, 7.0],
        finished_s=[0.5, 1.0, 4.9, 5.0, 10.5, 11.9], started_perf=100.0,
    )
    sampler = _sampler([
        (99.9, counters(7, 1000, 50, 10_000)),
        (104.0, counters(7, 1000, 60, 20_000)),
        (106.0, counters(8, 1200, 900, 90_000, vacuums=2)),  # a checkpoint began between 104 and 106
        (111.0, counters(8, 1500, 950, 95_000, vacuums=2)),
    ])
    windows = sampler.windows(result, 5.0)
    assert [(w["from_s"], w["to_s"]) for w in windows] == [(0.0, 5.0), (5.0, 10.0), (10.0, 12.0)]
    assert [w["operations"] for w in windows] == [3, 1, 2]
    assert sum(w["operations"] for w in windows) == result.operations
    assert [w["per_second"] for w in windows] == [0.6, 0.2, 1.0]
    assert [w["p99_ms"] for w in windows] == [30.0, 90.0, 7.0]
    # Counters as last sampled at each edge: 104 for 105, 106 for 110, 111 for 112.
    assert [w["checkpoints_begun_delta"] for w in windows] == [0, 1, 0]
    assert [w["buffers_written_delta"] for w in windows] == [0, 200, 300]
    assert [w["wal_fpi_delta"] for w in windows] == [10, 840, 50]
    assert [w["autovacuum_runs_delta"] for w in windows] == [0, 2, 0]


def test_no_windows_without_samples():
    # A server before PostgreSQL 17 has no pg_stat_checkpointer: no windows, no error.
    result = LoadResult(operations=1, seconds=1.0, latencies_ms=[1.0], finished_s=[0.5], started_perf=0.0)
    assert _sampler([]).windows(result, 5.0) == []
