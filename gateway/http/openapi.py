"""OpenAPI 3.1 description generated from the wire schemas, and a docs page
rendered on the server from it (no CDN, works with no internet access)."""

from __future__ import annotations

import functools
import html
import json
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway import __version__
from gateway.callbacks import conformance
from gateway.callbacks import http as callback_routes
from schemas import callbacks as c
from schemas import employer as s

API_KEY = "apiKey"
ADMIN = "adminToken"


@dataclass(frozen=True)
class Op:
    """One operation: what it takes, what it answers, who may call it."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    request: type[BaseModel] | str | None = None  # a model (JSON body) or a media type (text body)
    response: type[BaseModel] | str | None = None  # a model (JSON), a media type, or None (no body when 204)
    status: int = 200
    auth: tuple[str, ...] = ()  # security schemes; any one of them suffices
    errors: tuple[int, ...] = ()  # problem+json statuses the route answers
    query: tuple[dict, ...] = ()
    headers: dict = field(default_factory=dict)  # response headers of the success answer
    description: str = ""


def _employer_op(method, path, operation_id, summary, request, response, status, auth) -> Op:
    """The employer routes, with the problem statuses they have always listed."""
    errors = (400, 401, 403, 404, 409, 413, 415, 422) if method == "post" else ((401, 403, 404) if auth else ())
    return Op(method, path, operation_id, summary, "employers", request, response, status, (API_KEY,) if auth else (), errors)


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


LIMIT = _query(
    "limit", {"type": "integer", "minimum": 1, "maximum": callback_routes.PAGE_SIZE_MAX, "default": callback_routes.PAGE_SIZE_DEFAULT},
    "page size",
)
BEFORE_ID = _query(
    "before_id", {"type": "integer", "minimum": 1, "maximum": callback_routes.BEFORE_ID_MAX},
    "only items with a smaller id (older): the `next` link sets it",
)
# An instant, or a duration back from now. (ISO 8601 forms without an offset,
# or a date alone, are accepted too, as UTC.)
INSTANT = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "pattern": "^[0-9]{1,6}[smhd]$"}]}
WINDOW = (
    _query("since", INSTANT, "start of the window: an ISO 8601 time (2025-09-24T10:00:00+07:00; UTC when it has no offset) or a duration back from now (90s, 15m, 24h, 7d); "
           f"without it, the browsable page covers the {conformance.WINDOW_HOURS_DEFAULT} hours before until (or now), an export every exchange"),
    _query("until", INSTANT, "end of the window (exclusive), in the same forms as since"),
)
BODY = (400, 413, 415, 422)  # malformed JSON, too large, not application/json, invalid
EITHER = (API_KEY, ADMIN)  # the endpoint's employer (its API key) or the admin

OPERATIONS: list[Op] = [
    _employer_op("post", "/api/v1/employers", "registerEmployer", "Register an employer; the API key is shown once", s.EmployerRegistration, s.EmployerRegistered, 201, False),
    _employer_op("post", "/api/v1/employers/{npp}/participants", "addParticipants", "Add one participant, or many with {participants: [...], mode}", s.ParticipantsBatch, s.ParticipantsResult, 201, True),
    _employer_op("post", "/api/v1/employers/{npp}/participants.csv", "addParticipantsCsv", "Add participants from CSV (header kpj,nik,name,wage,segment); ?mode=keep_valid saves the valid rows", "text/csv", s.ParticipantsResult, 201, True),
    _employer_op("post", "/api/v1/employers/{npp}/wage-reports", "submitWageReport", "Submit a month's wage report and receive the bill", s.WageReport, s.WageReportResult, 201, True),
    _employer_op("get", "/api/v1/employers/{npp}/bills", "listBills", "List the employer's bills", None, s.BillList, 200, True),
    _employer_op("get", "/api/v1/bills/{payment_code}", "getBill", "Read one bill with its lines", None, s.BillOut, 200, True),
    _employer_op("get", "/api/v1/participants/{kpj}", "getParticipant", "Read a participant and its protection per program", None, s.ParticipantOut, 200, True),
    _employer_op("get", "/api/v1/coverage", "getCoverage", "Current coverage per regency and program", None, None, 200, False),
    _employer_op("get", "/api/v1/stream/coverage", "streamCoverage", "Live coverage (server-sent events, event 'coverage')", None, "text/event-stream", 200, False),
    # ------------------------------------------------ callback endpoints --
    Op("post", "/api/v1/employers/{npp}/callbacks/endpoints", "addEmployerCallbackEndpoint",
       "Register a callback endpoint for the employer's own events; the secret is shown once", "callbacks",
       c.EndpointIn, c.EndpointWithSecret, 201, (API_KEY,), (*BODY, 401, 403, 409),
       description="409 when the employer already has KANAL_CALLBACKS_ENDPOINTS_PER_OWNER_MAX endpoints."),
    Op("get", "/api/v1/employers/{npp}/callbacks/endpoints", "listEmployerCallbackEndpoints",
       "List the employer's callback endpoints", "callbacks", None, c.EndpointList, 200, (API_KEY,), (401, 403)),
    Op("post", "/api/v1/partners/{partner_id}/callbacks/endpoints", "addPartnerCallbackEndpoint",
       "Register a callback endpoint for a bank or other partner (every employer's events, or one's with npp)", "callbacks",
       c.EndpointIn, c.EndpointWithSecret, 201, (ADMIN,), (*BODY, 401, 404, 409)),
    Op("get", "/api/v1/partners/{partner_id}/callbacks/endpoints", "listPartnerCallbackEndpoints",
       "List a partner's callback endpoints", "callbacks", None, c.EndpointList, 200, (ADMIN,), (401, 404, 422)),
    Op("get", "/api/v1/callbacks/endpoints/{endpoint_id}", "getCallbackEndpoint",
       "Read one endpoint (without its secret)", "callbacks", None, c.EndpointOut, 200, EITHER, (401, 404),
       description="Another employer's endpoint answers 404, as if it did not exist."),
    Op("patch", "/api/v1/callbacks/endpoints/{endpoint_id}", "changeCallbackEndpoint",
       "Change an endpoint's url, event types or description", "callbacks",
       c.EndpointChange, c.EndpointOut, 200, EITHER, (*BODY, 401, 404)),
    Op("delete", "/api/v1/callbacks/endpoints/{endpoint_id}", "deleteCallbackEndpoint",
       "Delete an endpoint and its deliveries", "callbacks", None, None, 204, EITHER, (401, 404)),
    Op("post", "/api/v1/callbacks/endpoints/{endpoint_id}/rotate-secret", "rotateCallbackSecret",
       "A new secret (shown once); the old one keeps signing for KANAL_CALLBACKS_ROTATION_OVERLAP_S", "callbacks",
       None, c.EndpointWithSecret, 200, EITHER, (401, 404)),
    Op("post", "/api/v1/callbacks/endpoints/{endpoint_id}/enable", "enableCallbackEndpoint",
       "Enable an endpoint (after it was disabled by its owner or by failed deliveries)", "callbacks",
       None, c.EndpointOut, 200, EITHER, (401, 404)),
    Op("post", "/api/v1/callbacks/endpoints/{endpoint_id}/disable", "disableCallbackEndpoint",
       "Disable an endpoint: its deliveries wait until it is enabled", "callbacks",
       None, c.EndpointOut, 200, EITHER, (401, 404)),
    Op("get", "/api/v1/callbacks/endpoints/{endpoint_id}/deliveries", "listCallbackDeliveries",
       "An endpoint's deliveries, newest first, one page at a time", "callbacks",
       None, c.DeliveryPage, 200, EITHER, (401, 404, 422),
       query=(_query("status", {"type": "string", "enum": list(c.DeliveryStatus.__args__)}, "only deliveries in this status"), LIMIT, BEFORE_ID)),
    Op("post", "/api/v1/callbacks/endpoints/{endpoint_id}/replay-failed", "replayFailedCallbacks",
       "Send every failed, gone or dropped delivery again; enables the endpoint", "callbacks",
       None, c.Replayed, 200, EITHER, (401, 404)),
    Op("get", "/api/v1/callbacks/deliveries/{delivery_id}", "getCallbackDelivery",
       "Read one delivery with its attempt log", "callbacks", None, c.DeliveryWithAttempts, 200, EITHER, (401, 404)),
    Op("post", "/api/v1/callbacks/deliveries/{delivery_id}/replay", "replayCallbackDelivery",
       "Send one delivery again now, without faults; enables its endpoint", "callbacks",
       None, c.DeliveryOut, 200, EITHER, (401, 404)),
    # ----------------------------------------------------------- faults --
    Op("get", "/api/v1/callbacks/endpoints/{endpoint_id}/faults", "getCallbackEndpointFaults",
       "An endpoint's outbound fault profile ({} when it has none)", "faults", None, c.EndpointFaults, 200, EITHER, (401, 404)),
    Op("put", "/api/v1/callbacks/endpoints/{endpoint_id}/faults", "setCallbackEndpointFaults",
       "Set an endpoint's outbound fault profile; {} clears it", "faults",
       c.OutboundFaults, c.EndpointFaults, 200, EITHER, (*BODY, 401, 404)),
    Op("get", "/api/v1/partners/{partner_id}/faults", "getPartnerFaults",
       "A partner's fault profiles: inbound (its requests to Kanal) and outbound (callbacks to it)", "faults",
       None, c.PartnerFaults, 200, (ADMIN,), (401, 404, 422)),
    Op("put", "/api/v1/partners/{partner_id}/faults", "setPartnerFaults",
       "Set a partner's fault profiles; a side left out is unchanged, {} clears it", "faults",
       c.PartnerFaultsIn, c.PartnerFaults, 200, (ADMIN,), (*BODY, 401, 404)),
    Op("delete", "/api/v1/partners/{partner_id}/faults", "clearPartnerFaults",
       "Clear both of a partner's fault profiles", "faults", None, None, 204, (ADMIN,), (401, 404, 422)),
    # ------------------------------------------------------ conformance --
    Op("get", "/api/v1/partners/{partner_id}/conformance", "getConformance",
       "A partner's conformance: the summary and one page of exchanges, newest first", "conformance",
       None, c.ConformancePage, 200, (ADMIN,), (401, 404, 422),
       query=(*WINDOW, _query("verdict", {"type": "string", "enum": list(c.Verdict.__args__)}, "only exchanges with this verdict"), LIMIT, BEFORE_ID)),
    Op("get", "/api/v1/partners/{partner_id}/conformance.json", "exportConformanceJson",
       "The whole conformance report as a JSON download (oldest exchange first)", "conformance",
       None, c.ConformanceReport, 200, (ADMIN,), (401, 404, 422), query=WINDOW,
       headers={"Content-Disposition": {"description": "attachment; filename=\"conformance-<partner_id>.json\"", "schema": {"type": "string"}}}),
    Op("get", "/api/v1/partners/{partner_id}/conformance.html", "exportConformanceHtml",
       "The whole conformance report as a self-contained HTML page", "conformance",
       None, "text/html", 200, (ADMIN,), (401, 404, 422), query=WINDOW),
]

PATH_PARAMETERS = {
    "npp": {"type": "string"},
    "payment_code": {"type": "string"},
    "kpj": {"type": "string"},
    "endpoint_id": {"type": "string", "pattern": "^ep_[0-9a-f]{32}$", "examples": ["ep_5f0c3b1e9a7d4c2b8e6f1a0d2c4b6e8f"]},
    "delivery_id": {"type": "integer", "minimum": 1, "format": "int64"},
    "partner_id": {"type": "string", "pattern": c.PARTNER_ID_PATTERN, "examples": ["BANKKALBAR"]},
}
TAGS = [
    {"name": "employers", "description": "Employers register workers, report wages and receive bills."},
    {"name": "callbacks", "description": "Signed callbacks (Standard Webhooks): endpoints, deliveries, replays, secret rotation. See docs/callbacks.md."},
    {"name": "faults", "description": "Failures ordered on purpose, to test an integrator's side: outbound (callbacks) and inbound (a bank's requests)."},
    {"name": "conformance", "description": "Every exchange a bank had with Kanal, with a verdict and the protocol rule it broke."},
]
SECURITY_SCHEMES = {
    API_KEY: {"type": "http", "scheme": "bearer", "description": "the employer's API key"},
    ADMIN: {"type": "http", "scheme": "bearer", "description": "the admin token (KANAL_ADMIN_TOKEN)"},
}
PROBLEMS = {
    400: "Malformed JSON",
    401: "Missing or wrong credentials",
    403: "The API key belongs to another employer",
    404: "Not found, or not the caller's to see (the same answer), or no such route",
    409: "Conflict with what exists",
    413: "Body larger than the limit",
    415: "Content-Type is not the one the route reads",
    422: "Invalid parameter or body; errors name each field",
}


def _problem(status: int) -> dict:
    return {"description": PROBLEMS[status], "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _models() -> list[type[BaseModel]]:
    models = {op.request for op in OPERATIONS if isinstance(op.request, type)}
    models |= {op.response for op in OPERATIONS if isinstance(op.response, type)}
    return sorted(models | {s.Problem}, key=lambda m: m.__name__)


@functools.cache
def build_spec() -> dict:
    """The spec, built once per process (it depends on the code only; about
    20 ms to build). Callers must not change the dict they get."""
    _, defs = models_json_schema([(m, "validation") for m in _models()], ref_template="#/components/schemas/{model}")
    paths: dict = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    schemas = defs.get("$defs", {})
    schemas["InvalidRows"] = _invalid_rows_schema(schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kanal API", "version": __version__,
                 "description": "Employers register workers, report wages and receive bills with payment codes (kode iuran). "
                                "Employers and partners receive signed callbacks, order faults to test their side, and read "
                                "a bank's conformance report."},
        "tags": TAGS,
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def _operation(op: Op) -> dict:
    out: dict = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag], "responses": {}}
    if op.description:
        out["description"] = op.description
    params = [
        {"name": name, "in": "path", "required": True, "schema": schema}
        for name, schema in PATH_PARAMETERS.items() if "{" + name + "}" in op.path
    ]
    params += list(op.query)
    if params:
        out["parameters"] = params
    if op.auth:
        out["security"] = [{scheme: []} for scheme in op.auth]
    if isinstance(op.request, type):
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{op.request.__name__}"}}}}
    elif op.request:
        out["requestBody"] = {"required": True, "content": {op.request: {"schema": {"type": "string"}}}}
    ok: dict = {"description": "No content" if op.status == 204 else "OK"}
    if isinstance(op.response, type):
        ok["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{op.response.__name__}"}}}
    elif op.response:
        ok["content"] = {op.response: {"schema": {"type": "string"}}}
    elif op.status != 204:
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    if op.headers:
        ok["headers"] = op.headers
    out["responses"][str(op.status)] = ok
    for code in op.errors:
        out["responses"][str(code)] = _problem(code)
    if op.response is s.ParticipantsResult:
        # keep_valid with every row invalid saves nothing: 200, not 201. In
        # all_or_nothing mode invalid rows answer 422: a problem document
        # extended with the rows report.
        out["responses"]["200"] = {
            "description": "Nothing saved: every row was invalid (mode keep_valid)",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ParticipantsResult"}}},
        }
        out["responses"]["422"] = {
            "description": "Invalid body, or invalid rows (nothing saved; each row's field and problem listed)",
            "content": {
                "application/problem+json": {
                    "schema": {"anyOf": [{"$ref": "#/components/schemas/InvalidRows"}, {"$ref": "#/components/schemas/Problem"}]}
                },
            },
        }
    return out


def _invalid_rows_schema(schemas: dict) -> dict:
    """The 422 rows report: a problem (type, title, status, detail) merged
    with ParticipantsResult (saved, rejected, mode, errors with their row)."""
    problem, result = schemas["Problem"], schemas["ParticipantsResult"]
    return {
        "title": "InvalidRows",
        "type": "object",
        "properties": {**problem["properties"], **result["properties"]},
        "required": sorted(set(problem.get("required", [])) | set(result.get("required", []))),
    }


routes = web.RouteTableDef()


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build_spec())


CREDENTIALS = {
    API_KEY: "<code>Authorization: Bearer &lt;api_key&gt;</code> (the employer's API key)",
    ADMIN: "<code>Authorization: Bearer &lt;admin token&gt;</code> (<code>KANAL_ADMIN_TOKEN</code>)",
}
DOCS_SCHEMA_CHARS_MAX = 3000


@routes.get("/docs")
async def docs_page(request: web.Request) -> web.Response:
    """The spec as one readable page, grouped by tag, with no script: every
    route, who may call it, its parameters, body and answers."""
    spec = build_spec()
    base = f"{request.scheme}://{request.host}"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>Kanal API</title><style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:auto;padding:1rem;line-height:1.45}"
        "code,pre{background:#f4f4f4;padding:.1rem .3rem;border-radius:4px;overflow-x:auto}pre{padding:.6rem}"
        "h2{border-top:2px solid #bbb;padding-top:1rem}h3{border-top:1px solid #ddd;padding-top:.8rem}"
        ".m{font-weight:700;text-transform:uppercase}</style></head><body>",
        f"<h1>{html.escape(spec['info']['title'])} <small>{spec['info']['version']}</small></h1>",
        f"<p>{html.escape(spec['info']['description'])} Machine-readable description: <a href='/openapi.json'>/openapi.json</a>.</p>",
        "<p>Errors are <code>application/problem+json</code> with <code>errors: [{field, problem}]</code>.</p>",
        "<ul>" + "".join(f"<li><a href='#tag-{t['name']}'>{html.escape(t['name'])}</a>: {html.escape(t['description'])}</li>" for t in spec["tags"]) + "</ul>",
    ]
    for tag in spec["tags"]:
        parts.append(f"<h2 id='tag-{tag['name']}'>{html.escape(tag['name'])}</h2>")
        for path, methods in spec["paths"].items():
            for method, op in methods.items():
                if tag["name"] in op["tags"]:
                    parts.extend(_docs_operation(spec, path, method, op))
    parts.append(
        f"<h2>Example</h2><pre>curl -s -X POST {base}/api/v1/employers -H 'Content-Type: application/json' "
        "-d '{\"npp\":\"AB123456\",\"name\":\"PT Contoh\",\"regency_code\":\"6171\",\"size_class\":\"large\",\"jkk_risk_class\":2}'</pre>"
    )
    parts.append("</body></html>")
    return web.Response(text="".join(parts), content_type="text/html")


def _docs_operation(spec: dict, path: str, method: str, op: dict) -> list[str]:
    parts = [
        f"<h3 id='{html.escape(op['operationId'])}'><span class='m'>{method}</span> <code>{html.escape(path)}</code></h3>"
        f"<p>{html.escape(op['summary'])}</p>"
    ]
    if op.get("description"):
        parts.append(f"<p>{html.escape(op['description'])}</p>")
    if "security" in op:
        schemes = [name for requirement in op["security"] for name in requirement]
        parts.append("<p>Requires " + " or ".join(CREDENTIALS[name] for name in schemes) + ".</p>")
    query = [p for p in op.get("parameters", []) if p["in"] == "query"]
    if query:
        items = "".join(
            f"<li><code>{html.escape(p['name'])}</code> ({html.escape(_type_text(p['schema']))}): {html.escape(p.get('description', ''))}</li>"
            for p in query
        )
        parts.append(f"<p>Query parameters:</p><ul>{items}</ul>")
    for ctype, media in op.get("requestBody", {}).get("content", {}).items():
        name = media["schema"].get("$ref", "").rsplit("/", 1)[-1]
        if name:
            schema = spec["components"]["schemas"][name]
            body = json.dumps(schema.get("properties", {}), indent=1)[:DOCS_SCHEMA_CHARS_MAX]
            parts.append(f"<p>Body <code>{ctype}</code> ({name}):</p><pre>{html.escape(body)}</pre>")
        else:
            parts.append(f"<p>Body <code>{html.escape(ctype)}</code>.</p>")
    answers = []
    for status, response in op["responses"].items():
        media = ", ".join(
            f"{ctype} {m['schema']['$ref'].rsplit('/', 1)[-1]}" if "$ref" in m["schema"] else ctype
            for ctype, m in response.get("content", {}).items()
        )
        answers.append(f"{status}" + (f" <small>({html.escape(media)})</small>" if media and not status.startswith("4") else ""))
    parts.append(f"<p>Responses: {', '.join(answers)}</p>")
    return parts


def _type_text(schema: dict) -> str:
    if "enum" in schema:
        return " | ".join(str(v) for v in schema["enum"])
    bounds = [f"{k} {schema[k]}" for k in ("minimum", "maximum") if k in schema]
    return schema.get("type", "any") + (f", {', '.join(bounds)}" if bounds else "")
