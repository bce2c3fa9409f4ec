"""`kanal simulate`: the go-live simulator's command (see docs/simulator.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

import click

SIM_DATABASE = "kanal_sim"
# Set on every database the simulator creates: only such a database (or the
# default kanal_sim, made before the mark existed) is dropped by a later run.
SIM_DATABASE_COMMENT = "made by kanal simulate; the next run drops it and creates it again"
# Never dropped: the server's own databases.
SERVER_DATABASES = ("postgres", "template0", "template1")


@click.command("simulate")
@click.option(
    "--scenario", "scenario_path", default=None, metavar="PATH|NAME",
    help="A scenario TOML file, or the name of a shipped one (go-live, rush, faults). [default: go-live]",
)
@click.option("--workers", type=click.IntRange(1, 2_000_000), default=None,
              help="Workers in the province; 1819430 is the whole of Kalbar. [default: the scenario's, 3000]")
@click.option("--duration", "months", type=click.IntRange(1, 36), default=None,
              help="Months to simulate. [default: the scenario's, 3]")
@click.option("--rate", "rate_per_second", type=click.IntRange(0, 100_000), default=None,
              help="Payments started per second by all banks together; 0 = as fast as the gateway answers. "
              "[default: the scenario's, 0]")
@click.option("--concurrency", type=click.IntRange(1, 512), default=None,
              help="Bank requests in flight at once. [default: the scenario's, 16]")
@click.option("--seed", type=int, default=2025, show_default=True, help="The same seed gives the same run.")
@click.option("--database", "database_name", default=SIM_DATABASE, show_default=True,
              help="Database the simulator creates afresh on the configured server (dropped first if it exists).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the full report as JSON to this file ('-': standard output, and the text report goes to "
              "standard error).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_obj
def simulate(services, scenario_path, workers, months, rate_per_second, concurrency, seed, database_name,
             json_path, quiet) -> None:
    """Simulate the Bank Kalbar go-live: seed a province, then run months of
    wage reports and bank payments through the real SNAP BI and ISO 8583
    adapters, and report coverage, outcomes and ledger health.

    The simulator makes its own database (--database, default kanal_sim) on
    the embedded PostgreSQL, or on the server of DATABASE_URL (the role needs
    CREATEDB), and starts a gateway in this process on free ports. The exit
    status is 0 when the ledger checks are clean, 1 otherwise.

    \b
    Examples:
      kanal simulate                                   3,000 workers, 3 months
      kanal simulate --workers 100000 --duration 3     the issue 9 run (about 3 minutes on 2 cores)
      kanal simulate --scenario rush --seed 7
      kanal simulate --scenario my.toml --rate 200 --json report.json
      kanal simulate --workers 1819430 --duration 1    the whole province (long)
    """
    from gateway.sim.scenario import ScenarioError, load

    try:
        scenario = load(scenario_path).with_overrides(
            workers=workers, months=months, rate_per_second=rate_per_second, concurrency=concurrency
        )
    except ScenarioError as error:
        raise click.BadParameter(str(error), param_hint="--scenario") from None
    json_to_stdout = json_path is not None and str(json_path) == "-"
    if json_path is not None and not json_to_stdout:
        _check_writable(json_path)
    settings = services.settings()
    from gateway.logging import configure_logging

    configure_logging(settings.log_format, "warning")
    from gateway.sim.simulator import SimulationRefused

    try:
        report = asyncio.run(_run(settings, scenario, seed, database_name, quiet))
    except SimulationRefused as error:
        raise click.BadParameter(f"{scenario_path or 'go-live'}: {error}", param_hint="--scenario") from None
    # With --json -, standard output is the JSON alone (for jq and scripts); the text report goes to stderr.
    click.echo(render(report), err=json_to_stdout)
    if json_path is not None:
        text = json.dumps(report.as_dict(), indent=2, default=str)
        if json_to_stdout:
            click.echo(text)
        else:
            try:
                json_path.write_text(text + "\n")
            except OSError as error:
                raise click.ClickException(f"cannot write the JSON report to {json_path}: {error.strerror or error}") from None
    sys.exit(0 if report.clean else 1)


def _check_writable(path: Path) -> None:
    """Refuse an unwritable --json file before the run, not after it."""
    import os

    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise click.BadParameter(f"{path}: folder {folder} does not exist", param_hint="--json")
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise click.BadParameter(f"{path}: not writable", param_hint="--json")


async def _run(settings, scenario, seed: int, database_name: str, quiet: bool):
    from gateway.runtime import resolve_database_url
    from gateway.sim.simulator import Simulation, no_progress
    from gateway.store import database

    url, _server = resolve_database_url(settings)
    refuse_a_database_in_use(database_name, settings.database_url)
    admin_url = database.database_url_with_name(url, "postgres")
    sim_url = database.database_url_with_name(url, database_name)
    await recreate_database(admin_url, database_name)
    click.echo(f"Simulating {scenario.name!r}: {scenario.workers:,} workers, {scenario.months} month(s), seed {seed}, "
               f"database {database_name}", err=True)
    progress = no_progress if quiet else click_progress
    simulation = Simulation(scenario, seed=seed, progress=progress)
    return await simulation.run(sim_url, settings=_gateway_settings(settings, scenario))


def _gateway_settings(settings, scenario):
    return settings.model_copy(
        update={
            "http_port": 0,
            "iso8583_port": 0,
            "host": "127.0.0.1",
            "sandbox": False,
            "reuse_port": False,
            "pool_size_max": max(settings.pool_size_max, scenario.load.concurrency + scenario.load.report_concurrency + 4),
            "statement_timeout_ms": max(settings.statement_timeout_ms, 600_000),
        }
    )


def refuse_a_database_in_use(name: str, database_url: str | None) -> None:
    """The simulator drops its database first: never one that Kanal itself
    (`kanal serve`, `kanal demo`), DATABASE_URL or the server uses."""
    from urllib.parse import unquote, urlsplit

    from gateway.store.database import APP_DATABASE

    if not (name.isascii() and name.replace("_", "").isalnum() and len(name) <= 63):
        raise click.BadParameter(f"{name!r}: 1 to 63 ASCII letters, digits and '_'", param_hint="--database")
    configured = unquote(urlsplit(database_url).path.lstrip("/")) if database_url else None
    if name == APP_DATABASE or name == configured:
        where = "the one DATABASE_URL names" if name == configured else "on the embedded server"
        raise click.BadParameter(
            f"{name!r} is the database kanal serve and kanal demo use ({where}); "
            "the simulator drops and recreates its database, so give it another name",
            param_hint="--database",
        )
    if name in SERVER_DATABASES:
        raise click.BadParameter(f"{name!r} is one of the server's own databases; pick another name", param_hint="--database")


async def recreate_database(admin_url: str, name: str) -> None:
    import asyncpg

    if not (name.isascii() and name.replace("_", "").isalnum() and len(name) <= 63):
        raise click.BadParameter(f"{name!r}: 1 to 63 ASCII letters, digits and '_'", param_hint="--database")
    from gateway.store.database import connecting

    async with connecting(admin_url):
        conn = await asyncpg.connect(admin_url)
    try:
        row = await conn.fetchrow(
            "select shobj_description(oid, 'pg_database') as comment from pg_database where datname = $1", name
        )
        if row is not None and row["comment"] != SIM_DATABASE_COMMENT and name != SIM_DATABASE:
            raise click.BadParameter(
                f"database {name!r} exists and was not made by kanal simulate, which would drop it; "
                "pick another name, or drop it yourself if it is a simulator's",
                param_hint="--database",
            )
        await conn.execute(f'drop database if exists "{name}" with (force)')
        await conn.execute(f'create database "{name}"')
        # The comment is spelled out: only the double-quoted name is formatted in (checked
        # by tests/reliability/test_security.py); it must equal SIM_DATABASE_COMMENT.
        await conn.execute(
            f'comment on database "{name}" is \'made by kanal simulate; the next run drops it and creates it again\''
        )
    except asyncpg.InsufficientPrivilegeError as error:
        raise click.ClickException(f"cannot create database {name}: {error}; grant CREATEDB to the role") from None
    finally:
        await conn.close()


@contextlib.contextmanager
def click_progress(label: str, total: int):
    # length 0 shows 0/0: a month with no payments must not show one payment that never comes (0/1).
    with click.progressbar(length=total, label=f"{label:<24}", file=sys.stderr, show_pos=True) as bar:
        yield bar


def render(report) -> str:
    summary = report.summary()
    province = summary["province"]
    lines = [
        "",
        (
            f"Scenario {summary['scenario']} (seed {summary['seed']}): {summary['workers']:,} workers "
            f"({summary['by_kind']['formal']:,} formal, {summary['by_kind']['informal']:,} informal, "
            f"{summary['by_kind']['construction']:,} construction), {summary['employers']:,} employers, "
            f"periods {', '.join(summary['periods'])}"
        ),
        "",
        "Coverage (protected workers, JKK) per regency",
        f"  {'code':<5} {'regency':<16} {'workforce':>10} {'before':>9} {'%':>7} {'after':>9} {'%':>7}",
    ]
    for r in summary["coverage"]:
        lines.append(
            f"  {r['regency_code']:<5} {r['name']:<16} {r['workforce']:>10,} {r['protected_before']:>9,} "
            f"{r['coverage_before_percent']:>7} {r['protected_after']:>9,} {r['coverage_after_percent']:>7}"
        )
    lines.append(
        f"  {'':<5} {'Kalbar':<16} {province['workforce']:>10,} {province['protected_before']:>9,} "
        f"{province['coverage_before_percent']:>7} {province['protected_after']:>9,} {province['coverage_after_percent']:>7}"
    )
    lines += ["", "Months", f"  {'period':<8} {'reports':>8} {'bills':>8} {'payments':>9} {'rush':>7} {'late fees (Rp)':>15}"]
    for m in summary["months"]:
        lines.append(
            f"  {m['period']:<8} {m['wage_reports']:>8,} {m['bills_issued']:>8,} {m['payments_sent']:>9,} "
            f"{m['rush_payments']:>7,} {m['late_fee_rupiah']:>15,}"
        )
    carried = summary["months"][-1].get("late_payments_carried_over", 0) if summary["months"] else 0
    if carried:
        lines.append(
            f"  {carried:,} late payments fall after {summary['months'][-1]['period']}'s month and were not sent "
            "(their bills stay open; a longer --duration sends them)"
        )
    lines += ["", "Bank messages by outcome", f"  {'protocol':<9} {'step':<24} {'code':<8} {'count':>8}  meaning"]
    for o in summary["outcomes"]:
        lines.append(f"  {o['protocol']:<9} {o['step']:<24} {o['code']:<8} {o['count']:>8,}  {o['meaning']}")
    ledger = summary["ledger"]
    lines += [
        "",
        (
            f"Ledger: {ledger['payments_posted']:,} payments standing (Rp{ledger['posted_rupiah']:,}), "
            f"{ledger['payments_reversed']:,} reversed; {ledger['bills_paid']:,} of {ledger['bills']:,} bills paid; "
            f"{ledger['late_fee_lines']:,} late fees (Rp{ledger['late_fee_rupiah']:,})"
        ),
        f"Ledger health ({summary['health']['source']}): {summary['health']['verdict'].upper()}"
        + (
            f" (the six ledger checks alone: {summary['health']['ledger_verdict'].upper()})"
            if summary["health"]["verdict"] != summary["health"]["ledger_verdict"]
            else ""
        ),
    ]
    for c in report.health["checks"]:
        lines.append(f"  {c['verdict']:<9} {c['name']:<22} {c['detail']}")
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in report.timings_s.items())
    lines += ["", f"Timings: {timings}"]
    return "\n".join(lines)


commands = [simulate]
