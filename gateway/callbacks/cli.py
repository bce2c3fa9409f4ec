"""`kanal callbacks ...`, `kanal deliver`, `kanal faults ...` and
`kanal conformance`: the same use cases as the API, against the configured
database (embedded, or DATABASE_URL)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from gateway.callbacks import conformance as conformance_report
from gateway.callbacks import partners, service, store
from gateway.callbacks.settings import CallbackSettings
from gateway.service.errors import ServiceError

EVENT_CHOICE = click.Choice(service.EVENT_TYPES)
# A delivery id is a bigint: a larger number is a usage error (exit 2), not
# the driver's traceback.
DELIVERY_ID = click.IntRange(1, 2**63 - 1)


def _run(fn, *, partner_hint: str | None = None) -> Any:
    """Run fn(pool) with a migrated pool; ServiceErrors become errors (exit 1),
    an unknown partner a usage error of the option or argument `partner_hint`
    (exit 2)."""
    services = click.get_current_context().find_root().obj
    try:
        return services.run_with_pool(fn)
    except partners.UnknownPartner as error:
        raise click.BadParameter(error.detail, param_hint=partner_hint) from None
    except ServiceError as error:
        fields = "; ".join(f"{e['field']}: {e['problem']}" for e in error.errors)
        raise click.ClickException(f"{error.detail}" + (f" ({fields})" if fields and fields not in error.detail else "")) from None


def _option_error(error: ServiceError, options: dict[str, tuple[str, Any]]) -> click.UsageError:
    """A refused value as click's usage error (exit 2), naming the option it
    came from and the value: {field: (option, value)}."""
    problems = []
    for item in error.errors or [{"field": "", "problem": error.detail}]:
        problem = str(item["problem"]).removeprefix("Value error, ")
        field = str(item["field"]).split(".")[0]
        if field in options:
            option, value = options[field]
            shown = value if len(str(value)) <= 60 else str(value)[:57] + "..."
            problems.append(f"Invalid value for '{option}' {shown!r}: {problem}")
        else:
            problems.append((f"{item['field']}: " if item["field"] else "") + problem)
    return click.UsageError("; ".join(problems))


def _settings():
    return click.get_current_context().find_root().obj.settings()


async def _require_partner(pool, partner_id: str, settings) -> None:
    await partners.require(pool, service.check_partner_id(partner_id), settings)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group("callbacks")
def callbacks_group() -> None:
    """Outbound callbacks (Standard Webhooks): endpoints, deliveries, replays.

    \b
    Examples:
      kanal callbacks add --employer AB123456 --url https://example.com/hook --event payment.posted
      kanal callbacks add --partner BANKKALBAR --url https://bank.example/hook --event payment.posted --event bill.created
      kanal callbacks list
      kanal callbacks deliveries ep_... --status failed
      kanal callbacks replay 42              # one delivery, now
      kanal callbacks replay-failed ep_...   # every failed delivery of an endpoint

    Each request carries webhook-id (the event's stable id), webhook-timestamp
    and webhook-signature; verify them with any Standard Webhooks library and
    the endpoint's whsec_ secret (see docs/callbacks.md).
    """


@callbacks_group.command("add")
@click.option("--employer", "npp", help="The employer (NPP) whose events the endpoint receives.")
@click.option("--partner", "partner_id", help="A bank or partner id: its endpoint receives every employer's events.")
@click.option("--url", required=True, help="Where to POST events (http:// or https://).")
@click.option("--event", "events", multiple=True, required=True, type=EVENT_CHOICE, help="An event type; repeat for several.")
@click.option("--only-npp", help="Partner endpoints: only this employer's events.")
@click.option("--description", default="", help="A note for people (at most 200 characters).")
def add(npp, partner_id, url, events, only_npp, description) -> None:
    """Register an endpoint; prints its whsec_ secret once."""
    if bool(npp) == bool(partner_id):
        raise click.UsageError("give exactly one of --employer NPP or --partner ID")
    try:
        data = service.parse(service.EndpointIn, {"url": url, "event_types": list(events), "description": description, "npp": only_npp})
    except ServiceError as error:
        raise _option_error(error, {"url": ("--url", url), "description": ("--description", description), "npp": ("--only-npp", only_npp)}) from None
    settings = CallbackSettings.from_env()

    async def go(pool):
        if npp and not await pool.fetchval("select 1 from employers where npp = $1", npp):
            raise service.Invalid.field("employer", f"no employer {npp}")
        kind, owner = ("employer", npp) if npp else ("partner", service.check_partner_id(partner_id))
        return await service.register(pool, settings, owner_kind=kind, owner_id=owner, data=data)

    created = _run(go)
    click.echo(f"endpoint {created['id']} -> {created['url']} ({', '.join(created['event_types'])})")
    click.echo(f"secret   {created['secret']}   (shown once; `kanal callbacks rotate-secret {created['id']}` makes a new one)")


@callbacks_group.command("list")
@click.option("--employer", "npp", help="Only this employer's endpoints.")
@click.option("--partner", "partner_id", help="Only this partner's endpoints.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_endpoints(npp, partner_id, as_json) -> None:
    """List endpoints (never their secrets)."""
    kind, owner = ("employer", npp) if npp else ("partner", partner_id) if partner_id else (None, None)
    rows = _run(lambda pool: store.endpoints(pool, kind, owner))
    views = [store.endpoint_view(r) for r in rows]
    if as_json:
        _echo_json({"endpoints": views})
        return
    for v in views:
        state = v["status"] + (f" ({v['disabled_reason']})" if v["disabled_reason"] else "")
        click.echo(f"{v['id']}  {v['owner']['kind']}:{v['owner']['id']}  {v['url']}  {','.join(v['event_types'])}  {state}")


def _endpoint_command(name: str, help_text: str, fn):
    @callbacks_group.command(name, help=help_text)
    @click.argument("endpoint_id")
    def command(endpoint_id: str) -> None:
        _echo_json(_run(lambda pool: fn(pool, endpoint_id)))

    return command


_endpoint_command("enable", "Enable an endpoint (pending deliveries then go out).", lambda pool, e: service.set_enabled(pool, e, True))
_endpoint_command("disable", "Disable an endpoint (deliveries wait).", lambda pool, e: service.set_enabled(pool, e, False))
_endpoint_command(
    "rotate-secret",
    "New whsec_ secret; the old one keeps signing for KANAL_CALLBACKS_ROTATION_OVERLAP_S seconds (default: a day).",
    lambda pool, e: service.rotate_secret(pool, CallbackSettings.from_env(), e),
)
_endpoint_command("replay-failed", "Send every failed, gone or dropped delivery of an endpoint again (re-enables it).", service.replay_failed)


@callbacks_group.command("deliveries")
@click.argument("endpoint_id")
@click.option("--status", type=click.Choice(["pending", "delivered", "failed", "gone", "dropped"]), help="Only this status.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Newest first, at most this many.")
def list_deliveries(endpoint_id, status, limit) -> None:
    """An endpoint's deliveries: id, event, status, attempts."""

    async def go(pool):
        await service.endpoint_or_404(pool, endpoint_id)
        return await store.deliveries(pool, endpoint_id, status=status, limit=limit, before_id=None)

    for row in _run(go):
        v = store.delivery_view(row)
        faults = f"  faults={','.join(v['faults'])}" if v["faults"] else ""
        click.echo(f"{v['id']:>8}  {v['event_id']}  {v['type']:<16} {v['status']:<9} attempts={v['attempts']} last={v['last_http_status'] or v['last_error'] or '-'}{faults}")


@callbacks_group.command("show")
@click.argument("delivery_id", type=DELIVERY_ID)
def show_delivery(delivery_id) -> None:
    """One delivery with its attempt log (status, latency, response excerpt)."""
    _echo_json(_run(lambda pool: service.delivery_with_attempts(pool, delivery_id))[1])


@callbacks_group.command("replay")
@click.argument("delivery_id", type=DELIVERY_ID)
def replay(delivery_id) -> None:
    """Send one delivery again now, with the same webhook-id (re-enables its endpoint)."""
    _echo_json(_run(lambda pool: service.replay_delivery(pool, delivery_id)))


@click.command("deliver")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Delivery workers in this process. [default: KANAL_CALLBACKS_WORKERS or 2]")
@click.option("--relay/--no-relay", default=True, show_default=True, help="Also fan new outbox events out into deliveries.")
@click.pass_obj
def deliver(services, workers, relay) -> None:
    """Run delivery workers (and the outbox relay) without the gateway, until Ctrl-C.

    Any number of these processes, and the gateways' own workers, share the
    work through PostgreSQL (FOR UPDATE SKIP LOCKED): start more to deliver
    faster; kill one and the others take over its deliveries.

    \b
    Examples:
      kanal deliver --workers 4
      KANAL_CALLBACKS_WORKERS=0 kanal serve & kanal deliver    # deliveries in their own process
    """
    from bank_adapters.registry import load_adapters
    from gateway.callbacks import worker
    from gateway.logging import configure_logging
    from gateway.runtime import prepare_database, resolve_database_url
    from gateway.store import database

    settings = services.settings()
    configure_logging(settings.log_format, settings.log_level)
    callback_settings = CallbackSettings.from_env()
    count = workers if workers is not None else max(1, callback_settings.workers)
    url, _server = resolve_database_url(settings)

    async def main() -> None:
        await prepare_database(url, load_adapters(), embedded=_server is not None)
        pool = await database.create_pool(url, size_min=1, size_max=count + 2, statement_timeout_ms=settings.statement_timeout_ms)
        task = asyncio.create_task(worker.run_all(pool, callback_settings, workers=count, relay=relay))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, task.cancel)
        click.echo(f"kanal deliver: {count} worker(s){' and the relay' if relay else ''}; Ctrl-C to stop", err=True)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            await pool.close()

    asyncio.run(main())


