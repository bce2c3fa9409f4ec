"""Prometheus metrics for `GET /metrics`.

Each gateway application has its own registry (several gateways can live in
one process, as in the tests). Counters and histograms are fed as things
happen; gauges that describe the database (outbox, deliveries, coverage) are
read from PostgreSQL at scrape time, so every gateway process reports the
same shared truth for them.

| metric | type | labels | fed by |
|---|---|---|---|
| `kanal_adapter_responses_total` | counter | adapter, code | `gateway.observability.observe_response` (SNAP responseCode, ISO 8583 DE39) |
| `kanal_http_responses_total` | counter | prefix, status | a middleware: first path segment (`/api`, `/snap`, `/ops`...), `unmatched` for unknown paths |
| `kanal_posting_seconds` | histogram | operation, outcome | `PaymentsService.observers` (`pay`) |
| `kanal_posting_batch_size` | histogram | | payments per group-commit batch (`pay_batch` observations) |
| `kanal_posting_batch_seconds` | histogram | | time to write one batch |
| `kanal_outbox_events` | gauge | | outbox rows written (highest id) |
| `kanal_outbox_backlog_events` | gauge | | outbox rows the callback relay has not taken yet (absent without callbacks; 0 with no endpoint) |
| `kanal_outbox_lag_seconds` | gauge | | age of the oldest of those (0 when none) |
| `kanal_callback_deliveries` | gauge | status | callback deliveries by status, from their counters (absent without callbacks) |
| `kanal_callback_attempts` | gauge | outcome | delivery attempts by outcome, from their counters (absent without callbacks) |
| `kanal_coverage_protected` | gauge | regency_code, regency | protected participants today (JKK) |
| `kanal_coverage_workforce` | gauge | regency_code, regency | the regency's workforce (the denominator) |
| `kanal_coverage_ratio` | gauge | regency_code, regency | protected / workforce |
| `kanal_province_coverage_ratio` | gauge | | province protected / workforce |
| `kanal_province_coverage_target_ratio` | gauge | | the province's target (0.5956) |

Ratios are floats here because Prometheus only has floats; money never
appears in a metric.
"""

from __future__ import annotations

import asyncpg
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.callbacks import store as callback_store
from gateway.ops.checks import OUTBOX_WAITING_SQL

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 8192)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.adapter_responses = Counter(
            "kanal_adapter_responses", "Responses adapters sent to banks, by adapter and response code",
            ["adapter", "code"], registry=r,
        )
        self.http_responses = Counter(
            "kanal_http_responses", "HTTP responses by route prefix and status", ["prefix", "status"], registry=r
        )
        self.posting_seconds = Histogram(
            "kanal_posting_seconds", "Time from a pay call to its answer, by outcome",
            ["operation", "outcome"], buckets=LATENCY_BUCKETS_SECONDS, registry=r,
        )
        self.batch_size = Histogram(
            "kanal_posting_batch_size", "Payments per group-commit batch", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "kanal_posting_batch_seconds", "Time to write one group-commit batch",
            buckets=LATENCY_BUCKETS_SECONDS, registry=r,
        )
        self.outbox_events = Gauge("kanal_outbox_events", "Outbox rows written (highest id)", registry=r)
        self.outbox_backlog = Gauge(
            "kanal_outbox_backlog_events", "Outbox rows not yet taken by the callback relay", registry=r
        )
        self.outbox_lag = Gauge(
            "kanal_outbox_lag_seconds", "Age of the oldest outbox row not yet taken by the callback relay", registry=r
        )
        self.deliveries = Gauge("kanal_callback_deliveries", "Callback deliveries by status", ["status"], registry=r)
        self.attempts = Gauge("kanal_callback_attempts", "Callback delivery attempts by outcome", ["outcome"], registry=r)
        labels = ["regency_code", "regency"]
        self.protected = Gauge("kanal_coverage_protected", "Protected participants (JKK) today", labels, registry=r)
        self.workforce = Gauge("kanal_coverage_workforce", "Workforce, the coverage denominator", labels, registry=r)
        self.coverage = Gauge("kanal_coverage_ratio", "Protected participants / workforce", labels, registry=r)
        self.province = Gauge("kanal_province_coverage_ratio", "Province protected participants / workforce", registry=r)
        self.target = Gauge("kanal_province_coverage_target_ratio", "The province's coverage target", registry=r)

    # Listeners: cheap, never raise (gateway.observability's contract).

    def on_response(self, adapter: str, code: str) -> None:
        self.adapter_responses.labels(adapter, code).inc()

    def on_operation(self, operation: str, seconds: float, outcome: str) -> None:
        if operation == "pay_batch":
            # The batcher reports its size as the outcome: see PaymentsService._observe_batch.
            if outcome.isdigit():
                self.batch_size.observe(int(outcome))
            self.batch_seconds.observe(seconds)
            return
        self.posting_seconds.labels(operation, outcome).observe(seconds)

    def on_http(self, prefix: str, status: int) -> None:
        self.http_responses.labels(prefix, str(status)).inc()

    async def refresh(self, pool: asyncpg.Pool, coverage_snapshot: dict) -> None:
        """Read the database-backed gauges (one short connection)."""
        async with pool.acquire() as conn:
            self.outbox_events.set(await conn.fetchval("select coalesce(max(id), 0) from outbox"))
            if await conn.fetchval("select to_regclass('callback_relay') is not null"):
                row = await conn.fetchrow(
                    """select count(*) as backlog,
                              coalesce(extract(epoch from now() - min(o.created_at)), 0)::float8 as lag"""
                    + OUTBOX_WAITING_SQL
                )
                self.outbox_backlog.set(row["backlog"])
                self.outbox_lag.set(row["lag"])
            if await conn.fetchval("select to_regclass('callback_counts') is not null"):
                # From the counters (migration 0022), every state: a count that
                # falls to 0 shows 0, not its last value.
                counts = await callback_store.status_counts(conn)
                for status, n in counts["deliveries"].items():
                    self.deliveries.labels(status).set(n)
                for outcome, n in counts["attempts"].items():
                    self.attempts.labels(outcome).set(n)
        for row in coverage_snapshot["regencies"]:
            labels = (row["regency_code"], row["name"])
            self.protected.labels(*labels).set(row["protected"])
            self.workforce.labels(*labels).set(row["workforce"])
            # The exact ratio, not basis points / 10,000 (rounded to 0.01 %).
            self.coverage.labels(*labels).set(row["protected"] / row["workforce"] if row["workforce"] else 0.0)
        province = coverage_snapshot["province"]
        self.province.set(province["protected"] / province["workforce"])
        self.target.set(province["target_basis_points"] / 10_000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
