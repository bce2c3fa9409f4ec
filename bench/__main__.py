"""Run Kanal's benchmarks and write bench/results/results.json and results.md.

    python3 dev.py bench                  the whole suite (a few minutes)
    python3 dev.py bench --quick          smaller sizes, for a smoke run
    python3 dev.py bench --only billing   one benchmark: billing, payments, adapters, province, settlement
    python3 dev.py bench --province-workers 1819430   bill the whole province (default with the full suite)
    python3 dev.py bench --only adapters --snap-payments 30000   a longer SNAP run
    python3 dev.py bench --only adapters --snap-payments 60000 --snap-checkpoint-timeout-s 30
                                          a SNAP run through checkpoints (one every 30 s)

Every figure stands next to a baseline measured in the same run on the same
machine (raw COPY, pgbench TPC-B, a bare aiohttp server): compare the
ratios, not the absolute numbers, on shared and noisy machines. With
DATABASE_URL the benchmarks use that server (it needs CREATE DATABASE);
otherwise a private embedded PostgreSQL is started and deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

from bench import billing, http_adapters, payments, province, settlement
from bench.common import start_server

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def markdown(results: dict) -> str:
    lines = [f"# Kanal benchmarks ({results['started_at']})", "", f"Machine: {results['machine']}", ""]
    lines += ["| benchmark | Kanal | baseline (same run) | ratio |", "|---|---|---|---|"]
    b = results.get("billing")
    if b:
        lines.append(
            f"| billing {b['workers']:,} workers ({b['bill_lines']:,} lines) | {b['kanal_rows_per_second']:,} rows/s "
            f"({b['kanal_seconds']} s) | raw COPY {b['copy_rows_per_second']:,} rows/s | {b['ratio_to_copy']} |"
        )
    p = results.get("payments")
    if p:
        k = p["kanal"]
        lines.append(
            f"| payments through the service, {p['concurrency']} tasks | {k['per_second']:,} /s (p99 {k['p99_ms']} ms) "
            f"| pgbench TPC-B {p['pgbench_tpcb_tps']:,} tps | {p['ratio_to_pgbench']} |"
        )
        if p.get("pgbench_postgres_cpu_ms_per_op"):
            lines.append(
                f"| PostgreSQL CPU per payment (service) | {k['postgres_cpu_ms_per_op']} ms | per TPC-B transaction "
                f"{p['pgbench_postgres_cpu_ms_per_op']} ms | {round(k['postgres_cpu_ms_per_op'] / p['pgbench_postgres_cpu_ms_per_op'], 1)}× |"
            )
        g = p.get("go_live")
        if g:
            lines.append(
                f"| go-live burst: the same payments after analyzing the whole database, empty ledger included | "
                f"{g['per_second']:,} /s (p99 {g['p99_ms']} ms, PostgreSQL {g['postgres_cpu_ms_per_op']} ms per payment) "
                f"| ledger never analyzed: {k['per_second']:,} /s | {p['go_live_ratio_to_kanal']} |"
            )
    a = results.get("adapters")
    if a:
        s = a["snap"]
        bare = a["bare_aiohttp"]
        lines.append(
            f"| signed SNAP payments over HTTP, {a['concurrency']} connections"
            + (f", after {s['warmup_operations']:,} untimed" if s.get("warmup_operations") else "")
            + f" | {s['per_second']:,} /s "
            f"(p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms) | bare aiohttp {bare['per_second']:,} /s | "
            f"{round(s['per_second'] / bare['per_second'], 3) if bare['per_second'] else '-'} |"
        )
        if p:
            lines.append(
                f"| SNAP vs pgbench | {s['per_second']:,} /s | pgbench TPC-B {p['pgbench_tpcb_tps']:,} tps | "
                f"{round(s['per_second'] / p['pgbench_tpcb_tps'], 3)} |"
            )
        if "process_cpu_ms_per_op" in s:
            lines.append(
                f"| gateway CPU per signed SNAP payment | {s['process_cpu_ms_per_op']} ms (PostgreSQL "
                f"{s.get('postgres_cpu_ms_per_op', '-')} ms) | bare aiohttp {bare['process_cpu_ms_per_op']} ms per request | "
                f"{round(s['process_cpu_ms_per_op'] / bare['process_cpu_ms_per_op'], 1) if bare['process_cpu_ms_per_op'] else '-'}× |"
            )
        for key, label in (("iso8583_one_link", "one link"), ("iso8583_eight_links", "eight links")):
            i = a[key]
            lines.append(
                f"| ISO 8583 payments, {label} | {i['per_second']:,} /s (p99 {i['p99_ms']} ms"
                + (f"; gateway CPU {i['process_cpu_ms_per_op']} ms, PostgreSQL {i.get('postgres_cpu_ms_per_op', '-')} ms per payment" if "process_cpu_ms_per_op" in i else "")
                + f") | SNAP {s['per_second']:,} /s | {round(i['per_second'] / s['per_second'], 3) if s['per_second'] else '-'} |"
            )
    pr = results.get("province")
    if pr:
        sb, pe = pr["set_based"], pr["per_employer"]
        lines.append(
            f"| billing the province, {pr['workers']:,} workers ({sb['bill_lines']:,} lines), set-based | {sb['seconds']} s "
            f"({sb['workers_per_second']:,} workers/s) | per-employer use case: {pe['province_seconds_extrapolated']} s extrapolated "
            f"| target ≤ {pr['target_seconds']} s: {'met' if pr['target_met'] else 'NOT met'} |"
        )
    st = results.get("settlement")
    if st:
        for fmt in ("camt.053", "csv", "camt.053 read whole"):
            if fmt not in st:
                continue
            lines.append(
                f"| settlement import, {st['rows']:,} lines, {fmt} | {st[fmt]['rows_per_second']:,} rows/s | raw COPY "
                f"{st['copy_rows_per_second']:,} rows/s | {st['ratio_to_copy'][fmt]} |"
            )
            if "cpu_ratio_to_copy" in st:
                c, cc = st[fmt], st["copy_cpu"]
                lines.append(
                    f"| CPU per 1,000 lines, {fmt} import | Python {c.get('process_cpu_ms_per_1000_rows', '-')} ms, PostgreSQL "
                    f"{c.get('postgres_cpu_ms_per_1000_rows', '-')} ms | raw COPY: Python {cc.get('process_cpu_ms_per_1000_rows', '-')} ms, "
                    f"PostgreSQL {cc.get('postgres_cpu_ms_per_1000_rows', '-')} ms | {st['cpu_ratio_to_copy'][fmt]} |"
                )
    snap_windows = (a or {}).get("snap", {}).get("windows") or []
    if len(snap_windows) > 1:
        s = a["snap"]
        timeout = s.get("checkpoint_timeout_s")
        lines += [
            "",
            f"Signed SNAP payments by {snap_windows[0]['to_s'] - snap_windows[0]['from_s']:g} s window"
            + (f" (checkpoint_timeout {timeout} s for this run)" if timeout else "")
            + f": {s.get('checkpoints_during_run', '-')} checkpoints began during the run.",
            "",
            ("| window | payments/s | p99 | checkpoints begun | buffers the checkpointer wrote | WAL full-page images | WAL MB "
             "| autovacuum runs finished |"),
            "|---|---|---|---|---|---|---|---|",
        ]
        for w in snap_windows:
            lines.append(
                f"| {w['from_s']}-{w['to_s']} s | {w['per_second']:,} | {w['p99_ms']} ms | {w.get('checkpoints_begun_delta', '-')} "
                f"| {w.get('buffers_written_delta', '-'):,} | {w.get('wal_fpi_delta', '-'):,} | {round(w.get('wal_bytes_delta', 0) / 1e6, 1)} "
                f"| {w.get('autovacuum_runs_delta', '-')} |"
            )
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> dict:
    server = start_server(os.environ.get("DATABASE_URL"))
    results: dict = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), "quick": args.quick}
    selected = args.only or ["billing", "payments", "adapters", "province", "settlement"]
    try:
        if "billing" in selected:
            print("billing …", file=sys.stderr, flush=True)
            results["billing"] = await billing.run(server, workers=10_000 if args.quick else 100_000)
        if "payments" in selected:
            print("payments through the service …", file=sys.stderr, flush=True)
            results["payments"] = await payments.run(
                server, payments=1_000 if args.quick else 5_000, concurrency=32, pgbench_seconds=5 if args.quick else 15
            )
        if "adapters" in selected:
            print("SNAP and ISO 8583 over sockets …", file=sys.stderr, flush=True)
            results["adapters"] = await http_adapters.run(
                server, payments=args.snap_payments or (500 if args.quick else 3_000), concurrency=32,
                iso_payments=300 if args.quick else 2_000, checkpoint_timeout_s=args.snap_checkpoint_timeout_s,
            )
        if "settlement" in selected:
            print("settlement import …", file=sys.stderr, flush=True)
            results["settlement"] = await settlement.run(server, rows=1_000 if args.quick else 5_000)
        if "province" in selected:
            workers = args.province_workers or (50_000 if args.quick else 1_819_430)
            print(f"billing the province ({workers:,} workers) …", file=sys.stderr, flush=True)
            results["province"] = await province.run(server, workers=workers)
    finally:
        server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 dev.py bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not a measurement)")
    parser.add_argument(
        "--only", action="append", choices=["billing", "payments", "adapters", "province", "settlement"],
        help="run only this benchmark (repeatable)",
    )
    parser.add_argument("--province-workers", type=int, default=None, help="workers for the province benchmark [default: 1819430; --quick: 50000]")
    parser.add_argument(
        "--snap-payments", type=int, default=None,
        help="timed SNAP payments [default: 3000, about 2.5 s; --quick: 500]. A longer run (30000: about 25 s) is more "
             "likely to include a checkpoint or an autovacuum run; the JSON counts those that began during it",
    )
    parser.add_argument(
        "--snap-checkpoint-timeout-s", type=int, default=None, metavar="SECONDS",
        help="run the timed SNAP payments with PostgreSQL's checkpoint_timeout set to this (30 or more; the server's "
             "default is 300), so that checkpoints begin during the run; with --snap-payments 60000 (about 45 s) "
             "and 30, at least one does. Needs a superuser (the embedded server's role is one). The results show "
             "the run by 5 s window next to what the checkpointer and the WAL did",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where to write results.json and results.md [default: {RESULTS}]")
    args = parser.parse_args()
    if args.snap_checkpoint_timeout_s is not None and not 30 <= args.snap_checkpoint_timeout_s <= 86_400:
        parser.error("--snap-checkpoint-timeout-s: PostgreSQL takes 30 to 86400 seconds")
    results = asyncio.run(main_async(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