@click.group("faults")
def faults_group() -> None:
    """Order failures on purpose, per partner (inbound and outbound) or per endpoint (outbound).

    \b
    Inbound (a bank calling Kanal over SNAP, or over an ISO 8583 link: the
    partner is iso8583-<acquirer> unless the adapter's partner_ids names it):
      kanal faults set --partner BANKKALBAR --latency-ms 2000
      kanal faults set --partner BANKKALBAR --lost-response-percent 100 --hold-ms 5000
      kanal faults set --partner iso8583-123 --server-error-percent 100
    Outbound (Kanal calling your endpoint):
      kanal faults set --endpoint ep_... --duplicate-percent 50 --out-of-order-percent 100
      kanal faults set --partner BANKKALBAR --drop-percent 10 --delay-ms 3000
    Show and clear:
      kanal faults show --partner BANKKALBAR
      kanal faults clear --partner BANKKALBAR

    Magic values need no setting (sandbox partners): see docs/callbacks.md.
    """


_INBOUND = ("latency_ms", "lost_response_percent", "timeout_before_commit_percent", "server_error_percent",
            "too_many_requests_percent", "wrong_signature_percent", "hold_ms")
_OUTBOUND = ("delay_ms", "duplicate_percent", "out_of_order_percent", "out_of_order_hold_ms", "drop_percent")


