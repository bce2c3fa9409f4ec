"""The simulator end to end: a small province, a real gateway on real
sockets, the real SNAP BI and ISO 8583 clients, and `kanal check`'s checks.

The 100,000-worker, three-month run of issue 9 takes minutes, so it is a
documented command (docs/simulator.md) rather than a test; these runs
exercise the same code at a few hundred workers."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from urllib.parse import urlsplit

import asyncpg
import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.sim.scenario import load
from gateway.sim.simulator import Simulation
from gateway.store import database
from tests.conftest import test_settings


def _settings():
    return test_settings(sandbox=False, log_format="json")


async def _run(url: str, scenario, seed: int):
    return await Simulation(scenario, seed=seed).run(url, settings=_settings())


async def test_three_months_of_go_live_end_with_a_clean_ledger_and_more_coverage(fresh_database):
    scenario = load("go-live").with_overrides(workers=800, months=3)
    report = await _run(await fresh_database(), scenario, seed=11)

    assert report.health["verdict"] == "clean", report.health
    assert {c["name"] for c in report.health["checks"]} >= {"entries_balance", "trial_balance", "funds_equal_lines"}
    province = report.province()
    assert province["workforce"] == 800
    # The baseline is 31.63 % of the PU workers and of the BPU workers, by regency, rounded down per employer.
    assert 0.25 * 800 <= province["protected_before"] <= 0.3163 * 800 + 14
    assert province["protected_after"] > province["protected_before"]
    assert len(report.coverage) == 14
    # Payments went through both adapters and were approved.
    approved = {(o["protocol"], o["step"]): o["count"] for o in report.outcomes if o["code"] in ("00", "2002500")}
    assert approved[("snap", "payment")] > 0 and approved[("iso8583", "payment")] > 0
    # Every standing payment is one approved first payment (or one after a reversal), none from a duplicate.
    payments_approved = sum(n for (p, step), n in approved.items() if step in ("payment", "payment after reversal"))
    assert report.ledger["payments_posted"] + report.ledger["payments_reversed"] == payments_approved
    # Late payers left PU bills open past the deadline: fees appear on later bills.
    assert report.months[0]["late_fee_rupiah"] == 0
    assert report.ledger["late_fee_lines"] > 0 and report.ledger["late_fee_rupiah"] > 0
    # The rush: most on-time payments fall in the days before the 15th.
    assert all(m["rush_payments"] > m["payments_sent"] // 3 for m in report.months)


async def test_the_same_seed_gives_the_same_run_and_another_seed_does_not(fresh_database):
    scenario = load("go-live").with_overrides(workers=300, months=2)
    first = await _run(await fresh_database(), scenario, seed=5)
    second = await _run(await fresh_database(), scenario, seed=5)
    other = await _run(await fresh_database(), scenario, seed=6)
    assert first.summary() == second.summary()
    assert other.summary()["outcomes"] != first.summary()["outcomes"]


async def test_duplicates_advices_and_reversals_post_nothing_twice(fresh_database):
    scenario = load("faults").with_overrides(workers=400, months=2)
    report = await _run(await fresh_database(), scenario, seed=3)
    assert report.clean, report.health
    by_step: dict[tuple[str, str], dict[str, int]] = {}
    for o in report.outcomes:
        by_step.setdefault((o["protocol"], o["step"]), {})[o["code"]] = o["count"]
    # Repeats are answered as the original was (the same success), never refused, never posted again.
    assert set(by_step[("snap", "duplicate")]) == {"2002500"}
    assert set(by_step[("snap", "advice")]) == {"2002500"}
    assert set(by_step[("iso8583", "duplicate")]) == {"00"}
    assert set(by_step[("iso8583", "advice")]) == {"00"}
    assert by_step[("iso8583", "reversal")] == {"00": report.ledger["payments_reversed"]}
    assert report.ledger["payments_reversed"] > 0


def test_kanal_simulate_runs_from_the_command_line_and_exits_0_on_a_clean_ledger(admin_url, tmp_path):
    name = f"kanal_sim_cli_{uuid.uuid4().hex[:8]}"
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        main,
        ["simulate", "--workers", "150", "--duration", "1", "--seed", "9", "--database", name, "--quiet", "--json", str(out)],
        env={"DATABASE_URL": database.database_url_with_name(admin_url, "postgres"), "KANAL_LOG_FORMAT": "json"},
    )
    try:
        assert result.exit_code == 0, result.output
        assert "Coverage (protected workers, JKK) per regency" in result.output
        assert "Ledger health (gateway.ops.checks.run_checks): CLEAN" in result.output
        assert "Pontianak" in result.output
        import json

        saved = json.loads(out.read_text())
        assert saved["workers"] == 150 and saved["health"]["verdict"] == "clean"
        # Late payers drawn for after the last month are not sent: the text says how many, not only the JSON.
        carried = saved["months"][-1]["late_payments_carried_over"]
        assert carried > 0
        assert f"{carried:,} late payments fall after {saved['months'][-1]['period']}'s month and were not sent" in result.output
    finally:
        import asyncio

        async def drop() -> None:
            conn = await asyncpg.connect(admin_url)
            try:
                await conn.execute(f'drop database if exists "{name}" with (force)')
            finally:
                await conn.close()

        asyncio.run(drop())


def test_kanal_simulate_refuses_a_bad_scenario_before_touching_a_database(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[behaviour]\nlate_percent = 150\n")
    result = CliRunner().invoke(main, ["simulate", "--scenario", str(bad)], env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.exit_code == 2
    assert "behaviour.late_percent: must be from 0 to 100, got 150" in result.output


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"[[banks]]\nprotocol = 'snap'\nshare_percent = 100\n", "banks[0].name: is required"),
        (b"name = '\xe9t\xe9'\n", "file: is not UTF-8 text"),
        (b"start_period = '2019-01'\n", "start_period: must be 2023-04 or later"),
    ],
)
def test_kanal_simulate_refuses_a_broken_scenario_with_one_line_not_a_traceback(tmp_path, content, expected):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(content)
    result = CliRunner().invoke(main, ["simulate", "--scenario", str(bad)], env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.exit_code == 2, result.output
    assert f"Invalid value for --scenario: {bad}: {expected}" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_kanal_simulate_help_teaches_the_options():
    result = CliRunner().invoke(main, ["simulate", "--help"])
    assert result.exit_code == 0
    for text in ("--scenario", "--workers", "--duration", "--rate", "--seed", "1819430", "kanal simulate --scenario rush"):
        assert text in result.output


def test_scenario_dataclasses_are_frozen():
    scenario = load(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        scenario.workers = 1  # type: ignore[misc]


async def _has_marker_table(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("select to_regclass('public.keep_me') is not null")
    finally:
        await conn.close()


async def _make_marker_table(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("create table keep_me (x int)")
    finally:
        await conn.close()


@pytest.mark.parametrize("point_database_url_at", ["that database", "the server"])
async def test_kanal_simulate_never_drops_a_database_it_did_not_make(fresh_database, admin_url, point_database_url_at):
    # A database someone uses (here: one with a table in it), named with --database, either the very one
    # DATABASE_URL names (what kanal serve would use) or another one on the same server.
    url = await fresh_database()
    await _make_marker_table(url)
    name = urlsplit(url).path.lstrip("/")
    env_url = url if point_database_url_at == "that database" else database.database_url_with_name(admin_url, "postgres")
    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["simulate", "--workers", "20", "--duration", "1", "--database", name, "--quiet"],
        env={"DATABASE_URL": env_url, "KANAL_LOG_FORMAT": "json"},
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value for --database" in result.output
    assert await _has_marker_table(url), "the simulator dropped a database it did not make"


def test_kanal_simulate_refuses_the_database_of_kanal_serve():
    result = CliRunner().invoke(
        main, ["simulate", "--database", "kanal"], env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/postgres"}
    )
    assert result.exit_code == 2, result.output
    assert "'kanal' is the database kanal serve and kanal demo use" in result.output


def test_kanal_simulate_runs_again_on_the_database_it_made(admin_url):
    env = {"DATABASE_URL": database.database_url_with_name(admin_url, "postgres"), "KANAL_LOG_FORMAT": "json"}
    args = ["simulate", "--workers", "20", "--duration", "1", "--database", "kanal_sim_test_again", "--quiet"]
    try:
        for _ in range(2):
            result = CliRunner().invoke(main, args, env=env)
            assert result.exit_code == 0, result.output
    finally:

        async def drop() -> None:
            conn = await asyncpg.connect(admin_url)
            try:
                await conn.execute('drop database if exists "kanal_sim_test_again" with (force)')
            finally:
                await conn.close()

        asyncio.run(drop())


def test_kanal_simulate_json_dash_writes_json_alone_to_standard_output(admin_url):
    name = "kanal_sim_test_json_stdout"
    env = {"DATABASE_URL": database.database_url_with_name(admin_url, "postgres"), "KANAL_LOG_FORMAT": "json"}
    args = ["simulate", "--workers", "30", "--duration", "1", "--seed", "4", "--database", name, "--quiet", "--json", "-"]
    try:
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 0, result.output
        import json

        report = json.loads(result.stdout)  # `kanal simulate --json - | jq` must work
        assert report["workers"] == 30 and report["health"]["verdict"] == "clean"
        assert "Coverage (protected workers, JKK) per regency" in result.stderr
    finally:

        async def drop() -> None:
            conn = await asyncpg.connect(admin_url)
            try:
                await conn.execute('drop database if exists "kanal_sim_test_json_stdout" with (force)')
            finally:
                await conn.close()

        asyncio.run(drop())


def test_kanal_simulate_refuses_a_json_file_it_could_not_write_before_running(tmp_path):
    missing = tmp_path / "no-such-folder" / "report.json"
    result = CliRunner().invoke(
        main, ["simulate", "--json", str(missing)], env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/postgres"}
    )
    # Refused before the run (the unreachable server is never tried), with one line, not a traceback afterwards.
    assert result.exit_code == 2, result.output
    assert "Invalid value for --json" in result.output and "does not exist" in result.output


def test_kanal_simulate_refuses_an_iso8583_acquirer_the_gateway_does_not_serve_before_seeding(admin_url, tmp_path):
    scenario = tmp_path / "acquirer.toml"
    scenario.write_text("[[banks]]\nname = 'OTHER-H2H'\nprotocol = 'iso8583'\nshare_percent = 100\nacquirer = '999'\n")
    env = {"DATABASE_URL": database.database_url_with_name(admin_url, "postgres"), "KANAL_LOG_FORMAT": "json"}
    args = ["simulate", "--scenario", str(scenario), "--workers", "30", "--database", "kanal_sim_test_acquirer", "--quiet"]
    try:
        result = CliRunner().invoke(main, args, env=env)
        # The bank_kalbar profile takes acquirer 123 only: a one-line error naming the key, not a LinkDown traceback.
        assert result.exit_code == 2, result.output
        assert "banks[0].acquirer: OTHER-H2H's acquirer 999 is not served" in result.output
        assert "Traceback" not in result.output

        async def employers() -> int:
            conn = await asyncpg.connect(database.database_url_with_name(admin_url, "kanal_sim_test_acquirer"))
            try:
                return await conn.fetchval("select count(*) from employers")
            finally:
                await conn.close()

        assert asyncio.run(employers()) == 0  # refused before the province was seeded
    finally:

        async def drop() -> None:
            conn = await asyncpg.connect(admin_url)
            try:
                await conn.execute('drop database if exists "kanal_sim_test_acquirer" with (force)')
            finally:
                await conn.close()

        asyncio.run(drop())


def test_a_progress_bar_with_nothing_to_do_shows_0_of_0_on_a_terminal(monkeypatch):
    import os
    import sys

    from gateway.sim.cli import click_progress

    master, slave = os.openpty()  # a real terminal: click draws bars only on one
    try:
        with open(slave, "w", closefd=False) as tty:
            monkeypatch.setattr(sys, "stderr", tty)
            with click_progress("Payments 2025-09", 0):
                pass
            tty.flush()
        shown = os.read(master, 65536).decode()
    finally:
        os.close(slave)
        os.close(master)
    assert "Payments 2025-09" in shown
    assert "0/0" in shown and "0/1" not in shown  # no payment was due: none shown as outstanding


@pytest.mark.parametrize("name", ["kanal_sim_" + "x" * 60, "kanal sim", "kanal_sim_é"])
def test_kanal_simulate_refuses_a_database_name_postgresql_would_not_take_as_is(name):
    result = CliRunner().invoke(
        main, ["simulate", "--database", name], env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/postgres"}
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value for --database" in result.output and "1 to 63 ASCII letters" in result.output
