"""The `kanal` command line.

    kanal demo                 everything on this machine, seeded, until Ctrl-C
    kanal serve                the gateway (HTTP + bank adapters)
    kanal migrate              apply database migrations and exit
    kanal coverage             print current coverage per regency

With no DATABASE_URL every command uses the embedded PostgreSQL in
--data-dir (default: a per-user directory), starting it when needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
from pydantic import SecretStr

from gateway.settings import Settings, default_data_dir

T = TypeVar("T")


class Services:
    """Implements `bank_adapters.base.CliServices` for adapter commands."""

    def __init__(self, data_dir: Path | None) -> None:
        self.data_dir = data_dir

    def settings(self, **overrides) -> Settings:
        if self.data_dir is not None:
            overrides.setdefault("data_dir", self.data_dir)
        return Settings(**overrides)

    def run_with_pool(self, fn: Callable[..., Awaitable[T]]) -> T:
        from bank_adapters.registry import load_adapters
        from gateway.runtime import prepare_database, resolve_database_url
        from gateway.store import database

        settings = self.settings()
        # Logs go to stderr, as the gateway's do: left unconfigured, structlog
        # prints to stdout, into the output of `kanal reconcile --json`.
        _configure_logging(settings)

        async def main() -> T:
            url, server = resolve_database_url(settings)
            await prepare_database(url, load_adapters(), embedded=server is not None)
            pool = await database.create_pool(url, size_min=1, size_max=4)
            try:
                return await fn(pool)
            finally:
                await pool.close()

        return asyncio.run(main())


class SettingError(click.ClickException):
    """A setting (environment variable) or option that cannot be used: a usage
    error, printed as one line without a traceback."""

    exit_code = 2


# Each settings class and the prefix of its environment variables.
_ENV_PREFIXES = {"Settings": "KANAL_", "CallbackSettings": "KANAL_CALLBACKS_"}
_ENV_ALIASES = {("Settings", "database_url"): "DATABASE_URL"}


def _settings_problem(error: Exception) -> str:
    """One line per refused setting: its environment variable, the value given
    and what is wrong with it."""
    import pydantic

    if not isinstance(error, pydantic.ValidationError):
        # pydantic-settings could not even parse a value (e.g. KANAL_ADAPTERS=abc).
        import re

        found = re.search(r'field "(\w+)"', str(error))
        name = f"KANAL_{found.group(1).upper()}: " if found else ""
        return name + str(error).replace('field "', 'setting "').replace("EnvSettingsSource", "the environment")
    prefix = _ENV_PREFIXES.get(error.title, "KANAL_")
    lines = []
    for item in error.errors(include_url=False):
        problem = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:
            lines.append(problem)
            continue
        field = str(item["loc"][0])
        name = _ENV_ALIASES.get((error.title, field)) or prefix + "__".join(str(p) for p in item["loc"]).upper()
        lines.append(f"{name}={item['input']!r}: {problem}" if "input" in item else f"{name}: {problem}")
    return "; ".join(lines)


def _is_settings_error(error: Exception) -> bool:
    import pydantic
    import pydantic_settings

    if isinstance(error, pydantic_settings.SettingsError):
        return True
    return isinstance(error, pydantic.ValidationError) and error.title in _ENV_PREFIXES


class KanalGroup(click.Group):
    """Adds the commands that bank adapters contribute (`kanal partner ...`),
    and turns what users get wrong into click-style errors, not tracebacks:
    a setting that cannot be used (exit 2), a port already taken (exit 1), a
    use case's refusal (exit 1, its own words)."""

    def invoke(self, ctx):
        from bank_adapters.base import AdapterSettingsError
        from gateway.runtime import PortInUse
        from gateway.service.errors import ServiceError
        from gateway.store.database import DatabaseUnreachable

        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException:
            raise
        except AdapterSettingsError as error:
            where = f" (set by {error.environment_variable})" if error.environment_variable else ""
            raise SettingError(f"{error}{where}") from None
        except PortInUse as error:
            raise click.ClickException(str(error)) from None
        except DatabaseUnreachable as error:
            given = os.environ.get("DATABASE_URL") or os.environ.get("KANAL_DATABASE_URL")
            where = "DATABASE_URL" if given else "the embedded server in --data-dir"
            raise click.ClickException(f"{error} (from {where})") from None
        except ServiceError as error:
            fields = "; ".join(f"{e['field']}: {e['problem']}" for e in error.errors)
            raise click.ClickException(error.detail + (f" ({fields})" if fields and fields not in error.detail else "")) from None
        except Exception as error:
            if _is_settings_error(error):
                raise SettingError(_settings_problem(error)) from None
            raise

    def _adapter_commands(self) -> dict[str, click.Command]:
        if not hasattr(self, "_adapter_cache"):
            from bank_adapters.registry import discover

            found: dict[str, click.Command] = {}
            for factory in discover().values():
                adapter = factory()
                for command in getattr(adapter, "cli_commands", list)():
                    found.setdefault(command.name, command)
            self._adapter_cache = found
        return self._adapter_cache

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._adapter_commands()))

    def get_command(self, ctx, name):
        return super().get_command(ctx, name) or self._adapter_commands().get(name)