def _fault_options(function):
    helps = {
        "latency_ms": "Inbound: answer this much later.",
        "lost_response_percent": "Inbound: share of requests processed (posted) but never answered.",
        "timeout_before_commit_percent": "Inbound: share of requests never processed nor answered.",
        "server_error_percent": "Inbound: share answered 500 General Error (ISO 8583: 96), nothing done.",
        "too_many_requests_percent": "Inbound: share answered 429 (ISO 8583: 91), nothing done.",
        "wrong_signature_percent": "Inbound: share answered with an X-SIGNATURE that does not verify (ISO 8583: an RRN that matches no request).",
        "hold_ms": "Inbound, SNAP: how long an unanswered connection is held before it is closed.",
        "delay_ms": "Outbound: hold every delivery this long before its first attempt.",
        "duplicate_percent": "Outbound: share of deliveries sent twice.",
        "out_of_order_percent": "Outbound: share of consecutive pairs sent in reverse order.",
        "out_of_order_hold_ms": "Outbound: how long the first of a reversed pair is held back.",
        "drop_percent": "Outbound: share of deliveries never sent (until replayed).",
    }
    for name in reversed(_INBOUND + _OUTBOUND):
        function = click.option("--" + name.replace("_", "-"), name, type=_fault_range(name), default=None, help=helps[name])(function)
    return function


