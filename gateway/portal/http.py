"""The employer portal: one page at /portal/ and the helpers it needs under
/portal/api/. Everything else the page does goes through the public employer
API (/api/v1) with the employer's key, exactly as a script would.

Helpers here exist only for what the API does not do: read a workbook, render
a PDF, pay through the sandbox virtual bank, summarise history and arrears.
They authenticate with the same `Authorization: Bearer <api_key>` and answer
errors as application/problem+json.
"""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from bank_adapters.snap import partners
from gateway.domain.periods import WIB, Period
from gateway.domain.regencies import regencies
from gateway.http.common import json_ok, read_body
from gateway.http.employer import authenticated_employer, parse_participants_csv
from gateway.http.keys import pool_key, settings_key
from gateway.portal import pdf, sheets, virtual_bank
from gateway.service import employers as svc
from gateway.service.errors import Conflict, Invalid, ServiceError
from gateway.service.payments import utc_now

log = structlog.get_logger("kanal.portal")

STATIC_DIR = Path(__file__).parent / "static"
MODES = ("all_or_nothing", "keep_valid")
# Uploads up to this many rows are echoed whole, so the page can show every
# row and send the fixed ones back; larger ones echo only the rows in error.
PREVIEW_ROWS_MAX = 2000
# The history view lists at most this many bills, newest first.
HISTORY_BILLS_MAX = 240
# The page's own scripts and styles only: no CDN, no inline code.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

credentials_key = web.AppKey("portal_virtual_bank", dict)


class SandboxOnly(ServiceError):
    status = 403
    title = "Sandbox only"


class BankRefused(ServiceError):
    status = 502
    title = "The bank's payment was refused"


def setup(app: web.Application) -> None:
    app[credentials_key] = {}
    app.router.add_get("/portal", redirect_to_portal)
    app.router.add_get("/portal/", index)
    app.router.add_static("/portal/static", STATIC_DIR, name="portal_static", append_version=False)
    app.router.add_get("/portal/api/config", config)
    app.router.add_get("/portal/api/me", me)
    app.router.add_post("/portal/api/participants/upload", upload_participants)
    app.router.add_get("/portal/api/bills/{payment_code}/pdf", bill_pdf)
    app.router.add_post("/portal/api/bills/{payment_code}/virtual-bank", pay_with_virtual_bank)
    app.router.add_get("/portal/api/history", history)


async def redirect_to_portal(request: web.Request) -> web.Response:
    raise web.HTTPFound("/portal/")