@click.group(cls=KanalGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="KANAL_DATA_DIR",
    help="Where the embedded PostgreSQL keeps its data (unused with DATABASE_URL), and where `kanal serve` "
    "keeps the admin token when KANAL_ADMIN_TOKEN is not set. Default: a per-user directory such as ~/.local/share/kanal.",
)
@click.version_option(package_name="kanal")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """Kanal: a BPJS Ketenagakerjaan dues payment gateway simulator.

    Banks pay dues bills over SNAP BI (HTTP) or ISO 8583 (TCP); each payment is
    posted once into a double-entry ledger in PostgreSQL and switches the
    workers' protection on, live.

    \b
    Start here:
      kanal demo                      seeded Kalbar, sandbox on, prints curl examples
      kanal serve --port 8080         the gateway alone (sandbox off)
      DATABASE_URL=postgresql://... kanal serve    use your own PostgreSQL

    Settings come from KANAL_* environment variables (see README.md).
    """
    ctx.obj = Services(data_dir)


def _configure_logging(settings: Settings) -> None:
    from gateway.logging import configure_logging

    configure_logging(settings.log_format, settings.log_level)


@main.command()
@click.pass_obj
def migrate(services: Services) -> None:
    """Apply database migrations and exit (safe to run twice, or from two processes at once)."""
    from bank_adapters.registry import load_adapters
    from gateway.runtime import prepare_database, resolve_database_url

    settings = services.settings()
    url, server = resolve_database_url(settings)
    applied = asyncio.run(prepare_database(url, load_adapters(), embedded=server is not None))
    click.echo(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else "; already up to date"))


