"""Callback, fault and conformance routes under /api/v1, and the delivery
workers as a background task of the gateway (`setup(app)`).

Who may call what:
- an employer (its API key) manages its own endpoints and their deliveries;
- the admin token manages partners' endpoints, any endpoint, partner fault
  profiles and conformance reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import re

from aiohttp import web

from gateway.callbacks import conformance, partners, service, store, worker
from gateway.callbacks.settings import CallbackSettings
from gateway.http.common import json_ok, read_json
from gateway.http.employer import Unauthorized, authenticated_employer, employer_of_path
from gateway.http.keys import pool_key, settings_key
from gateway.service.errors import Invalid, NotFound

callback_settings_key = web.AppKey("callback_settings", CallbackSettings)
routes = web.RouteTableDef()

PAGE_SIZE_MAX = 500
PAGE_SIZE_DEFAULT = 100
BEFORE_ID_MAX = 2**62
DELIVERY_ID_MAX = 2**63 - 1  # bigint
# Endpoint ids are "ep_" and a UUID's hex (the table's default); anything
# that could not be one (NUL, non-ASCII) is unknown without asking PostgreSQL.
ENDPOINT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def setup(app: web.Application) -> None:
    app[callback_settings_key] = CallbackSettings.from_env()
    app.add_routes(routes)
    app.cleanup_ctx.append(_delivery_workers)
    app.cleanup_ctx.append(_counts_folder)


async def _delivery_workers(app: web.Application):
    settings = app[callback_settings_key]
    task = None
    if settings.workers or settings.relay:
        task = asyncio.create_task(
            worker.run_all(app[pool_key], settings, workers=settings.workers, relay=settings.relay), name="callbacks"
        )
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _counts_folder(app: web.Application):
    """Every gateway folds the delivery and attempt counters (one fold at a
    time across processes; the others find nothing to do)."""
    task = asyncio.create_task(worker.fold_counts_forever(app[pool_key], app[callback_settings_key]), name="callbacks-counts-fold")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# --------------------------------------------------------------- access --


def _is_admin(request: web.Request) -> bool:
    expected = request.app[settings_key].admin_token.get_secret_value()
    given = request.headers.get("Authorization", "")
    return bool(expected) and hmac.compare_digest(given.encode(), f"Bearer {expected}".encode())


def _require_admin(request: web.Request) -> None:
    if not _is_admin(request):
        raise Unauthorized(
            "this route needs the admin token: 'Authorization: Bearer <KANAL_ADMIN_TOKEN>'",
            [{"field": "Authorization", "problem": "missing or not the admin token"}],
        )


async def _endpoint_for(request: web.Request, endpoint_id: str):
    """The endpoint if the caller may see it: the admin, or its employer.
    The caller is authenticated first (401), so nothing about an endpoint is
    revealed without credentials; another employer's endpoint is 404, as if
    it did not exist."""
    employer = None if _is_admin(request) else await authenticated_employer(request)
    if not ENDPOINT_ID.fullmatch(endpoint_id):
        raise NotFound(f"no callback endpoint {endpoint_id!r}", [{"field": "endpoint_id", "problem": "not an endpoint id"}])
    row = await service.endpoint_or_404(request.app[pool_key], endpoint_id)
    if employer is not None and (row["owner_kind"] != "employer" or row["owner_id"] != employer["npp"]):
        raise NotFound(f"no callback endpoint {endpoint_id}", [{"field": "endpoint_id", "problem": "unknown"}])
    return row


async def _authenticated(request: web.Request) -> None:
    """401 unless the caller is the admin or holds a valid employer key."""
    if not _is_admin(request):
        await authenticated_employer(request)


def _settings(request: web.Request) -> CallbackSettings:
    return request.app[callback_settings_key]


async def _body(request: web.Request):
    return await read_json(request, _settings(request).request_body_bytes_max)


def _int_query(request: web.Request, name: str, default: int | None, minimum: int, maximum: int) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    # isdigit() alone admits "²", which int() refuses: ASCII digits only.
    if not (text.isascii() and text.isdigit()) or not minimum <= int(text) <= maximum:
        raise Invalid.field(name, f"must be a whole number from {minimum} to {maximum}, got {text!r}")
    return int(text)


# ------------------------------------------------------------ endpoints --


@routes.post("/api/v1/employers/{npp}/callbacks/endpoints")
async def add_employer_endpoint(request: web.Request) -> web.Response:
    employer = await employer_of_path(request)
    data = service.parse(service.EndpointIn, await _body(request))
    created = await service.register(
        request.app[pool_key], _settings(request), owner_kind="employer", owner_id=employer["npp"], data=data
    )
    return json_ok(created, status=201)


@routes.get("/api/v1/employers/{npp}/callbacks/endpoints")
async def list_employer_endpoints(request: web.Request) -> web.Response:
    employer = await employer_of_path(request)
    rows = await store.endpoints(request.app[pool_key], "employer", employer["npp"])
    return json_ok({"endpoints": [store.endpoint_view(r) for r in rows]})


@routes.post("/api/v1/partners/{partner_id}/callbacks/endpoints")
async def add_partner_endpoint(request: web.Request) -> web.Response:
    _require_admin(request)
    partner_id = service.check_partner_id(request.match_info["partner_id"])
    data = service.parse(service.EndpointIn, await _body(request))
    created = await service.register(request.app[pool_key], _settings(request), owner_kind="partner", owner_id=partner_id, data=data)
    return json_ok(created, status=201)


@routes.get("/api/v1/partners/{partner_id}/callbacks/endpoints")
async def list_partner_endpoints(request: web.Request) -> web.Response:
    _require_admin(request)
    rows = await store.endpoints(request.app[pool_key], "partner", service.check_partner_id(request.match_info["partner_id"]))
    return json_ok({"endpoints": [store.endpoint_view(r) for r in rows]})


@routes.get("/api/v1/callbacks/endpoints/{endpoint_id}")
async def get_endpoint(request: web.Request) -> web.Response:
    return json_ok(store.endpoint_view(await _endpoint_for(request, request.match_info["endpoint_id"])))


@routes.patch("/api/v1/callbacks/endpoints/{endpoint_id}")
async def change_endpoint(request: web.Request) -> web.Response:
    row = await _endpoint_for(request, request.match_info["endpoint_id"])
    data = service.parse(service.EndpointChange, await _body(request))
    return json_ok(await service.change(request.app[pool_key], row["id"], data))


@routes.delete("/api/v1/callbacks/endpoints/{endpoint_id}")
async def delete_endpoint(request: web.Request) -> web.Response:
    row = await _endpoint_for(request, request.match_info["endpoint_id"])
    await service.delete(request.app[pool_key], row["id"])
    return web.Response(status=204)


@routes.post("/api/v1/callbacks/endpoints/{endpoint_id}/rotate-secret")
async def rotate_secret(request: web.Request) -> web.Response:
    row = await _endpoint_for(request, request.match_info["endpoint_id"])
    return json_ok(await service.rotate_secret(request.app[pool_key], _settings(request), row["id"]))


@routes.post("/api/v1/callbacks/endpoints/{endpoint_id}/enable")
async def enable_endpoint(request: web.Request) -> web.Response:
    row = await _endpoint_for(request, request.match_info["endpoint_id"])
    return json_ok(await service.set_enabled(request.app[pool_key], row["id"], True))


@routes.post("/api/v1/callbacks/endpoints/{endpoint_id}/disable")
async def disable_endpoint(request: web.Request) -> web.Response:
    row = await _endpoint_for(request, request.match_info["endpoint_id"])
    return json_ok(await service.set_enabled(request.app[pool_key], row["id"], False))


@routes.get("/api/v1/callbacks/endpoints/{endpoint_id}/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    row = await _endpoint_for(request, request.match_info["endpoint_id"])
    status = request.query.get("status") or None
    if status not in (None, "pending", "delivered", "failed", "gone", "dropped"):
        raise Invalid.field("status", "must be pending, delivered, failed, gone or dropped")
    limit = _int_query(request, "limit", PAGE_SIZE_DEFAULT, 1, PAGE_SIZE_MAX)
    before_id = _int_query(request, "before_id", None, 1, BEFORE_ID_MAX)
    rows = await store.deliveries(request.app[pool_key], row["id"], status=status, limit=limit, before_id=before_id)
    items = [store.delivery_view(r) for r in rows]
    next_url = None
    if len(items) == limit:
        next_url = str(request.rel_url.update_query({"before_id": str(items[-1]["id"])}))
    return json_ok({"deliveries": items, "next": next_url})


@routes.post("/api/v1/callbacks/endpoints/{endpoint_id}/replay-failed")
async def replay_failed(request: web.Request) -> web.Response:
    row = await _endpoint_for(request, request.match_info["endpoint_id"])
    return json_ok(await service.replay_failed(request.app[pool_key], row["id"]))


@routes.get("/api/v1/callbacks/endpoints/{endpoint_id}/faults")
async def get_endpoint_faults(request: web.Request) -> web.Response:
    row = await _endpoint_for(request, request.match_info["endpoint_id"])
    return json_ok({"endpoint_id": row["id"], "outbound": store.endpoint_view(row)["faults"]})


@routes.put("/api/v1/callbacks/endpoints/{endpoint_id}/faults")
async def put_endpoint_faults(request: web.Request) -> web.Response:
    row = await _endpoint_for(request, request.match_info["endpoint_id"])
    return json_ok(await service.set_endpoint_faults(request.app[pool_key], row["id"], await _body(request)))


def _delivery_id(request: web.Request) -> int:
    text = request.match_info["delivery_id"]
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= DELIVERY_ID_MAX:
        raise NotFound(f"no delivery {text}", [{"field": "delivery_id", "problem": "not a delivery id"}])
    return int(text)


async def _delivery_for(request: web.Request) -> int:
    """The path's delivery id if the caller may see that delivery. Another
    employer's delivery is 404 "no delivery N", as an unknown one: it used
    to answer "no callback endpoint ep_...", naming the endpoint it belongs to."""
    await _authenticated(request)
    delivery_id = _delivery_id(request)
    unknown = NotFound(f"no delivery {delivery_id}", [{"field": "delivery_id", "problem": "unknown"}])
    row = await store.delivery(request.app[pool_key], delivery_id)
    if row is None:
        raise unknown
    try:
        await _endpoint_for(request, row["endpoint_id"])
    except NotFound:
        raise unknown from None
    return delivery_id


@routes.get("/api/v1/callbacks/deliveries/{delivery_id}")
async def get_delivery(request: web.Request) -> web.Response:
    _row, view = await service.delivery_with_attempts(request.app[pool_key], await _delivery_for(request))
    return json_ok(view)


@routes.post("/api/v1/callbacks/deliveries/{delivery_id}/replay")
async def replay_delivery(request: web.Request) -> web.Response:
    return json_ok(await service.replay_delivery(request.app[pool_key], await _delivery_for(request)))


# --------------------------------------------------------------- faults --


async def _partner(request: web.Request) -> str:
    """The path's partner id: 422 when it cannot be one, 404 when no partner has it."""
    partner_id = service.check_partner_id(request.match_info["partner_id"])
    await partners.require(request.app[pool_key], partner_id, request.app[settings_key])
    return partner_id


