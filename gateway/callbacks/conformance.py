"""The conformance report: every exchange a partner had with Kanal, on any
channel (SNAP over HTTP, ISO 8583 over TCP), with a verdict and the rule it
broke.

Verdicts:
    pass   the request followed the protocol (accepted, or declined for a
           business reason such as an unknown or already paid bill)
    fail   the request broke a protocol rule (the rule is named)
    fault  the exchange was shaped by a fault the integrator ordered
    error  Kanal's own failure (internal error, slow ledger): not the partner's
"""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import Any

import asyncpg

# Declines that are correct answers to a well-formed request.
BUSINESS_RULES = {
    "bill-unknown": "The payment code matches no bill (a correct decline).",
    "bill-paid": "The bill is already paid (a correct decline).",
    "bill-expired": "The bill's payment code has expired (a correct decline).",
    "payment-reversed": "The payment was reversed (a correct decline).",
    "transaction-not-found": "No payment with this paymentRequestId: nothing was posted (a correct answer to service 26).",
    "cutoff": "Payments are refused during the link's cut-off window (a correct decline; send after it).",
}
GATEWAY_RULES = {
    "internal": "Kanal failed internally; not the partner's fault.",
    "ledger-timeout": "The ledger did not answer in time; ask service 26.",
}
PROTOCOL_RULES = {
    "header-mandatory": "A mandatory header (X-TIMESTAMP, X-SIGNATURE, X-PARTNER-ID, X-EXTERNAL-ID, CHANNEL-ID, Authorization) is missing or empty.",
    "header-format": "A header has the wrong format (X-TIMESTAMP ISO 8601 with offset, X-EXTERNAL-ID 1-36 digits, CHANNEL-ID 1-5 alphanumerics).",
    "token-format": "Authorization must be 'Bearer <accessToken>'.",
    "client-key": "X-CLIENT-KEY is not registered.",
    "partner-id": "X-PARTNER-ID is not registered.",
    "channel-id": "CHANNEL-ID is not the partner's registered channel.",
    "token-unknown": "The access token was never issued (get one from service 73).",
    "token-expired": "The access token expired; request a new one before it does.",
    "token-partner": "The access token belongs to another partner.",
    "rate-limit": "More requests per second than the partner's limit.",
    "timestamp-window": "X-TIMESTAMP is too far from Kanal's clock.",
    "signature": "X-SIGNATURE does not verify (HMAC-SHA512 of METHOD:path:token:sha256(minified body):timestamp, or SHA256withRSA for service 73).",
    "external-id": "X-EXTERNAL-ID was reused the same day for a different request.",
    "body-size": "The body is larger than the limit.",
    "body-encoding": "The body is not UTF-8.",
    "body-mandatory": "A mandatory body field is missing.",
    "body-format": "A body field has the wrong format.",
    "partner-service-id-padding": "partnerServiceId is padded the wrong way (spaces versus zeros).",
    "partner-service-id": "partnerServiceId is not registered for this partner.",
    "virtual-account-no": "virtualAccountNo must be partnerServiceId + customerNo.",
    "total-amount": "totalAmount differs from paidAmount (bills are paid in full).",
    "amount": "The amount paid differs from the bill's amount given by the inquiry (SNAP paidAmount, ISO 8583 DE4).",
    "payment-request-id": "paymentRequestId must equal the inquiryRequestId of the last inquiry on this virtual account.",
    "payment-request-id-reused": "paymentRequestId was already used for another amount or bill.",
    "customer-no": "The status request's customerNo is not the one this paymentRequestId paid (SNAP service 26).",
    # ISO 8583 links
    "frame-size": "The frame is longer than the link's frame_bytes_max.",
    "message-format": "The message does not decode with the link profile's field definitions (the detail names the field).",
    "mti": "The MTI is not one the link accepts (0200, 0220/0221, 0400/0401, 0420/0421, 0800).",
    "field-mandatory": "A data element the profile requires for this MTI is missing or empty.",
    "network-code": "DE70 is not 001 logon, 002 logoff, 201 cutover or 301 echo test.",
    "acquirer": "DE32 is not an acquirer registered in the link's profile.",
    "logon": "A financial message came before a successful 0800 logon (DE70 001) on this link.",
    "processing-code": "DE3 is not an inquiry, payment or status code of the profile, or does not fit the MTI.",
    "currency": "DE49 is not the profile's currency.",
    "amount-format": "DE4 is zero, or has minor units the profile does not allow.",
    "original-data": "DE90 is not 42 digits (original MTI 4, STAN 6, DE7 10, acquirer 11, forwarder 11).",
    "idempotency-key-reused": "Acquirer, STAN, RRN and transmission time were already used for another amount or bill.",
}
SERVICES = {"73": "access token", "24": "inquiry", "25": "payment", "26": "status"}
CHANNELS = ("snap", "iso8583")
EXPORT_EXCHANGES_MAX = 100_000
# A report asked for without `since` covers this many hours up to `until`
# (or now). Without a default the summary read every exchange the partner
# ever had, on each page of the browsable report; a longer history is asked
# for with an earlier `since`.
WINDOW_HOURS_DEFAULT = 24


