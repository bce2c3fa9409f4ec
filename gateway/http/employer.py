"""Employer API under /api/v1. An employer's key sees and changes only that
employer's data: another employer's NPP answers 403, another employer's bill
or participant answers 404 (its existence is not revealed)."""

from __future__ import annotations

import csv
import io

from aiohttp import web

from gateway.http.common import (
    Refused,
    in_order,
    json_ok,
    model_or_errors,
    problem_json,
    read_body,
    read_json,
    require_content_type,
    value_given,
)
from gateway.http.keys import pool_key, settings_key
from gateway.service import employers as svc
from gateway.service.errors import Forbidden, Invalid, NotFound, ServiceError
from gateway.service.payments import utc_now
from schemas.employer import (
    WAGE_RUPIAH_MAX,
    BillList,
    BillOut,
    EmployerRegistered,
    EmployerRegistration,
    ParticipantIn,
    ParticipantOut,
    ParticipantsBatch,
    ParticipantsResult,
    WageReport,
    WageReportResult,
)

routes = web.RouteTableDef()

CSV_HEADER = ("kpj", "nik", "name", "wage", "segment")


class Unauthorized(ServiceError):
    status = 401
    title = "Unauthorized"


async def authenticated_employer(request: web.Request):
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme != "Bearer" or not token.strip():
        raise Unauthorized(
            "send the employer's API key as 'Authorization: Bearer <api_key>'",
            [{"field": "Authorization", "problem": "missing or not a Bearer token"}],
        )
    employer = await svc.employer_for_key(request.app[pool_key], token.strip())
    if employer is None:
        raise Unauthorized("the API key is not valid", [{"field": "Authorization", "problem": "unknown API key"}])
    return employer


async def employer_of_path(request: web.Request):
    employer = await authenticated_employer(request)
    if request.match_info["npp"] != employer["npp"]:
        raise Forbidden(
            f"this API key belongs to employer {employer['npp']}, not {request.match_info['npp']}",
            [{"field": "npp", "problem": "not the key's employer"}],
        )
    return employer


def _limit(request: web.Request) -> int:
    return request.app[settings_key].request_body_bytes_max


@routes.post("/api/v1/employers")
async def register_employer(request: web.Request) -> web.Response:
    raw = await read_json(request, _limit(request))
    body, refused = model_or_errors(EmployerRegistration, raw)
    if body is None:
        # Also the domain's problems with the values the model accepted
        # (NPP form or taken, regency): every problem at once, in field order.
        fields = list(EmployerRegistration.model_fields)

        def rank(field: str) -> int:
            top = field.split(".")[0]
            return fields.index(top) if top in fields else len(fields) if field != "body" else -1

        problems = [item for _, item in refused]
        problems += await svc.registration_problems(
            request.app[pool_key], value_given(raw, ("npp",), refused), value_given(raw, ("regency_code",), refused)
        )
        raise Invalid.many(in_order([((rank(e["field"]),), e) for e in problems]))
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        registered = await svc.register_employer(
            conn, body.npp, body.name, body.regency_code, body.size_class, body.jkk_risk_class
        )
    out = EmployerRegistered(**registered.employer, api_key=registered.api_key)
    return json_ok(out.model_dump(), status=201)


@routes.post("/api/v1/employers/{npp}/participants")
async def add_participants(request: web.Request) -> web.Response:
    employer = await employer_of_path(request)
    raw = await read_json(request, _limit(request))
    batched = isinstance(raw, dict) and "participants" in raw
    if batched:
        batch, refused = model_or_errors(ParticipantsBatch, raw)
    else:
        one, refused = model_or_errors(ParticipantIn, raw)
        batch = ParticipantsBatch(participants=[one]) if one is not None else None
    limit = request.app[settings_key].participants_per_request_max
    count = (len(raw["participants"]) if isinstance(raw["participants"], list) else 0) if batched else 1
    if count > limit:
        # Too many rows to judge: refused whole, with the model's own errors.
        too_many = {"field": "participants", "problem": f"{count} rows; at most {limit} per request"}
        raise Invalid.many([too_many, *(item for _, item in refused)])
    if batch is None:
        raise Invalid.many(await _refused_participants(request, employer, raw, batched, refused))
    rows = [svc.ParticipantRow(i, p.kpj, p.nik, p.name, p.wage, p.segment) for i, p in enumerate(batch.participants, 1)]
    return await _save_rows(request, employer, rows, batch.mode)


