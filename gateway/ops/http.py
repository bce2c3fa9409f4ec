"""Ops routes: ledger health, reconciliation, Prometheus metrics, the live dashboard.

| route | auth | what |
|---|---|---|
| `GET /ops/health/ledger` | admin | every check's verdict and offending rows; 200 healthy, 503 on any violation |
| `POST /ops/reconciliations` | admin | import a statement (body: the file) and reconcile it; 201 new, 200 already imported |
| `GET /ops/reconciliations` | admin | imported statements, newest first |
| `GET /ops/reconciliations/{id}` | admin | one statement's summary and items (`?kind=` filters) |
| `GET /ops/reconciliations/{id}/items.csv` | admin | the items as CSV |
| `GET /metrics` | none | Prometheus text format (aggregates only) |
| `GET /ops/` | none | the live dashboard (aggregates only, no rows, no NPP) |
| `GET /ops/stream` | none | server-sent `ops` events feeding the dashboard |
| `GET /ops/summary` | none | the latest `ops` event as JSON |

Admin routes take `Authorization: Bearer <KANAL_ADMIN_TOKEN>`.
"""

from __future__ import annotations

import asyncio

import hmac
import json
from importlib import resources

from aiohttp import web
from aiohttp_sse import sse_response

from gateway.http.common import CLIENT_CLOSED, json_ok, problem, read_body
from gateway.http.keys import hub_key, payments_key, pool_key, settings_key
from gateway.observability import add_response_listener, remove_response_listener
from gateway.ops import checks, reconcile
from gateway.ops.live import OpsHub
from gateway.ops.metrics import CONTENT_TYPE, Metrics
from gateway.ops.statements import STATEMENT_BYTES_MAX, StatementError

metrics_key = web.AppKey("ops_metrics", Metrics)
ops_hub_key = web.AppKey("ops_hub", OpsHub)

STATIC = resources.files("gateway.ops") / "static"


def setup(app: web.Application) -> None:
    metrics = Metrics()
    app[metrics_key] = metrics
    app[ops_hub_key] = OpsHub(app[pool_key])
    # Outermost: it counts the status the client got, after the request
    # middleware has turned a refusal (ServiceError, a model's error) into
    # its problem response. Inside it, every refusal counted as a 500.
    app.middlewares.insert(0, _count_responses)
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/ops/health/ledger", health_view)
    app.router.add_post("/ops/reconciliations", import_view)
    app.router.add_get("/ops/reconciliations", list_view)
    app.router.add_get("/ops/reconciliations/{id:[0-9]{1,18}}", statement_view)
    app.router.add_get("/ops/reconciliations/{id:[0-9]{1,18}}/items.csv", items_csv_view)
    app.router.add_get("/ops", _to_dashboard)
    app.router.add_get("/ops/", dashboard_view)
    app.router.add_get("/ops/stream", stream_view)
    app.router.add_get("/ops/summary", summary_view)
    app.router.add_static("/ops/static/", str(STATIC), append_version=False)


async def _lifecycle(app: web.Application):
    metrics = app[metrics_key]
    payments = app[payments_key]
    add_response_listener(metrics.on_response)
    payments.observers.append(metrics.on_operation)
    hub = app[ops_hub_key]
    await hub.start()
    yield
    await hub.stop()
    if metrics.on_operation in payments.observers:
        payments.observers.remove(metrics.on_operation)
    remove_response_listener(metrics.on_response)


@web.middleware
async def _count_responses(request: web.Request, handler):
    route = request.match_info.route
    prefix = "unmatched"
    if route.resource is not None:
        prefix = "/" + request.path.lstrip("/").split("/", 1)[0]
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        status = CLIENT_CLOSED  # the client went away (a stream closed): not the server's error
        raise
    finally:
        request.app[metrics_key].on_http(prefix, status)


def _require_admin(request: web.Request) -> web.Response | None:
    expected = request.app[settings_key].admin_token.get_secret_value()
    given = request.headers.get("Authorization", "")
    if expected and hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        return None
    return problem(401, "Unauthorized", "Authorization: Bearer <admin token> is required for /ops administration",
                   [{"field": "Authorization", "problem": "missing or wrong admin token"}])


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # isdigit() alone admits "²", which int() refuses: ASCII digits only.
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise _Invalid(name, f"expected a whole number from {low} to {high}, got {raw!r}")
    return int(raw)


class _Invalid(Exception):
    def __init__(self, field: str, problem_text: str) -> None:
        self.field, self.problem = field, problem_text


def _invalid(error: _Invalid) -> web.Response:
    return problem(422, "Invalid request", f"{error.field}: {error.problem}", [{"field": error.field, "problem": error.problem}])


# ------------------------------------------------------------- metrics ----


async def metrics_view(request: web.Request) -> web.Response:
    metrics = request.app[metrics_key]
    await metrics.refresh(request.app[pool_key], await request.app[hub_key].snapshot())
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


