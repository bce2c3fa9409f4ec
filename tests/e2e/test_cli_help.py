"""`kanal --help` and every subcommand's: what a new user reads first must be
readable (examples on their own lines, no strftime patterns as argument
names, no URL split over two lines) and true (ranges that are the accepted
ones, the checks that exist, the run time measured)."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.ops.checks import CHECKS


def kanal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "100"},
    )


def every_command(group: click.Group = main, path: tuple[str, ...] = ()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from every_command(command, (*path, name))


COMMANDS = list(every_command())


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_every_help_is_readable(path):
    result = CliRunner().invoke(main, [*path, "--help"], terminal_width=100, catch_exceptions=False)
    assert result.exit_code == 0
    usage = result.output.splitlines()[0]
    assert "%" not in usage, usage  # a DateTime format is not an argument's name
    for line in result.output.splitlines():
        # A word or URL broken at a hyphen across lines ("transfer-" / "va/payment").
        assert not line.rstrip().endswith("-") or line.strip().startswith("-"), line
    command = dict(COMMANDS)[path]
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden and "--help" not in param.opts:
            assert param.help, f"kanal {' '.join(path)} {param.opts[0]} has no help"


def test_snap_sign_shows_its_two_examples_on_their_own_lines():
    out = kanal("snap", "sign", "--help").stdout
    lines = [line.strip() for line in out.splitlines()]
    assert "kanal snap sign --client-secret S --token T --path /snap/v1.0/transfer-va/payment --body body.json" in lines
    assert "kanal snap sign --client-key K --private-key bank.pem" in lines
    assert any(line.endswith("[default: /snap/v1.0/transfer-va/payment]") for line in lines), out


def test_statement_names_its_date_arguments():
    help_text = kanal("statement", "--help").stdout
    assert help_text.splitlines()[0] == "Usage: python -m gateway.cli statement [OPTIONS] FROM_DATE [TO_DATE]"
    missing = kanal("statement")
    assert missing.returncode == 2
    assert "Error: Missing argument 'FROM_DATE'." in missing.stderr and "%Y" not in missing.stderr


def test_fault_options_show_the_ranges_that_are_accepted():
    out = " ".join(kanal("faults", "set", "--help").stdout.split())
    for option in ("--server-error-percent", "--lost-response-percent", "--duplicate-percent", "--drop-percent"):
        assert f"{option} INTEGER RANGE" in out
    assert out.count("[0<=x<=100]") == 8  # every *-percent option
    assert "[0<=x<=3600000]" in out  # --delay-ms, as OutboundFaults allows
    refused = kanal("faults", "set", "--partner", "BANKKALBAR", "--server-error-percent", "150")
    assert refused.returncode == 2
    assert "Invalid value for '--server-error-percent': 150 is not in the range 0<=x<=100." in refused.stderr


def test_check_help_lists_every_check_and_the_ones_skipped_without_callbacks():
    out = " ".join(kanal("check", "--help").stdout.split())
    assert f"The {len(CHECKS)} checks:" in out
    for check in CHECKS:
        assert f"({check.__name__})" in out
    assert "The 3 callback checks (outbox_lag, delivery_failure_rate, callback_counters) are skipped" in out
    assert "the last two" not in out


def test_simulate_help_gives_the_measured_time():
    out = " ".join(kanal("simulate", "--help").stdout.split())
    assert "the issue 9 run (about 3 minutes on 2 cores)" in out