@routes.get("/api/v1/partners/{partner_id}/faults")
async def get_partner_faults(request: web.Request) -> web.Response:
    _require_admin(request)
    return json_ok(await service.partner_faults(request.app[pool_key], await _partner(request)))


@routes.put("/api/v1/partners/{partner_id}/faults")
async def put_partner_faults(request: web.Request) -> web.Response:
    _require_admin(request)
    partner_id = await _partner(request)
    return json_ok(await service.set_partner_faults(request.app[pool_key], partner_id, await _body(request)))


@routes.delete("/api/v1/partners/{partner_id}/faults")
async def delete_partner_faults(request: web.Request) -> web.Response:
    _require_admin(request)
    await service.set_partner_faults(request.app[pool_key], await _partner(request), {"inbound": {}, "outbound": {}})
    return web.Response(status=204)


# ---------------------------------------------------------- conformance --


def _window(request: web.Request, *, browsing: bool = False) -> tuple[dt.datetime | None, dt.datetime | None]:
    """`since` and `until`. Without `since`, the browsable page covers the
    WINDOW_HOURS_DEFAULT (24) hours up to `until` or now (its summary is read
    again for every page); an export covers every exchange, as it always did
    ("the whole report as a download")."""
    now = dt.datetime.now(dt.UTC)
    since, until = service.parse_window(request.query.get("since"), request.query.get("until"), now)
    if since is None and browsing:
        since = conformance.default_since(until, now)
    return since, until