# -------------------------------------------------------------- health ----


async def health_view(request: web.Request) -> web.Response:
    if (refused := _require_admin(request)) is not None:
        return refused
    only = request.query.getall("check", []) or None
    try:
        limits = checks.Limits(
            rows_max=_int_query(request, "rows_max", 50, 0, 1000),
            outbox_lag_seconds_max=_int_query(request, "outbox_lag_seconds_max", 300, 1, 86_400 * 30),
            delivery_failure_basis_points_max=_int_query(request, "delivery_failure_basis_points_max", 500, 0, 10_000),
        )
        report = await checks.run_checks(request.app[pool_key], limits, only=only)
    except _Invalid as error:
        return _invalid(error)
    except ValueError as error:
        return problem(422, "Invalid request", str(error), [{"field": "check", "problem": str(error)}])
    return json_ok(report.as_dict(), status=200 if report.healthy else 503)


# ------------------------------------------------------- reconciliation ----


async def import_view(request: web.Request) -> web.Response:
    if (refused := _require_admin(request)) is not None:
        return refused
    raw = await read_body(request, STATEMENT_BYTES_MAX)
    query = request.query
    try:
        summary, created = await reconcile.import_statement(
            request.app[pool_key],
            raw,
            fmt=query.get("format", "auto"),
            statement_ref=query.get("statement_ref", ""),
            account=query.get("account", ""),
            channel_prefix=query.get("channel_prefix", ""),
            file_name=query.get("file_name", ""),
            settlement_accounts=request.app[settings_key].settlement_accounts,
        )
    except reconcile.StatementConflict as error:
        return problem(409, "Conflict", error.detail, error.errors)
    except StatementError as error:
        return problem(422, "Invalid statement", error.detail, error.errors)
    summary["already_imported"] = not created
    summary["links"] = _links(summary["id"])
    return json_ok(summary, status=201 if created else 200)


def _links(statement_id: int) -> dict:
    return {
        "self": f"/ops/reconciliations/{statement_id}",
        "items_csv": f"/ops/reconciliations/{statement_id}/items.csv",
    }


async def list_view(request: web.Request) -> web.Response:
    if (refused := _require_admin(request)) is not None:
        return refused
    try:
        limit = _int_query(request, "limit", 50, 1, reconcile.LIST_LIMIT_MAX)
        before = _int_query(request, "before_id", 0, 0, 2**62) or None
    except _Invalid as error:
        return _invalid(error)
    rows = await reconcile.list_statements(request.app[pool_key], limit=limit, before_id=before)
    for row in rows:
        row["links"] = _links(row["id"])
    return json_ok({"statements": rows})


async def _statement_or_404(request: web.Request) -> dict | web.Response:
    statement_id = int(request.match_info["id"])
    summary = await reconcile.get_statement(request.app[pool_key], statement_id)
    if summary is None:
        return problem(404, "Not found", f"no reconciliation {statement_id}; GET /ops/reconciliations lists them")
    return summary


async def statement_view(request: web.Request) -> web.Response:
    if (refused := _require_admin(request)) is not None:
        return refused
    kind = request.query.get("kind")
    if kind is not None and kind not in reconcile.KINDS:
        return _invalid(_Invalid("kind", f"expected one of {', '.join(reconcile.KINDS)}, got {kind!r}"))
    summary = await _statement_or_404(request)
    if isinstance(summary, web.Response):
        return summary
    summary["links"] = _links(summary["id"])
    summary["items"] = await reconcile.items(request.app[pool_key], summary["id"], kind)
    return json_ok(summary)


async def items_csv_view(request: web.Request) -> web.Response:
    if (refused := _require_admin(request)) is not None:
        return refused
    summary = await _statement_or_404(request)
    if isinstance(summary, web.Response):
        return summary
    body = reconcile.items_csv(await reconcile.items(request.app[pool_key], summary["id"]))
    return web.Response(
        text=body, content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="reconciliation-{summary["id"]}.csv"'},
    )


# ----------------------------------------------------------- dashboard ----


async def _to_dashboard(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ops/")


async def dashboard_view(request: web.Request) -> web.Response:
    html = (STATIC / "dashboard.html").read_text(encoding="utf-8")
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def summary_view(request: web.Request) -> web.Response:
    return json_ok(await request.app[ops_hub_key].sample(advance=False))


async def stream_view(request: web.Request) -> web.StreamResponse:
    hub = request.app[ops_hub_key]
    queue = hub.subscribe()
    if queue is None:
        return problem(503, "Service unavailable", f"at most {hub.listeners_max} live ops listeners")
    try:
        async with sse_response(request, ping_interval=15) as sse:
            while sse.is_connected():
                message = await queue.get()
                await sse.send(json.dumps(message), event="ops", id=str(message["sequence"]))
            return sse
    finally:
        hub.unsubscribe(queue)