async def _serve_until_stopped(gateway, on_ready: Callable[[], Awaitable[None]] | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.start()
    except BaseException:
        await gateway.stop()  # what did start (the pool, an adapter) is closed before the error is shown
        raise
    # What is alive now (modules, schemas, the pool, the routes) lives as
    # long as the process: kept out of the garbage collector's full
    # collections, which otherwise walk it all and hold every request in
    # flight meanwhile (23 ms once in a 5-second SNAP benchmark).
    gc.freeze()
    try:
        if on_ready:
            await on_ready()
        await stop.wait()
    finally:
        await gateway.stop()


def _serve_options(function):
    function = click.option("--host", default=None, help="Interface to listen on. [default: 127.0.0.1]")(function)
    port = click.IntRange(0, 65535)
    function = click.option("--port", "http_port", type=port, default=None, help="HTTP port (0: any free port). [default: 8080]")(function)
    function = click.option("--iso8583-port", type=port, default=None, help="ISO 8583 TCP port (0: any free port). [default: 8583]")(function)
    return function


def _overrides(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


@main.command()
@_serve_options
@click.option("--sandbox/--no-sandbox", default=None, help="Explain refused signatures in responses. [default: off]")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Gateway processes sharing the HTTP and ISO 8583 ports (SO_REUSEPORT); all use one PostgreSQL. [default: 1]",
)
@click.pass_obj
def serve(services: Services, host, http_port, iso8583_port, sandbox, workers) -> None:
    """Run the gateway: employer API, bank adapters, live coverage stream.

    The admin routes (/ops, partner registration, faults, conformance) need
    'Authorization: Bearer <KANAL_ADMIN_TOKEN>'. Without KANAL_ADMIN_TOKEN,
    the token is kept in DATA_DIR/admin-token (readable only by you) and
    reused at the next start; the first line printed says where.

    \b
    Examples:
      kanal serve --port 8080 --iso8583-port 8583
      kanal serve --workers 2          two processes, one port, one database
      curl http://127.0.0.1:8080/readyz
    """
    from gateway.runtime import Gateway, prepare_database, resolve_database_url

    settings = services.settings(
        **_overrides(host=host, http_port=http_port, iso8583_port=iso8583_port, sandbox=sandbox, workers=workers)
    )
    _configure_logging(settings)
    _admin_token_or_file(settings)
    url, server = resolve_database_url(settings)
    if settings.workers > 1:
        from bank_adapters.registry import load_adapters

        asyncio.run(prepare_database(url, load_adapters(), embedded=server is not None))
        sys.exit(_serve_workers(settings, url))
    gateway = Gateway(settings=settings, database_url=url, embedded=server is not None)

    async def ready() -> None:
        click.echo(f"Kanal serving on {gateway.url} (docs: {gateway.url}/docs); Ctrl-C to stop", err=True)

    asyncio.run(_serve_until_stopped(gateway, ready))


def _admin_token_or_file(settings: Settings) -> None:
    """Without KANAL_ADMIN_TOKEN the admin routes (/ops, partners, faults,
    conformance) still need a token the operator can read: it is kept in a
    file only this user may read, and one line on the terminal (never the
    structured log, which must not carry secrets) says where."""
    from gateway.settings import admin_token_from_file

    if settings.admin_token.get_secret_value():
        return
    path = settings.admin_token_file
    try:
        token = admin_token_from_file(path)
    except OSError as error:
        # A read-only file system, a HOME that cannot be written: the gateway
        # still serves banks and employers, as it did before the file.
        click.echo(
            f"KANAL_ADMIN_TOKEN is not set and {path} cannot be written ({error.strerror or error}): "
            "the admin routes refuse every request until KANAL_ADMIN_TOKEN is set.",
            err=True,
        )
        return
    settings.admin_token = SecretStr(token)
    click.echo(
        f"KANAL_ADMIN_TOKEN is not set: the admin token is in {path} (readable only by you); "
        "send it as 'Authorization: Bearer <token>', or set KANAL_ADMIN_TOKEN to choose it.",
        err=True,
    )


def _serve_workers(settings: Settings, database_url: str) -> int:
    """Run `settings.workers` gateway processes bound with SO_REUSEPORT; stop
    them all on Ctrl-C or SIGTERM. The parent keeps the embedded PostgreSQL."""
    import os
    import subprocess

    if settings.http_port == 0 or settings.iso8583_port == 0:
        raise click.UsageError("--workers needs fixed ports (not 0): the processes must share them")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KANAL_HOST": settings.host,
        "KANAL_HTTP_PORT": str(settings.http_port),
        "KANAL_ISO8583_PORT": str(settings.iso8583_port),
        "KANAL_SANDBOX": "true" if settings.sandbox else "false",
        "KANAL_ADMIN_TOKEN": settings.ensure_admin_token(),
        "KANAL_REUSE_PORT": "true",
        "KANAL_WORKERS": "1",
    }
    children = [
        subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env) for _ in range(settings.workers)
    ]
    click.echo(f"Kanal: {settings.workers} gateway processes on http://{settings.host}:{settings.http_port}", err=True)

    def stop(*_args) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