def default_since(until: dt.datetime | None, now: dt.datetime) -> dt.datetime:
    """The start of the default window: WINDOW_HOURS_DEFAULT before `until` or now."""
    return (until or now) - dt.timedelta(hours=WINDOW_HOURS_DEFAULT)


def verdict(rule: str | None, fault: str | None) -> str:
    if fault:
        return "fault"
    if rule is None or rule in BUSINESS_RULES:
        return "pass"
    if rule in GATEWAY_RULES:
        return "error"
    return "fail"


def describe(rule: str | None) -> str | None:
    if rule is None:
        return None
    return PROTOCOL_RULES.get(rule) or BUSINESS_RULES.get(rule) or GATEWAY_RULES.get(rule) or rule


def _quoted(rules) -> str:
    return ", ".join(f"'{r}'" for r in rules)


def _failed_clause() -> str:
    return f"fault is null and rule is not null and rule not in ({_quoted((*BUSINESS_RULES, *GATEWAY_RULES))})"


# Each verdict as SQL, so that a page of one verdict is filtered before the limit.
VERDICT_CLAUSES = {
    "fail": _failed_clause(),
    "fault": "fault is not null",
    "pass": f"fault is null and (rule is null or rule in ({_quoted(BUSINESS_RULES)}))",
    "error": f"fault is null and rule in ({_quoted(GATEWAY_RULES)})",
}


def exchange_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "at": row["at"].isoformat(),
        "channel": row["channel"],
        "service": row["service_code"],
        "service_name": SERVICES.get(row["service_code"], row["service_code"]) if row["channel"] == "snap" else row["service_code"],
        "path": row["path"],
        "external_id": row["external_id"],
        "request": {"headers": json.loads(row["request_headers"]), "body": row["request_body"]},
        "response": {
            "http_status": row["http_status"],
            "code": row["response_code"] or None,
            "body": json.loads(row["response_body"]),
            "answered": row["answered"],
        },
        "verdict": verdict(row["rule"], row["fault"]),
        "rule": row["rule"],
        "rule_description": describe(row["rule"]),
        "detail": row["detail"],
        "fault": row["fault"],
        "duration_ms": round(row["duration_ms"], 2),
    }


# The window as a range on partner_exchanges_partner_at (partner_id, at),
# also in a generic plan: `$2 is null or at >= $2` cannot be an index bound,
# and a cached generic plan then read the partner's whole history.
_SINCE = "coalesce($2::timestamptz, '-infinity')"
_UNTIL = "coalesce($3::timestamptz, 'infinity')"

_COLUMNS = """id, at, channel, service_code, path, external_id, request_headers::text as request_headers, request_body,
    answered, http_status, response_code, response_body::text as response_body, rule, detail, fault, duration_ms"""