def _fault_range(name: str) -> click.IntRange:
    """The option's range is the profile model's own (a percent 0 to 100, each
    duration its limit), so that --help shows what will be accepted."""
    from annotated_types import Ge, Le

    from bank_adapters.faults import InboundFaults
    from gateway.callbacks.faults import OutboundFaults

    model = InboundFaults if name in _INBOUND else OutboundFaults
    low = high = None
    for bound in model.model_fields[name].metadata:
        if isinstance(bound, Ge):
            low = bound.ge
        elif isinstance(bound, Le):
            high = bound.le
    return click.IntRange(low, high)


def _target(partner_id, endpoint_id) -> None:
    if bool(partner_id) == bool(endpoint_id):
        raise click.UsageError("give exactly one of --partner ID or --endpoint EP")


@faults_group.command("set")
@click.option("--partner", "partner_id", help="A partner: inbound faults for its SNAP requests and ISO 8583 messages, outbound for its endpoints.")
@click.option("--endpoint", "endpoint_id", help="One endpoint (outbound faults only).")
@_fault_options
def set_faults(partner_id, endpoint_id, **values) -> None:
    """Set a fault profile; options left out keep their current values."""
    _target(partner_id, endpoint_id)
    given = {k: v for k, v in values.items() if v is not None}
    inbound = {k: v for k, v in given.items() if k in _INBOUND}
    outbound = {k: v for k, v in given.items() if k in _OUTBOUND}
    if endpoint_id and inbound:
        raise click.UsageError("inbound faults are set per partner (--partner), not per endpoint")

    settings = _settings()

    async def go(pool):
        if endpoint_id:
            row = await service.endpoint_or_404(pool, endpoint_id)
            return await service.set_endpoint_faults(pool, endpoint_id, {**json.loads(row["faults"]), **outbound})
        await _require_partner(pool, partner_id, settings)
        current = await service.partner_faults(pool, partner_id)
        body = {}
        if inbound:
            body["inbound"] = {**current["inbound"], **inbound}
        if outbound:
            body["outbound"] = {**current["outbound"], **outbound}
        return await service.set_partner_faults(pool, partner_id, body)

    _echo_json(_run(go, partner_hint="'--partner'"))


@faults_group.command("show")
@click.option("--partner", "partner_id", help="A partner: its inbound and outbound profiles.")
@click.option("--endpoint", "endpoint_id", help="One endpoint: its outbound profile.")
def show_faults(partner_id, endpoint_id) -> None:
    """Print a partner's or an endpoint's fault profile."""
    _target(partner_id, endpoint_id)

    settings = _settings()

    async def go(pool):
        if endpoint_id:
            return {"endpoint_id": endpoint_id, "outbound": json.loads((await service.endpoint_or_404(pool, endpoint_id))["faults"])}
        await _require_partner(pool, partner_id, settings)
        return await service.partner_faults(pool, partner_id)

    _echo_json(_run(go, partner_hint="'--partner'"))