@main.command()
@_serve_options
@click.option("--employers", type=click.IntRange(1, 100_000), default=300, show_default=True, help="Employers to seed.")
@click.option("--workers", type=click.IntRange(1, 2_000_000), default=3000, show_default=True, help="Workers to seed.")
@click.option("--seed", type=int, default=2025, show_default=True, help="Random seed: the same seed gives the same province.")
@click.option("--exit-after-seed", is_flag=True, help="Seed, print the examples, and exit instead of serving.")
@click.pass_obj
def demo(services: Services, host, http_port, iso8583_port, employers, workers, seed, exit_after_seed) -> None:
    """Start everything on this machine: embedded PostgreSQL, migrations, a Kalbar
    seed (employers and workers over the 14 regencies, some bills paid), the
    gateway in sandbox mode. Prints URLs and ready-to-paste curl commands.
    Serves until Ctrl-C. Seeding happens once per data directory."""
    from gateway.runtime import Gateway, resolve_database_url
    from gateway.sim.seed import seed_kalbar

    settings = services.settings(
        **_overrides(host=host, http_port=http_port, iso8583_port=iso8583_port), sandbox=True
    )
    _configure_logging(settings)
    click.echo("Starting PostgreSQL…", err=True)
    url, server = resolve_database_url(settings)
    gateway = Gateway(settings=settings, database_url=url, embedded=server is not None)

    async def ready() -> None:
        pool = gateway.pool
        if not await pool.fetchval("select exists (select 1 from employers)"):
            with click.progressbar(length=employers, label="Seeding Kalbar", file=sys.stderr) as bar:
                last = [0]

                def progress(done: int, total: int) -> None:
                    bar.update(done - last[0])
                    last[0] = done

                report = await seed_kalbar(pool, gateway.payments, employers=employers, workers=workers, seed=seed, progress=progress)
            click.echo(
                f"Seeded {report.employers} employers, {report.participants} workers, {report.bills} bills ({report.paid} paid).",
                err=True,
            )
        await _print_demo_banner(gateway)
        if exit_after_seed:
            raise _Done

    try:
        asyncio.run(_serve_until_stopped(gateway, ready))
    except _Done:
        pass


class _Done(Exception):
    pass


def kanal_command() -> str:
    """How to run this same `kanal` from the current directory: `kanal` when
    that is what the shell finds, else the path of the running executable
    (relative when it is under the current directory, as .venv/bin/kanal is
    after `python3 dev.py demo`), or `python -m gateway.cli`."""
    import shlex
    import shutil

    def shown(path: str) -> str:
        absolute = os.path.abspath(path)
        relative = os.path.relpath(absolute)
        if not relative.startswith(os.pardir + os.sep) and relative != os.pardir:
            absolute = relative if os.sep in relative else os.curdir + os.sep + relative
        return shlex.quote(absolute)

    running = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if os.path.basename(running) == "kanal" and os.path.exists(running):
        found = shutil.which("kanal")
        if found and os.path.samefile(found, running):
            return "kanal"
        return shown(running)
    return f"{shown(sys.executable)} -m gateway.cli"