async def index(request: web.Request) -> web.Response:
    response = web.FileResponse(STATIC_DIR / "index.html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def config(request: web.Request) -> web.Response:
    """What the page needs before sign-in: sandbox or not, the regencies for
    registration, and the month an employer usually reports now."""
    now = utc_now()
    current = Period.from_date(now.astimezone(WIB).date())
    return json_ok(
        {
            "sandbox": request.app[settings_key].sandbox,
            "regencies": [{"code": r.kemendagri_code, "name": r.name} for r in regencies()],
            "current_period": str(current),
            "default_period": str(current - 1),
            "modes": list(MODES),
        }
    )


async def me(request: web.Request) -> web.Response:
    employer = await authenticated_employer(request)
    return json_ok({**svc.employer_view(employer), "sandbox": request.app[settings_key].sandbox})


# ------------------------------------------------------------------ upload --


async def upload_participants(request: web.Request) -> web.Response:
    """Workers from CSV or .xlsx. A workbook is turned into the CSV the
    employer API reads, then judged by the API's own parser and rules; the
    answer is the API's (saved, rejected, mode, errors) plus the rows as read,
    so the page can show each error next to its row."""
    employer = await authenticated_employer(request)
    mode = request.query.get("mode", "all_or_nothing")
    if mode not in MODES:
        raise Invalid.field("mode", f"{mode!r} is not all_or_nothing or keep_valid")
    settings = request.app[settings_key]
    limit_rows = settings.participants_per_request_max
    raw = await read_body(request, settings.csv_body_bytes_max)
    if not raw:
        raise Invalid.field("file", "the upload is empty; choose a .csv or .xlsx file")
    if request.content_type == sheets.XLSX_CONTENT_TYPE:
        csv_bytes, file_format = sheets.xlsx_to_csv(raw, limit_rows), "xlsx"
    elif request.content_type in ("text/csv", "application/vnd.ms-excel"):
        # Windows browsers label .csv files application/vnd.ms-excel.
        csv_bytes, file_format = raw, "csv"
    else:
        raise Invalid(
            f"Content-Type must be text/csv or {sheets.XLSX_CONTENT_TYPE}, got {request.content_type or 'none'}",
            [{"field": "Content-Type", "problem": "expected a .csv or .xlsx file"}],
        )
    rows, parse_errors = parse_participants_csv(csv_bytes)
    if len({r.row for r in rows} | {e["row"] for e in parse_errors}) > limit_rows:
        raise Invalid.field("file", f"more than {limit_rows} rows; at most {limit_rows} per upload")
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        # As the API does: every row is judged, also when parsing found
        # errors, so that all errors are shown at once (row, then column order).
        result = await svc.add_participants(conn, employer, rows, mode, parse_errors)
    errors = result.errors
    rejected = len({e["row"] for e in errors})
    log.info(
        "portal.upload",
        npp=employer["npp"],
        format=file_format,
        mode=mode,
        saved=result.saved,
        rejected=rejected,
    )
    preview = sheets.preview_rows(csv_bytes)
    rows_complete = len(preview) <= PREVIEW_ROWS_MAX
    if not rows_complete:
        wrong = {e["row"] for e in errors}
        preview = [r for r in preview if r["row"] in wrong][:PREVIEW_ROWS_MAX]
    body = {
        "format": file_format,
        "mode": mode,
        "saved": result.saved,
        "rejected": rejected,
        "errors": errors,
        # Sheet row = data row + 1: the header is the first row.
        "header_rows": 1,
        "rows": preview,
        # False: only rows in error are echoed (see PREVIEW_ROWS_MAX).
        "rows_complete": rows_complete,
    }
    if errors and mode != "keep_valid":
        body.update(
            type="about:blank",
            title="Invalid rows",
            status=422,
            detail=f"{rejected} invalid row(s); nothing was saved (mode all_or_nothing; use mode keep_valid to save the valid rows)",
        )
        return json_ok(body, status=422)
    return json_ok(body, status=201 if result.saved else 200)


# ------------------------------------------------------------------- bills --


async def _bill_of(request: web.Request):
    employer = await authenticated_employer(request)
    pool = request.app[pool_key]
    bill_id = await svc.require_bill_of(pool, request.match_info["payment_code"], employer["npp"])
    return employer, bill_id


async def bill_pdf(request: web.Request) -> web.Response:
    employer, bill_id = await _bill_of(request)
    view = await svc.bill_view(request.app[pool_key], bill_id, with_lines=False)
    body = pdf.bill_pdf(view, svc.employer_view(employer), generated_at=utc_now())
    filename = f"tagihan-{view['payment_code']}.pdf"
    return web.Response(
        body=body,
        content_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


def own_base_url(request: web.Request) -> str:
    """Where this very process listens: the socket the request came in on.
    Behind a proxy the Host header may name something else; the socket does not."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if sockname and isinstance(sockname, tuple):
        host, port = sockname[0], sockname[1]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        family_v6 = ":" in host
        try:
            socket.inet_pton(socket.AF_INET6 if family_v6 else socket.AF_INET, host)
        except OSError:
            return str(request.url.origin())
        return f"http://[{host}]:{port}" if family_v6 else f"http://{host}:{port}"
    return str(request.url.origin())


async def pay_with_virtual_bank(request: web.Request) -> web.Response:
    """Sandbox only: a virtual bank pays the bill over SNAP (token, inquiry,
    payment) against this gateway's own HTTP port."""
    employer, bill_id = await _bill_of(request)
    if not request.app[settings_key].sandbox:
        raise SandboxOnly(
            "the virtual bank pays only in sandbox mode (KANAL_SANDBOX=true or kanal serve --sandbox); pay at a bank",
            [{"field": "sandbox", "problem": "off"}],
        )
    pool = request.app[pool_key]
    bill = await pool.fetchrow("select payment_code, status from bills where id = $1", bill_id)
    if bill["status"] == "paid":
        raise Conflict(
            f"bill {bill['payment_code']} is already paid",
            [{"field": "payment_code", "problem": "already paid"}],
        )
    cache = request.app[credentials_key]
    if "credentials" not in cache:
        try:
            cache["credentials"] = await virtual_bank.credentials(pool)
        except partners.RegistrationError as error:
            raise Conflict(
                f"cannot register the virtual bank as SNAP partner {virtual_bank.PARTNER_ID}: {error}",
                [{"field": "partner_id", "problem": error.reason}],
            ) from None
    try:
        receipt = await virtual_bank.pay(own_base_url(request), cache["credentials"], bill["payment_code"])
    except (aiohttp.ClientError, TimeoutError) as error:
        raise BankRefused(
            f"the virtual bank could not reach the SNAP adapter: {error!r}",
            [{"field": "snap", "problem": "unreachable"}],
        ) from None
    except virtual_bank.VirtualBankError as error:
        if error.response.http_status == 401:
            # The partner's secret or key changed under us: reload them next time.
            cache.pop("credentials", None)
        answer = error.response
        reason = answer.body.get("virtualAccountData", {}).get("inquiryReason") or {}
        detail = f"SNAP {error.step} answered {answer.code} {answer.body.get('responseMessage', '')}".strip()
        raise BankRefused(
            detail,
            [
                {
                    "field": error.step,
                    "problem": reason.get("english") or str(answer.body.get("responseMessage", "")),
                }
            ],
        ) from None
    log.info(
        "portal.virtual_bank_paid",
        npp=employer["npp"],
        payment_code=receipt.payment_code,
        code=receipt.response_code,
    )
    return json_ok(
        {
            "payment_code": receipt.payment_code,
            "paid_rupiah": receipt.amount_rupiah,
            "response_code": receipt.response_code,
            "response_message": receipt.response_message,
            "payment_request_id": receipt.payment_request_id,
            "partner_id": receipt.partner_id,
            "exchanges": receipt.exchanges,
        }
    )


# ----------------------------------------------------------------- history --


async def history(request: web.Request) -> web.Response:
    """Bills newest first with their standing payment, and the arrears: open
    bills past their due date with the late fee accrued so far (2% of the
    bill's dues a month late, charged on the next wage report's bill; a bill
    paid late before that is charged what accrued until its payment), and
    the bills paid late whose fee the next report will charge (`paid_late`)."""
    employer = await authenticated_employer(request)
    npp = employer["npp"]
    now = utc_now()
    today = now.astimezone(WIB).date()
    rows = await request.app[pool_key].fetch(
        """select b.payment_code, b.kind, b.period, b.due_date, b.expires_at, b.total_rupiah, b.status,
                  pt.kpj, pay.channel, pay.posted_at, pay.amount_rupiah as paid_rupiah,
                  (select coalesce(sum(employer_rupiah + worker_rupiah), 0) from bill_lines
                    where bill_id = b.id and program <> 'DENDA')::bigint as dues_rupiah,
                  (select coalesce(sum(employer_rupiah), 0) from bill_lines
                    where late_fee_source_bill_id = b.id)::bigint as fees_charged_rupiah
             from bills b
             left join participants pt on pt.id = b.participant_id
             left join payments pay on pay.bill_id = b.id and pay.status = 'posted'
            where b.npp = $1
            order by b.period desc, b.id desc
            limit $2""",
        npp,
        HISTORY_BILLS_MAX,
    )
    bills, arrears, paid_late = [], [], []
    for r in rows:
        item = {
            "payment_code": r["payment_code"],
            "kind": r["kind"],
            "kpj": r["kpj"],
            "period": r["period"],
            "due_date": r["due_date"].isoformat(),
            "total_rupiah": r["total_rupiah"],
            "status": r["status"],
            "paid_at": r["posted_at"].isoformat() if r["posted_at"] else None,
            "paid_rupiah": r["paid_rupiah"],
            "channel": r["channel"],
        }
        bills.append(item)
        if r["status"] == "open" and r["due_date"] < today:
            months, owed = svc.late_fee_owed(r["due_date"], r["dues_rupiah"], r["fees_charged_rupiah"], None, today)
            accrued = max(0, owed) if r["kind"] == "PU" else 0
            arrears.append(
                {
                    **item,
                    "months_late": months,
                    "late_fee_accrued_rupiah": accrued,
                    "late_fee_charged_rupiah": r["fees_charged_rupiah"],
                    "expired": r["expires_at"] <= now,
                }
            )
        elif (r["status"] == "paid" and r["kind"] == "PU" and r["posted_at"] is not None
              and r["posted_at"].astimezone(WIB).date() > r["due_date"]):
            # Paid after its due date: the next wage report's bill charges the
            # fee for the months late until the payment's day (WIB), less what
            # a bill issued meanwhile already charged (employers._late_fee_lines).
            months, owed = svc.late_fee_owed(r["due_date"], r["dues_rupiah"], r["fees_charged_rupiah"], r["posted_at"], today)
            if owed > 0:
                paid_late.append({**item, "months_late": months, "late_fee_owed_rupiah": owed})
    return json_ok(
        {
            "as_of": today.isoformat(),
            "bills": bills,
            "arrears": arrears,
            "arrears_total_rupiah": sum(a["total_rupiah"] + a["late_fee_accrued_rupiah"] for a in arrears),
            # Bills paid late whose fee the next wage report's bill will charge.
            "paid_late": paid_late,
            "paid_late_fees_rupiah": sum(p["late_fee_owed_rupiah"] for p in paid_late),
        }
    )