@routes.get("/api/v1/partners/{partner_id}/conformance")
async def conformance_page(request: web.Request) -> web.Response:
    """Browse: the summary and one page of exchanges, newest first."""
    _require_admin(request)
    since, until = _window(request, browsing=True)
    partner_id = await _partner(request)  # a malformed window is a 422 whoever the partner is
    verdict = request.query.get("verdict") or None
    if verdict not in (None, "pass", "fail", "fault", "error"):
        raise Invalid.field("verdict", "must be pass, fail, fault or error")
    limit = _int_query(request, "limit", PAGE_SIZE_DEFAULT, 1, PAGE_SIZE_MAX)
    before_id = _int_query(request, "before_id", None, 1, BEFORE_ID_MAX)
    pool = request.app[pool_key]
    items = await conformance.exchanges(
        pool, partner_id, since=since, until=until, verdict_filter=verdict, limit=limit, before_id=before_id
    )
    window = {"since": since.isoformat(), **({"until": until.isoformat()} if until else {})}
    next_url = None
    if items and len(items) == limit:
        next_url = str(request.rel_url.update_query({"before_id": str(items[-1]["id"])}))
    return json_ok(
        {
            "partner_id": partner_id,
            "since": since.isoformat(),
            "until": until.isoformat() if until else None,
            "summary": await conformance.summary(pool, partner_id, since=since, until=until),
            "exchanges": items,
            "next": next_url,
            # The same window as this page, written out: without `since` an
            # export covers every exchange, and a relative `since` (24h) would
            # move by the time the link is followed.
            "export": {
                kind: str(request.rel_url.with_path(f"{request.path}.{kind}").with_query(window))
                for kind in ("json", "html")
            },
        }
    )


@routes.get("/api/v1/partners/{partner_id}/conformance.json")
async def conformance_json(request: web.Request) -> web.Response:
    _require_admin(request)
    since, until = _window(request)
    partner_id = await _partner(request)  # a malformed window is a 422 whoever the partner is
    data = await conformance.report(request.app[pool_key], partner_id, since=since, until=until)
    response = json_ok(data)
    response.headers["Content-Disposition"] = f'attachment; filename="conformance-{partner_id}.json"'
    return response


@routes.get("/api/v1/partners/{partner_id}/conformance.html")
async def conformance_html(request: web.Request) -> web.Response:
    _require_admin(request)
    since, until = _window(request)
    partner_id = await _partner(request)  # a malformed window is a 422 whoever the partner is
    data = await conformance.report(request.app[pool_key], partner_id, since=since, until=until)
    return web.Response(text=conformance.render_html(data), content_type="text/html", charset="utf-8")
