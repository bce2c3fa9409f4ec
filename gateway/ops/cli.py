"""`kanal check`, `kanal reconcile`, `kanal reconciliations`, `kanal statement`."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import click

from gateway.ops import checks as health
from gateway.ops import reconcile as rec
from gateway.ops.statements import (
    FORMATS,
    STATEMENT_DAY_MAX,
    STATEMENT_DAY_MIN,
    StatementError,
    render,
)

MARKS = {health.OK: "ok  ", health.VIOLATION: "FAIL", health.SKIPPED: "skip"}


def _services():
    return click.get_current_context().find_root().obj


def _checks_help() -> str:
    """The checks' paragraph of `kanal check --help`, from the checks themselves."""
    described = [f"{getattr(c, 'summary', c.__name__)} ({c.__name__})" for c in health.CHECKS]
    callbacks = [c.__name__ for c in health.CHECKS if getattr(c, "needs_callbacks", False)]
    text = f"The {len(health.CHECKS)} checks: " + "; ".join(described) + "."
    if callbacks:
        text += f" The {len(callbacks)} callback checks ({', '.join(callbacks)}) are skipped when callbacks are not installed."
    return text


@click.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the full report (verdicts and offending rows) as JSON.")
@click.option("--only", "only", multiple=True, type=click.Choice(health.CHECK_NAMES),
              help="Run only this check (repeatable).")
@click.option("--rows-max", type=click.IntRange(0, 10_000), default=20, show_default=True,
              help="Offending rows listed per check (all are counted).")
@click.option("--outbox-lag-seconds-max", type=click.IntRange(1), default=300, show_default=True,
              help="An outbox event the callback relay has not taken after this many seconds is a violation.")
@click.option("--delivery-failure-percent-max", type=click.FloatRange(0, 100), default=5.0, show_default=True,
              help="Failed callback deliveries above this share of the finished ones (last hour) is a violation.")
def check(as_json, only, rows_max, outbox_lag_seconds_max, delivery_failure_percent_max) -> None:
    """Check the ledger's invariants and print each verdict with the rows that
    break it. Exits 0 when healthy, 1 on any violation (for cron and CI).

    {checks}

    \b
    Examples:
      kanal check
      kanal check --only entries_balance --only trial_balance
      kanal check --json | jq '.checks[] | select(.verdict == "violation")'
    """
    limits = health.Limits(
        rows_max=rows_max,
        outbox_lag_seconds_max=outbox_lag_seconds_max,
        delivery_failure_basis_points_max=round(delivery_failure_percent_max * 100),
    )
    report = _services().run_with_pool(lambda pool: health.run_checks(pool, limits, only=list(only) or None))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        for result in report.checks:
            click.echo(f"[{MARKS[result.verdict]}] {result.name:<22} {result.detail}")
            for row in result.rows:
                click.echo("         " + ", ".join(f"{k}={v}" for k, v in row.items()))
            if result.rows_total > len(result.rows):
                click.echo(f"         … and {result.rows_total - len(result.rows)} more")
        click.echo("healthy" if report.healthy else f"VIOLATIONS: {', '.join(report.violations)}")
    sys.exit(0 if report.healthy else 1)


check.help = check.help.replace("{checks}", _checks_help())


@click.command("reconcile")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(("auto", *FORMATS)), default="auto", show_default=True,
              help="The statement's format; auto reads the XML namespace, anything else is CSV.")
@click.option("--statement-ref", default="", help="The statement's id (CSV only; camt files carry Stmt/Id). "
              "Default: derived from the file's SHA-256.")
@click.option("--account", default="", help="The settlement account (CSV only; camt files carry Acct/Id).")
@click.option("--channel-prefix", default="", help="Expect only ledger payments on channels starting with this, "
              "e.g. snap:BANKKALBAR. Default: every channel.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary and every item as JSON.")