@faults_group.command("clear")
@click.option("--partner", "partner_id", help="A partner: clears its inbound and outbound profiles.")
@click.option("--endpoint", "endpoint_id", help="One endpoint: clears its outbound profile.")
def clear_faults(partner_id, endpoint_id) -> None:
    """Remove every fault of a partner or an endpoint."""
    _target(partner_id, endpoint_id)
    if endpoint_id:
        _echo_json(_run(lambda pool: service.set_endpoint_faults(pool, endpoint_id, {})))
        return
    settings = _settings()

    async def go(pool):
        await _require_partner(pool, partner_id, settings)
        return await service.set_partner_faults(pool, partner_id, {"inbound": {}, "outbound": {}})

    _echo_json(_run(go, partner_hint="'--partner'"))


@click.command("conformance")
@click.argument("partner_id")
@click.option(
    "--since",
    help="From this time (ISO 8601, e.g. 2025-09-24T10:00:00+07:00) or this long ago (90s, 15m, 24h, 7d). "
    "[default: every exchange]",
)
@click.option("--until", help="Up to this time (same forms). [default: now]")
@click.option("--format", "output_format", type=click.Choice(["text", "json", "html"]), default="text", show_default=True,
              help="text for a terminal, json for tools, html for a self-contained page.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here instead of stdout.")
@click.option("--fail-on-error", is_flag=True, help="Exit 1 when any exchange broke a protocol rule (for CI pipelines).")
def conformance(partner_id, since, until, output_format, output, fail_on_error) -> None:
    """A partner's conformance report: every exchange with its verdict and failed rule.

    \b
    Examples:
      kanal conformance BANKKALBAR --since 24h
      kanal conformance BANKKALBAR                # every exchange the partner ever had
      kanal conformance BANKKALBAR --since 2025-09-24T00:00:00+07:00 --format html -o report.html
      kanal conformance BANKKALBAR --since 1h --fail-on-error     # in CI: exit 1 on any broken rule

    Exit codes: 0 conformant, or no exchanges in the window (or --fail-on-error
    not given); 1 a rule was broken; 2 usage error, such as a partner id that
    no partner has.
    """
    now = dt.datetime.now(dt.UTC)
    try:
        since_at, until_at = service.parse_window(since, until, now)
        service.check_partner_id(partner_id)
    except ServiceError as error:
        raise click.BadParameter(error.detail) from None
    settings = _settings()

    async def go(pool):
        await partners.require(pool, partner_id, settings)
        return await conformance_report.report(pool, partner_id, since=since_at, until=until_at)

    data = _run(go, partner_hint="PARTNER_ID")
    if output_format == "json":
        text = json.dumps(data, indent=2, ensure_ascii=False)
    elif output_format == "html":
        text = conformance_report.render_html(data)
    else:
        text = _text_report(data)
    if output:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output} ({data['summary']['exchanges']} exchanges, {data['summary']['fail']} failed)", err=True)
    else:
        click.echo(text)
    if fail_on_error and not data["summary"]["conformant"]:
        sys.exit(1)


def _text_report(data: dict[str, Any]) -> str:
    s = data["summary"]
    lines = [
        f"Conformance of {data['partner_id']} from {data['since'] or 'the beginning'} to {data['until'] or 'now'}",
        f"  {s['exchanges']} exchanges: {s['pass']} pass, {s['fail']} fail, {s['fault']} fault, {s['error']} error",
    ]
    if s["failed_rules"]:
        lines.append("Failed rules:")
        for rule in s["failed_rules"]:
            lines.append(f"  {rule['rule']:<28} {rule['count']:>5}x  {rule['description']}")
        lines.append("Failing exchanges:")
        for x in data["exchanges"]:
            if x["verdict"] == "fail":
                detail = f": {x['detail']}" if x.get("detail") else ""
                channel = "" if x.get("channel", "snap") == "snap" else f"{x['channel']} {x['path']} "
                lines.append(f"  #{x['id']} {x['at']} {channel}{x['service_name']} -> {x['response']['code']} broke {x['rule']}{detail}")
    elif s["exchanges"] == 0:
        lines.append("No exchanges in this window: nothing to judge.")
    else:
        lines.append("Every exchange followed the protocol.")
    return "\n".join(lines)


commands = [callbacks_group, deliver, faults_group, conformance]
