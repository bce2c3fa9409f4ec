"""OpenAPI 3.1 description generated from the wire schemas, and a docs page
rendered on the server from it (no CDN, works with no internet access)."""

from __future__ import annotations

import html
import json

from aiohttp import web
from pydantic.json_schema import models_json_schema

from gateway import __version__
from schemas import employer as s

# (method, path, summary, request model or content type, response model, status, auth)
OPERATIONS = [
    ("post", "/api/v1/employers", "Register an employer; the API key is shown once", s.EmployerRegistration, s.EmployerRegistered, 201, False),
    ("post", "/api/v1/employers/{npp}/participants", "Add one participant, or many with {participants: [...], mode}", s.ParticipantsBatch, s.ParticipantsResult, 201, True),
    ("post", "/api/v1/employers/{npp}/participants.csv", "Add participants from CSV (header kpj,nik,name,wage,segment); ?mode=keep_valid saves the valid rows", "text/csv", s.ParticipantsResult, 201, True),
    ("post", "/api/v1/employers/{npp}/wage-reports", "Submit a month's wage report and receive the bill", s.WageReport, s.WageReportResult, 201, True),
    ("get", "/api/v1/employers/{npp}/bills", "List the employer's bills", None, s.BillList, 200, True),
    ("get", "/api/v1/bills/{payment_code}", "Read one bill with its lines", None, s.BillOut, 200, True),
    ("get", "/api/v1/participants/{kpj}", "Read a participant and its protection per program", None, s.ParticipantOut, 200, True),
    ("get", "/api/v1/coverage", "Current coverage per regency and program", None, None, 200, False),
    ("get", "/api/v1/stream/coverage", "Live coverage (server-sent events, event 'coverage')", None, None, 200, False),
]


def build_spec() -> dict:
    models = {op[3] for op in OPERATIONS if isinstance(op[3], type)} | {op[4] for op in OPERATIONS if op[4]} | {s.Problem}
    _, defs = models_json_schema([(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
                                 ref_template="#/components/schemas/{model}")
    paths: dict = {}
    for method, path, summary, request, response, status, auth in OPERATIONS:
        op: dict = {"summary": summary, "responses": {}}
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in ("npp", "payment_code", "kpj") if "{" + name + "}" in path
        ]
        if params:
            op["parameters"] = params
        if auth:
            op["security"] = [{"apiKey": []}]
        if isinstance(request, type):
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request.__name__}"}}}}
        elif request:
            op["requestBody"] = {"required": True, "content": {request: {"schema": {"type": "string"}}}}
        ok: dict = {"description": "OK"}
        if response:
            ok["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{response.__name__}"}}}
        elif path.endswith("/stream/coverage"):
            ok["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
        else:
            ok["content"] = {"application/json": {"schema": {"type": "object"}}}
        op["responses"][str(status)] = ok
        problem = {"description": "Problem", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for code in (["400", "401", "403", "404", "409", "413", "415", "422"] if method == "post" else (["401", "403", "404"] if auth else [])):
            op["responses"][code] = problem
        if response is s.ParticipantsResult:
            # keep_valid with every row invalid saves nothing: 200, not 201. In
            # all_or_nothing mode invalid rows answer 422: a problem document
            # extended with the rows report.
            op["responses"]["200"] = {
                "description": "Nothing saved: every row was invalid (mode keep_valid)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ParticipantsResult"}}},
            }
            op["responses"]["422"] = {
                "description": "Invalid body, or invalid rows (nothing saved; each row's field and problem listed)",
                "content": {
                    "application/problem+json": {
                        "schema": {"anyOf": [{"$ref": "#/components/schemas/InvalidRows"}, {"$ref": "#/components/schemas/Problem"}]}
                    },
                },
            }
        paths.setdefault(path, {})[method] = op
    schemas = defs.get("$defs", {})
    schemas["InvalidRows"] = _invalid_rows_schema(schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kanal employer API", "version": __version__,
                 "description": "Employers register workers, report wages and receive bills with payment codes (kode iuran)."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "the employer's API key"}}},
    }


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


@routes.get("/docs")
async def docs_page(request: web.Request) -> web.Response:
    spec = build_spec()
    base = f"{request.scheme}://{request.host}"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>Kanal API</title><style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:auto;padding:1rem;line-height:1.45}"
        "code,pre{background:#f4f4f4;padding:.1rem .3rem;border-radius:4px;overflow-x:auto}pre{padding:.6rem}"
        "h2{border-top:1px solid #ddd;padding-top:1rem}.m{font-weight:700;text-transform:uppercase}</style></head><body>",
        f"<h1>{html.escape(spec['info']['title'])} <small>{spec['info']['version']}</small></h1>",
        f"<p>{html.escape(spec['info']['description'])} Machine-readable description: <a href='/openapi.json'>/openapi.json</a>.</p>",
        "<p>Errors are <code>application/problem+json</code> with <code>errors: [{field, problem}]</code>.</p>",
    ]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            parts.append(f"<h2><span class='m'>{method}</span> <code>{html.escape(path)}</code></h2><p>{html.escape(op['summary'])}</p>")
            if "security" in op:
                parts.append("<p>Requires <code>Authorization: Bearer &lt;api_key&gt;</code>.</p>")
            body = op.get("requestBody", {}).get("content", {})
            for ctype, media in body.items():
                ref = media["schema"].get("$ref", "")
                name = ref.rsplit("/", 1)[-1]
                if name:
                    schema = spec["components"]["schemas"][name]
                    parts.append(f"<p>Body <code>{ctype}</code> ({name}):</p><pre>{html.escape(json.dumps(schema.get('properties', {}), indent=1)[:3000])}</pre>")
            statuses = ", ".join(op["responses"])
            parts.append(f"<p>Responses: {statuses}</p>")
    parts.append(
        f"<h2>Example</h2><pre>curl -s -X POST {base}/api/v1/employers -H 'Content-Type: application/json' "
        "-d '{\"npp\":\"AB123456\",\"name\":\"PT Contoh\",\"regency_code\":\"6171\",\"size_class\":\"large\",\"jkk_risk_class\":2}'</pre>"
    )
    parts.append("</body></html>")
    return web.Response(text="".join(parts), content_type="text/html")