@click.option("--export", "export", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Also write the items to this CSV file.")
@click.option("--fail-on-discrepancy", is_flag=True, help="Exit 1 when anything is unmatched or mismatched.")
def reconcile_command(file, fmt, statement_ref, account, channel_prefix, as_json, export, fail_on_discrepancy) -> None:
    """Import a bank settlement statement and reconcile it against the ledger.

    FILE is CSV (header: booking_date,direction,amount_rupiah,bank_reference,
    end_to_end_id,payment_code,remittance; booking_date and amount_rupiah are
    required) or ISO 20022 camt.053 / camt.054 XML. Every payment posted on the
    statement's days is expected as a credit, every reversal as a debit; lines
    and payments pair on the bank reference, then the end-to-end id, then the
    payment code. Each item is matched, bank_only, ledger_only or
    amount_mismatch. Importing the same file again changes nothing.

    \b
    Examples:
      kanal statement 2025-10-01 --format camt.053 -o stmt.xml   # what the bank should say
      kanal reconcile stmt.xml
      kanal reconcile bank.csv --statement-ref KALBAR-2025-10-01 --export items.csv --fail-on-discrepancy
    """
    raw = file.read_bytes()

    async def run(pool):
        summary, created = await rec.import_statement(
            pool, raw, fmt=fmt, statement_ref=statement_ref, account=account,
            channel_prefix=channel_prefix, file_name=file.name, settlement_accounts=services.settings().settlement_accounts,
        )
        return summary, created, await rec.items(pool, summary["id"])

    services = _services()
    try:
        summary, created, items = services.run_with_pool(run)
    except StatementError as error:
        raise click.ClickException(error.detail) from None
    if export is not None:
        export.write_text(rec.items_csv(items), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(summary | {"already_imported": not created, "items": items}, indent=2, default=str))
    else:
        _print_summary(summary, created)
        for item in items:
            if item["kind"] != "matched":
                click.echo(
                    f"  {item['kind']:<16} {item['direction']:<6} line={item['line_no'] or '-':<5} "
                    f"payment={item['payment_id'] or '-':<8} code={item['payment_code'] or '-'} "
                    f"ref={item['bank_reference'] or '-'} bank={item['bank_amount_rupiah'] or '-'} "
                    f"ledger={item['ledger_amount_rupiah'] or '-'}"
                )
    sys.exit(1 if fail_on_discrepancy and summary["discrepancies"] else 0)


def _print_summary(summary: dict, created: bool | None = None) -> None:
    state = "" if created is None else (" (imported now)" if created else " (already imported: nothing changed)")
    click.echo(
        f"reconciliation {summary['id']}: {summary['format']} {summary['statement_ref']} "
        f"{summary['from_date']}..{summary['to_date']}{state}\n"
        f"  {summary['entries']} lines: {summary['matched']} matched, {summary['bank_only']} in bank not ledger, "
        f"{summary['ledger_only']} in ledger not bank, {summary['amount_mismatch']} amount mismatch"
    )


@click.group("reconciliations")
def reconciliations() -> None:
    """List imported statements and export their reconciliation items."""


@reconciliations.command("list")
@click.option("--limit", type=click.IntRange(1, rec.LIST_LIMIT_MAX), default=20, show_default=True, help="At most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(limit, as_json) -> None:
    """Imported statements, newest first.

    \b
    Example:
      kanal reconciliations list --limit 5
    """
    rows = _services().run_with_pool(lambda pool: rec.list_statements(pool, limit=limit))
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        _print_summary(row)


@reconciliations.command("export")
@click.argument("statement_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--format", "fmt", type=click.Choice(("csv", "json")), default="csv", show_default=True, help="The items' format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write here instead of standard output.")
def export_command(statement_id, fmt, output) -> None:
    """Export one reconciliation's items (every line and payment, with its verdict).

    \b
    Example:
      kanal reconciliations export 1 -o reconciliation-1.csv
    """
    async def run(pool):
        return await rec.get_statement(pool, statement_id), await rec.items(pool, statement_id)

    summary, items = _services().run_with_pool(run)
    if summary is None:
        raise click.ClickException(f"no reconciliation {statement_id}; `kanal reconciliations list` shows them")
    text = rec.items_csv(items) if fmt == "csv" else json.dumps(summary | {"items": items}, indent=2, default=str)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@click.command("statement")
@click.argument("from_date", metavar="FROM_DATE", type=click.DateTime(formats=["%Y-%m-%d"]))
@click.argument("to_date", metavar="[TO_DATE]", type=click.DateTime(formats=["%Y-%m-%d"]), required=False)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="camt.053", show_default=True,
              help="camt.053 (a day's statement), camt.054 (notifications) or csv.")
@click.option("--channel-prefix", default="", help="Only payments on channels starting with this.")
@click.option("--statement-ref", default="", help="The statement id to write (default KANAL-<dates>).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write here instead of standard output.")
def statement(from_date, to_date, fmt, channel_prefix, statement_ref, output) -> None:
    """Write the settlement statement a bank would send if it agreed with the
    ledger exactly, for the days FROM_DATE to TO_DATE, both YYYY-MM-DD
    (Asia/Pontianak; TO_DATE defaults to FROM_DATE). Edit it and feed it to
    `kanal reconcile` to see discrepancies found.

    \b
    Example:
      kanal statement 2025-10-01 --format camt.054 -o notifications.xml
    """
    first: dt.date = from_date.date()
    last: dt.date = (to_date or from_date).date()
    if last < first:
        raise click.BadParameter("TO_DATE is before FROM_DATE", param_hint="TO_DATE")
    for hint, day in (("FROM_DATE", first), ("TO_DATE", last)):
        if not STATEMENT_DAY_MIN <= day <= STATEMENT_DAY_MAX:
            raise click.BadParameter(f"{day.isoformat()} is outside the days a statement may cover "
                                     f"({STATEMENT_DAY_MIN.isoformat()} to {STATEMENT_DAY_MAX.isoformat()})",
                                     param_hint=hint)
    result = _services().run_with_pool(
        lambda pool: rec.ledger_statement(pool, first, last, channel_prefix=channel_prefix, statement_ref=statement_ref)
    )
    data = render(result, fmt)
    if output is None:
        click.echo(data.decode(), nl=False)
    else:
        output.write_bytes(data)
        click.echo(f"{len(result.lines)} lines written to {output}", err=True)


commands = [check, reconcile_command, reconciliations, statement]