async def exchanges(
    pool: asyncpg.Pool,
    partner_id: str,
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    verdict_filter: str | None = None,
    limit: int,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    clause = f"and {VERDICT_CLAUSES[verdict_filter]}" if verdict_filter else ""
    rows = await pool.fetch(
        f"""select {_COLUMNS} from partner_exchanges
             where partner_id = $1 and at >= {_SINCE} and at < {_UNTIL}
               and ($5::bigint is null or id < $5) {clause}
             order by id desc limit $4""",
        partner_id, since, until, limit, before_id,
    )
    return [exchange_view(r) for r in rows]


async def summary(pool: asyncpg.Pool, partner_id: str, *, since: dt.datetime | None, until: dt.datetime | None) -> dict[str, Any]:
    rows = await pool.fetch(
        f"""select channel, service_code, rule, fault is not null as faulted, count(*) as n, min(id) as first_id, max(at) as last_at
             from partner_exchanges
            where partner_id = $1 and at >= {_SINCE} and at < {_UNTIL}
            group by 1, 2, 3, 4""",
        partner_id, since, until,
    )
    counts = {"pass": 0, "fail": 0, "fault": 0, "error": 0}
    by_service: dict[str, dict[str, int]] = {}
    rules: dict[str, dict[str, Any]] = {}
    for row in rows:
        v = verdict(row["rule"], "x" if row["faulted"] else None)
        counts[v] += row["n"]
        name = SERVICES.get(row["service_code"], row["service_code"]) if row["channel"] == "snap" else f"{row['channel']} {row['service_code']}"
        service = by_service.setdefault(name, {k: 0 for k in counts})
        service[v] += row["n"]
        if v == "fail":
            entry = rules.setdefault(
                row["rule"], {"rule": row["rule"], "description": describe(row["rule"]), "count": 0, "first_exchange_id": row["first_id"]}
            )
            entry["count"] += row["n"]
            entry["first_exchange_id"] = min(entry["first_exchange_id"], row["first_id"])
    return {
        "exchanges": sum(counts.values()),
        **counts,
        "conformant": counts["fail"] == 0,
        "failed_rules": sorted(rules.values(), key=lambda r: (-r["count"], r["rule"])),
        "by_service": by_service,
    }


async def report(
    pool: asyncpg.Pool, partner_id: str, *, since: dt.datetime | None, until: dt.datetime | None, limit: int = EXPORT_EXCHANGES_MAX
) -> dict[str, Any]:
    """The whole report, for JSON export, the HTML page and the CLI."""
    overview = await summary(pool, partner_id, since=since, until=until)
    items = await exchanges(pool, partner_id, since=since, until=until, limit=limit)
    items.reverse()  # oldest first reads like a session
    return {
        "partner_id": partner_id,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "summary": overview,
        "exchanges": items,
        "truncated": overview["exchanges"] > len(items),
    }


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1b1f24;background:#fafbfc}
h1{font-size:1.4rem;margin:0 0 .3rem} h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
.meta{color:#57606a} .badge{display:inline-block;padding:.1rem .5rem;border-radius:1rem;font-weight:600;font-size:.8rem}
.pass{background:#dafbe1;color:#116329} .fail{background:#ffebe9;color:#a40e26} .fault{background:#fff8c5;color:#7d4e00}
.error{background:#eaeef2;color:#424a53}
table{border-collapse:collapse;width:100%;background:#fff} th,td{border:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa} code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
pre{white-space:pre-wrap;word-break:break-all;margin:.3rem 0;max-height:18rem;overflow:auto;background:#f6f8fa;padding:.4rem}
details summary{cursor:pointer} .cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.6rem 1rem;min-width:7rem}
.card b{display:block;font-size:1.5rem}
"""


def render_html(data: dict[str, Any]) -> str:
    """A self-contained page: inline CSS, no scripts, no external requests."""
    e = html.escape
    s = data["summary"]
    status = "no exchanges" if s["exchanges"] == 0 else "conformant" if s["conformant"] else f"{s['fail']} exchange(s) broke a rule"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Kanal conformance: {e(data['partner_id'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Conformance report: {e(data['partner_id'])}</h1>",
        (
            f"<p class='meta'>Exchanges from {e(data['since'] or 'the beginning')} to {e(data['until'] or 'now')}; "
            f"generated {e(data['generated_at'])}. "
            f"<span class='badge {'pass' if s['conformant'] else 'fail'}' id='status'>{e(status)}</span></p>"
        ),
        "<div class='cards'>",
    ]
    for key in ("exchanges", "pass", "fail", "fault", "error"):
        parts.append(f"<div class='card'><span>{key}</span><b id='count-{key}'>{s[key]}</b></div>")
    parts.append("</div><h2>Failed rules</h2>")
    if s["failed_rules"]:
        parts.append("<table id='failed-rules'><tr><th>rule</th><th>exchanges</th><th>what it means</th><th>first</th></tr>")
        for rule in s["failed_rules"]:
            parts.append(
                f"<tr class='failed-rule'><td><code>{e(rule['rule'])}</code></td><td>{rule['count']}</td>"
                f"<td>{e(rule['description'] or '')}</td><td><a href='#x{rule['first_exchange_id']}'>#{rule['first_exchange_id']}</a></td></tr>"
            )
        parts.append("</table>")
    elif s["exchanges"] == 0:
        parts.append("<p id='failed-rules'>None: there were no exchanges in this window.</p>")
    else:
        parts.append("<p id='failed-rules'>None: every exchange followed the protocol.</p>")
    parts.append("<h2>Exchanges</h2>")
    if data.get("truncated"):
        parts.append(f"<p class='meta'>Only the latest {len(data['exchanges'])} exchanges are listed.</p>")
    parts.append("<table id='exchanges'><tr><th>#</th><th>time</th><th>service</th><th>answer</th><th>verdict</th><th>rule / fault</th><th>request and response</th></tr>")
    for x in data["exchanges"]:
        answered = x["response"]["answered"]
        answer = " ".join(str(v) for v in (x["response"]["http_status"], x["response"]["code"]) if v) if answered else "no answer"
        note = x["rule"] or x["fault"] or ""
        if x["detail"]:
            note = f"{note}: {x['detail']}"
        detail = (
            "<details><summary>show</summary>"
            f"<pre>{e(x['path'])}\n{e(json.dumps(x['request']['headers'], indent=1))}\n\n{e(x['request']['body'])}</pre>"
            f"<pre>{e(json.dumps(x['response']['body'], indent=1, ensure_ascii=False))}</pre></details>"
        )
        title = e(x["rule_description"] or "")
        parts.append(
            f"<tr id='x{x['id']}' class='exchange {x['verdict']}'><td>{x['id']}</td><td>{e(x['at'])}</td>"
            f"<td>{e(x['service_name'])} ({e(x['service'] if x['channel'] == 'snap' else x['channel'] + ' ' + x['path'])})</td><td>{e(answer)}</td>"
            f"<td><span class='badge {x['verdict']}'>{x['verdict']}</span></td>"
            f"<td title='{title}'><code>{e(note)}</code></td><td>{detail}</td></tr>"
        )
    parts.append(
        "</table><h2>Verdicts</h2><p class='meta'>pass: the request followed the protocol (accepted, or a correct "
        "business decline). fail: it broke the named rule. fault: shaped by a fault you ordered. error: Kanal's own "
        "failure.</p></body></html>"
    )
    return "".join(parts)