async def _print_demo_banner(gateway) -> None:
    from gateway.domain.periods import WIB, Period

    base = gateway.url
    last_month = Period.from_date(gateway.clock().astimezone(WIB).date()) - 1
    bill = await gateway.pool.fetchrow(
        "select payment_code, total_rupiah from bills where status = 'open' order by id limit 1"
    )
    lines = [
        "",
        "Kanal demo is running (sandbox mode).",
        f"  Employer portal {base}/portal/",
        f"  Ops dashboard  {base}/ops/",
        f"  Metrics        {base}/metrics",
        f"  API docs       {base}/docs",
        f"  OpenAPI        {base}/openapi.json",
        f"  Coverage       {base}/api/v1/coverage",
        f"  Live stream    {base}/api/v1/stream/coverage",
        f"  Admin token    {gateway.settings.admin_token.get_secret_value()}",
    ]
    iso = next((a for a in gateway.adapters if a.name == "iso8583"), None)
    if iso is not None and getattr(iso, "port", None):
        lines.append(f"  ISO 8583       {gateway.settings.host}:{iso.port}")
    lines += [
        "",
        "Register an employer (the API key is shown once):",
        f"  curl -s -X POST {base}/api/v1/employers -H 'Content-Type: application/json' \\",
        "    -d '{\"npp\":\"AB123456\",\"name\":\"PT Contoh Kalbar\",\"regency_code\":\"6171\",\"size_class\":\"large\",\"jkk_risk_class\":2}'",
        "",
        "Then add a worker and report wages (replace KEY):",
        f"  curl -s -X POST {base}/api/v1/employers/AB123456/participants -H 'Authorization: Bearer KEY' \\",
        "    -H 'Content-Type: application/json' \\",
        "    -d '{\"kpj\":\"61999000001\",\"nik\":\"6171011708900001\",\"name\":\"Budi Santoso\",\"wage\":12000000,\"segment\":\"PU\"}'",
        f"  curl -s -X POST {base}/api/v1/employers/AB123456/wage-reports -H 'Authorization: Bearer KEY' \\",
        "    -H 'Content-Type: application/json' -d '{\"period\":\"" + str(last_month) + "\"}'",
    ]
    if bill:
        amount = f"{bill['total_rupiah']:,}".replace(",", ".")
        lines += ["", f"An open seeded bill to pay through a bank adapter: payment code {bill['payment_code']} (Rp{amount})"]
    kanal = kanal_command()
    settings = gateway.settings
    if settings.database_url:
        # The URL may carry a password: not printed.
        lines += ["", "The commands below need the same DATABASE_URL in their terminal."]
    elif settings.data_dir.resolve() != default_data_dir().resolve():
        import shlex

        kanal += f" --data-dir {shlex.quote(str(settings.data_dir))}"  # this demo's ledger, not the default one
    lines += [
        "",
        f"Check the ledger from another terminal:  {kanal} check",
        f"Simulate the go-live:                    {kanal} simulate --help",
    ]
    lines.append("\nCtrl-C to stop.")
    click.echo("\n".join(lines))


def ranked_by_coverage(rows: list[dict]) -> list[dict]:
    """Regencies by exact coverage, protected / workforce (a Fraction: no
    rounding, no float), highest first; ties by regency code. Basis points
    would tie regencies that differ (Melawi 80/76707 above Bengkayang 92/96229,
    both 10 bp). The dashboard ranks the same way (dashboard.js, byCoverage)."""
    from fractions import Fraction

    def ratio(row: dict) -> Fraction:
        return Fraction(row["protected"], row["workforce"]) if row["workforce"] else Fraction(0)

    return sorted(rows, key=lambda r: (-ratio(r), r["regency_code"]))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
@click.pass_obj
def coverage(services: Services, as_json: bool) -> None:
    """Print coverage per regency (protected participants and % of workforce)."""
    from gateway.service import coverage as cov
    from gateway.service.payments import utc_now

    settings = services.settings()

    async def read(pool):
        return await cov.snapshot(pool, utc_now(), workforce=settings.province_workforce)

    snap = services.run_with_pool(read)
    if as_json:
        click.echo(json.dumps(snap, indent=2))
        return
    click.echo(f"Province: {snap['province']['protected']:,} protected, {snap['province']['coverage_percent']}% of {snap['province']['workforce']:,}")
    for row in ranked_by_coverage(snap["regencies"]):
        click.echo(f"  {row['regency_code']} {row['name']:<14} {row['protected']:>9,}  {row['coverage_percent']:>6}%")


# Feature packages contribute commands: each module exposes `commands`, a list
# of click commands or groups. A module that does not exist (yet) is skipped.
CLI_EXTENSIONS = ("gateway.ops.cli", "gateway.callbacks.cli", "gateway.sim.cli", "gateway.portal.cli")


def _add_extension_commands() -> None:
    import importlib

    for name in CLI_EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name and not name.startswith(str(error.name) + "."):
                raise
            continue
        for command in module.commands:
            main.add_command(command)


_add_extension_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