async def _refused_participants(request, employer, raw, batched: bool, refused: Refused) -> list[dict]:
    """The model's errors and, for the values it did not refuse, the rows'
    own (format, duplicates, already registered): every problem at once, in
    the model's field names (`participants.0.kpj`, or `kpj` for one worker),
    by row and then field. Nothing is saved, whatever the mode."""
    entries = raw["participants"] if batched and isinstance(raw["participants"], list) else [raw] if not batched else []
    prefix = ("participants",) if batched else ()

    def key(loc: tuple) -> tuple:
        if batched:
            if loc[:1] != prefix:  # mode, unknown members: after the rows
                return (len(entries) + 1, 0)
            if len(loc) == 1:  # the list itself
                return (0, 0)
            return (loc[1] + 1, svc.field_rank(loc[2]) if len(loc) > 2 else -2)
        return (1, svc.field_rank(loc[0])) if loc else (0, 0)

    keyed = [(key(loc), item) for loc, item in refused]
    rows = []
    for n, entry in enumerate(entries, start=1):
        at = (*prefix, n - 1) if batched else ()
        if not isinstance(entry, dict) or at in refused.at:
            continue  # not an object: nothing in it to check
        values = {name: value_given(raw, (*at, name), refused) for name in svc.PARTICIPANT_FIELDS}
        if "segment" not in entry:
            values["segment"] = "PU"  # the model's default
        rows.append(svc.ParticipantRow(n, **values))
    async with request.app[pool_key].acquire() as conn:
        _, problems = await svc.judge_rows(conn, employer, rows)
    for e in problems:
        field = ".".join(str(part) for part in (*prefix, e["row"] - 1, e["field"])) if batched else e["field"]
        keyed.append(((e["row"], svc.field_rank(e["field"])), {"field": field, "problem": e["problem"]}))
    return in_order(keyed)


@routes.post("/api/v1/employers/{npp}/participants.csv")
async def add_participants_csv(request: web.Request) -> web.Response:
    employer = await employer_of_path(request)
    mode = request.query.get("mode", "all_or_nothing")
    if mode not in ("all_or_nothing", "keep_valid"):
        raise Invalid.field("mode", f"{mode!r} is not all_or_nothing or keep_valid")
    require_content_type(request, "text/csv")
    raw = await read_body(request, request.app[settings_key].csv_body_bytes_max)
    rows, errors = parse_participants_csv(raw)
    limit = request.app[settings_key].participants_per_request_max
    if len({r.row for r in rows} | {e["row"] for e in errors}) > limit:
        raise Invalid.field("body", f"more than {limit} rows; at most {limit} per request")
    return await _save_rows(request, employer, rows, mode, errors)


