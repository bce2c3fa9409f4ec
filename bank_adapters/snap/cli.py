"""`kanal partner ...` and `kanal snap sign`: the SNAP adapter's CLI commands.

They receive `click.get_current_context().obj` implementing
`bank_adapters.base.CliServices` and run against the configured database
through `run_with_pool`, with or without a gateway serving.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from bank_adapters.snap import client, partners, protocol, store


def _services() -> Any:
    services = click.get_current_context().obj
    if services is None or not hasattr(services, "run_with_pool"):
        raise click.UsageError("this command needs the kanal CLI's database services (run it as `kanal ...`)")
    return services


@click.group("partner")
def partner_group() -> None:
    """Banks allowed to call the SNAP endpoints."""


@partner_group.command("add")
@click.option("--partner-id", required=True, help="X-PARTNER-ID the bank sends (max 36).")
@click.option("--client-key", required=True, help="X-CLIENT-KEY of the token request.")
@click.option("--public-key", "public_key_file", required=True, type=click.File("r"), help="The bank's RSA public key (PEM file, '-' for stdin).")
@click.option("--channel-id", default=None, help="CHANNEL-ID (max 5); default from the profile (95221).")
@click.option("--service-id", default=None, help="partnerServiceId digits, padded to 8; default from the profile (12345).")
@click.option("--padding", type=click.Choice(protocol.PADDINGS), default=None, help="How partnerServiceId is left-padded.")
@click.option("--encoding", type=click.Choice(protocol.ENCODINGS), default=None, help="X-SIGNATURE encoding of the HMAC.")
@click.option("--timestamp-tolerance-s", type=click.IntRange(1, partners.TIMESTAMP_TOLERANCE_S_MAX), default=None,
              help="How far X-TIMESTAMP may be from Kanal's clock, in seconds; default from the profile.")
@click.option("--requests-per-second-max", type=click.IntRange(1), default=None, help="Rate limit per gateway process.")
@click.option("--sandbox/--no-sandbox", default=None, help="Explain refused signatures; default: follow the gateway.")
@click.option("--profile", default=None, help="Built-in profile (bank_kalbar, generic); default: by partner id.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (includes client_secret).")
def partner_add(public_key_file: Any, as_json: bool, **options: Any) -> None:
    """Register a bank; its client secret is printed once."""
    request = partners.PartnerRequest(public_key_pem=public_key_file.read(), **options)

    async def register(pool: Any) -> store.Partner:
        return await partners.register(pool, request)

    try:
        partner = _services().run_with_pool(register)
    except partners.RegistrationError as error:
        if as_json:
            click.echo(json.dumps({"error": str(error), "field": error.field}))
            sys.exit(1)
        raise click.ClickException(str(error)) from None
    created = partners.created_view(partner)
    if as_json:
        click.echo(json.dumps(created))
        return
    for key, value in created.items():
        click.echo(f"{key}: {value if key != 'public_key_pem' else '(PEM, ' + str(len(value)) + ' characters)'}")
    click.echo("Keep client_secret now: it is not shown again.")


@partner_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def partner_list(as_json: bool) -> None:
    """The registered banks (never their secrets)."""

    async def fetch(pool: Any) -> list[store.Partner]:
        return await store.list_partners(pool)

    found = _services().run_with_pool(fetch)
    views = [p.public_view() for p in found]
    if as_json:
        click.echo(json.dumps(views))
        return
    for view in views:
        click.echo(
            f"{view['partner_id']:<16} key={view['client_key']} channel={view['channel_id']} "
            f"service_id={view['partner_service_id']!r} ({view['padding']}) encoding={view['encoding']} profile={view['profile']}"
        )
    if not views:
        click.echo("no partners registered; add one with `kanal partner add`")


@click.group("snap")
def snap_group() -> None:
    """SNAP BI tools for integrators."""


@snap_group.command("sign")
@click.option("--body", "body_file", type=click.File("r"), default=None, help="JSON body file ('-' for stdin); the token body when omitted with --private-key.")
@click.option("--client-secret", default=None, help="HMAC key: sign a transaction request.")
@click.option("--token", "access_token", default="", help="The access token (Bearer) the request will carry.")
@click.option("--path", "endpoint_url", default="/snap" + client.PAYMENT_PATH, show_default=True, help="Path and query as sent.")
@click.option("--method", default="POST", show_default=True, help="HTTP method of the request.")
@click.option("--timestamp", default=None, help="X-TIMESTAMP; default now in WIB.")
@click.option("--encoding", type=click.Choice(protocol.ENCODINGS), default="base64", show_default=True, help="X-SIGNATURE encoding of the HMAC.")
@click.option("--partner-id", default="PARTNER", show_default=True, help="X-PARTNER-ID to send.")
@click.option("--channel-id", default="95221", show_default=True, help="CHANNEL-ID to send.")
@click.option("--external-id", default=None, help="X-EXTERNAL-ID to send; default: a new random one.")
@click.option("--client-key", default=None, help="With --private-key: sign a token request (service 73).")
@click.option("--private-key", "private_key_file", type=click.File("r"), default=None, help="RSA private key PEM for the token request.")
@click.option("--json", "as_json", is_flag=True, help="Print the headers and what was signed as one JSON object.")
def snap_sign(
    body_file: Any,
    client_secret: str | None,
    access_token: str,
    endpoint_url: str,
    method: str,
    timestamp: str | None,
    encoding: str,
    partner_id: str,
    channel_id: str,
    external_id: str | None,
    client_key: str | None,
    private_key_file: Any,
    as_json: bool,
) -> None:
    """Print the headers a bank would send for BODY, and what was signed.

    \b
    A transaction request (HMAC-SHA512 with the client secret):
      kanal snap sign --client-secret S --token T --path /snap/v1.0/transfer-va/payment --body body.json
    A token request, service 73 (SHA256withRSA with the bank's private key):
      kanal snap sign --client-key K --private-key bank.pem
    """
    timestamp = timestamp or protocol.format_timestamp()
    if private_key_file is not None:
        if not client_key:
            raise click.UsageError("--private-key signs a token request and needs --client-key")
        headers = client.token_headers(client_key, private_key_file.read(), timestamp)
        body_text = body_file.read() if body_file else client.TOKEN_BODY
        shown: dict[str, Any] = {"headers": headers, "body": body_text, "stringToSign": protocol.token_string_to_sign(client_key, timestamp)}
    else:
        if client_secret is None:
            raise click.UsageError("give --client-secret (transaction) or --client-key with --private-key (token)")
        if body_file is None:
            raise click.UsageError("--body FILE is required to sign a transaction")
        body_text = body_file.read()
        credentials = client.Credentials(
            partner_id=partner_id, client_key="", client_secret=client_secret, private_key_pem="", channel_id=channel_id, encoding=encoding
        )
        headers = client.transaction_headers(
            credentials,
            method=method,
            endpoint_url=endpoint_url,
            access_token=access_token,
            body_text=body_text,
            timestamp=timestamp,
            external_id=external_id,
        )
        shown = {
            "headers": headers,
            "minifiedBody": protocol.minify(body_text),
            "bodySha256": protocol.body_sha256_hex(body_text),
            "stringToSign": protocol.transaction_string_to_sign(method, endpoint_url, access_token, body_text, timestamp),
        }
    if as_json:
        click.echo(json.dumps(shown))
        return
    # The headers alone on stdout, one per line, so that curl reads them with
    # -H @file; what was signed on stderr, for the reader.
    for name, value in shown["headers"].items():
        click.echo(f"{name}: {value}")
    for key in ("stringToSign", "bodySha256", "minifiedBody"):
        if key in shown:
            click.echo(f"# {key}: {shown[key]}", err=True)