def parse_participants_csv(raw: bytes) -> tuple[list[svc.ParticipantRow], list[dict]]:
    """The rows, and errors (row, field, problem) found while parsing: a row
    with the wrong number of columns is only an error; a row whose wage is
    wrong is both (its wage None), so its other cells are judged too.
    Row numbers count data rows: the first row after the header is row 1."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise Invalid.field("body", f"the CSV is not UTF-8 text (byte {error.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise Invalid.field("body", "the CSV is empty; expected the header kpj,nik,name,wage,segment")
        header = [h.strip().lower() for h in header]
        if tuple(header) != CSV_HEADER:
            raise Invalid.field("header", f"expected exactly kpj,nik,name,wage,segment, got {','.join(header)}")
        rows: list[svc.ParticipantRow] = []
        errors: list[dict] = []
        for number, record in enumerate(reader, start=1):
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(CSV_HEADER):
                errors.append({"row": number, "field": "row", "problem": f"{len(record)} columns; expected 5"})
                continue
            kpj, nik, name, wage_text, segment = (cell.strip() for cell in record)
            # A wage that is wrong is reported here; the row's other cells are
            # still judged (employers.judge_rows), so one answer names them all.
            wage, wage_problem = parse_csv_wage(wage_text)
            if wage_problem:
                errors.append({"row": number, "field": "wage", "problem": wage_problem})
            rows.append(svc.ParticipantRow(number, kpj, nik, name, wage, segment.upper() or "PU"))
    except csv.Error as error:
        raise Invalid.field("body", f"malformed CSV at line {reader.line_num}: {error}") from None
    return rows, errors


def parse_csv_wage(text: str) -> tuple[int | None, str | None]:
    """A CSV wage cell as whole rupiah, or None and the problem."""
    text = text.replace("_", "x")  # int() would accept 12_000
    if not text.isascii() or not text.isdigit():
        problem_text = "must be a positive whole number of rupiah, digits only"
        if text.startswith("-"):
            problem_text = "must be positive"
        elif "." in text or "," in text:
            problem_text = "must be a whole number of rupiah (no decimals or separators)"
        return None, f"{text!r} {problem_text}"
    digits = text.lstrip("0") or "0"  # int() refuses more than 4,300 digits, leading zeros included
    if len(digits) > len(str(WAGE_RUPIAH_MAX)):
        return None, f"must be at most {WAGE_RUPIAH_MAX:,} rupiah"
    wage = int(digits)
    if wage <= 0:
        return None, "must be greater than 0"
    if wage > WAGE_RUPIAH_MAX:
        return None, f"must be at most {WAGE_RUPIAH_MAX:,} rupiah"
    return wage, None


async def _save_rows(request, employer, rows, mode, parse_errors=None) -> web.Response:
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        # Every row is judged, also when parsing found errors, so every
        # problem is reported at once; all_or_nothing then saves nothing.
        result = await svc.add_participants(conn, employer, rows, mode, parse_errors or [])
    out = ParticipantsResult(
        saved=result.saved, rejected=len({e["row"] for e in result.errors}), mode=mode, errors=result.errors
    )
    if result.errors and mode != "keep_valid":
        # A problem document (RFC 9457) extended with the rows report.
        return problem_json(
            {
                "type": "about:blank",
                "title": "Invalid rows",
                "status": 422,
                "detail": f"{out.rejected} invalid row(s); nothing was saved (mode all_or_nothing; use mode keep_valid to save the valid rows)",
                **out.model_dump(),
            },
            status=422,
        )
    return json_ok(out.model_dump(), status=201 if result.saved else 200)


@routes.get("/api/v1/employers/{npp}/participants")
async def list_participants(request: web.Request) -> web.Response:
    employer = await employer_of_path(request)
    rows = await request.app[pool_key].fetch(
        "select kpj, nik, name, wage_rupiah as wage, segment from participants where npp = $1 order by id",
        employer["npp"],
    )
    return json_ok({"participants": [dict(r) for r in rows]})


@routes.post("/api/v1/employers/{npp}/wage-reports")
async def submit_wage_report(request: web.Request) -> web.Response:
    employer = await employer_of_path(request)
    raw = await read_json(request, _limit(request))
    body, refused = model_or_errors(WageReport, raw)
    if body is not None:
        period_text, kpjs = body.period, [(n, line.kpj) for n, line in enumerate(body.wages)]
    else:
        period_text = value_given(raw, ("period",), refused)
        lines = raw.get("wages") if isinstance(raw, dict) else None
        kpjs = [
            (n, kpj)
            for n in range(len(lines) if isinstance(lines, list) else 0)
            if isinstance(kpj := value_given(raw, ("wages", n, "kpj"), refused), str)
        ]
    # Every problem at once, in field order: period, then each wage line.
    keyed = [(_wage_report_key(loc), item) for loc, item in refused]
    firsts: dict[str, int] = {}
    for n, kpj in kpjs:
        if kpj in firsts:
            keyed.append(((2, n, 0), {"field": f"wages.{n}.kpj", "problem": f"{kpj} appears twice"}))
        else:
            firsts[kpj] = n
    settings = request.app[settings_key]
    if keyed:
        # Refused whatever else: the domain's problems (each KPJ checked at
        # its first line) join the model's and the duplicates.
        # By key, as the report itself: the statements' cached plans are shared.
        async with request.app[pool_key].acquire() as conn, conn.transaction():
            check = await svc.check_wage_report_by_key(
                conn, employer, period_text, [(n, kpj) for kpj, n in firsts.items()], utc_now()
            )
        raise Invalid.many(in_order(keyed + check.all_problems()))
    overrides = {line.kpj: line.wage for line in body.wages}
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        pu_id, bpu_ids = await svc.submit_wage_report(
            conn, employer, body.period, overrides, utc_now(), settings.bill_expiry_days_after_due
        )
        bpu = [BillOut(**await svc.bill_view(conn, b, with_lines=True)) for b in bpu_ids]
        if pu_id is None:
            first, bpu = bpu[0], bpu[1:]
            view = first.model_dump()
        else:
            view = await svc.bill_view(conn, pu_id, with_lines=True)
    out = WageReportResult(**view, bpu_bills=bpu)
    return json_ok(out.model_dump(mode="json"), status=201)


def _wage_report_key(loc: tuple) -> tuple:
    """Where a model error of a wage report goes among the others:
    check_wage_report's keys (period (0,), participants (1,), line n (2, n, 0))."""
    if not loc:
        return (-1,)
    if loc[0] == "period":
        return (0,)
    if loc[0] == "wages":
        if len(loc) == 1:
            return (2, -1)
        inner = {"kpj": 0, "wage": 1}.get(loc[2], 2) if len(loc) > 2 else -1
        return (2, loc[1], inner)
    return (3,)  # unknown members


@routes.get("/api/v1/employers/{npp}/bills")
async def list_bills(request: web.Request) -> web.Response:
    employer = await employer_of_path(request)
    pool = request.app[pool_key]
    ids = await pool.fetch("select id from bills where npp = $1 order by period desc, id desc", employer["npp"])
    bills = [BillOut(**await svc.bill_view(pool, r["id"], with_lines=False)) for r in ids]
    return json_ok(BillList(bills=bills).model_dump(mode="json"))


@routes.get("/api/v1/bills/{payment_code}")
async def get_bill(request: web.Request) -> web.Response:
    employer = await authenticated_employer(request)
    pool = request.app[pool_key]
    bill_id = await svc.require_bill_of(pool, request.match_info["payment_code"], employer["npp"])
    return json_ok(BillOut(**await svc.bill_view(pool, bill_id, with_lines=True)).model_dump(mode="json"))


@routes.get("/api/v1/participants/{kpj}")
async def get_participant(request: web.Request) -> web.Response:
    employer = await authenticated_employer(request)
    view = await svc.participant_view(request.app[pool_key], request.match_info["kpj"], utc_now())
    if view is None or view["npp"] != employer["npp"]:
        raise NotFound(f"no participant {request.match_info['kpj']} for this employer")
    return json_ok(ParticipantOut(**view).model_dump())
