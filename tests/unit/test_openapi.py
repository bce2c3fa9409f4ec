"""/openapi.json describes every callback, fault and conformance route, with
the credential each one takes, and its schemas admit what the code answers
(including the ISO 8583 exchanges of the conformance log) and nothing else."""

from __future__ import annotations

import datetime as dt
import json

import jsonschema_rs
import pytest

from gateway.callbacks import conformance
from gateway.callbacks import http as callback_routes
from gateway.http.openapi import build_spec


@pytest.fixture(scope="module")
def spec() -> dict:
    return build_spec()


def _validator(spec: dict, name: str):
    return jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


def test_every_callback_route_is_in_the_spec_and_nothing_else_under_its_tags(spec):
    served = {(r.method.lower(), r.path) for r in callback_routes.routes}
    described = {
        (method, path)
        for path, methods in spec["paths"].items()
        for method, op in methods.items()
        if set(op["tags"]) & {"callbacks", "faults", "conformance"}
    }
    assert served == described
    assert len(served) == 22


def test_each_route_names_the_credential_it_takes(spec):
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            schemes = [name for requirement in op.get("security", []) for name in requirement]
            if path.startswith("/api/v1/partners/"):
                assert schemes == ["adminToken"], (method, path)
            elif path.startswith("/api/v1/callbacks/"):
                assert schemes == ["apiKey", "adminToken"], (method, path)  # the endpoint's employer, or the admin
            elif "/callbacks/" in path:
                assert schemes == ["apiKey"], (method, path)
            if schemes:
                assert "401" in op["responses"], (method, path)
    assert spec["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"


def test_query_parameters_and_media_types_are_the_routes_own(spec):
    page = spec["paths"]["/api/v1/partners/{partner_id}/conformance"]["get"]
    params = {p["name"]: p for p in page["parameters"]}
    assert set(params) == {"partner_id", "since", "until", "verdict", "limit", "before_id"}
    assert params["verdict"]["schema"]["enum"] == ["pass", "fail", "fault", "error"]
    assert params["limit"]["schema"]["maximum"] == callback_routes.PAGE_SIZE_MAX
    deliveries = spec["paths"]["/api/v1/callbacks/endpoints/{endpoint_id}/deliveries"]["get"]
    assert {p["name"] for p in deliveries["parameters"]} == {"endpoint_id", "status", "limit", "before_id"}
    html_export = spec["paths"]["/api/v1/partners/{partner_id}/conformance.html"]["get"]
    assert list(html_export["responses"]["200"]["content"]) == ["text/html"]
    assert "application/problem+json" in html_export["responses"]["422"]["content"]
    deleted = spec["paths"]["/api/v1/partners/{partner_id}/faults"]["delete"]
    assert "content" not in deleted["responses"]["204"]


def _row(**values) -> dict:
    """A partner_exchanges row as both versions of exchange_view read it."""
    row = {
        "id": 7, "at": dt.datetime(2025, 9, 24, 3, 0, tzinfo=dt.UTC), "channel": "snap", "service_code": "24",
        "path": "/snap/v1.0/transfer-va/inquiry", "external_id": "123", "request_headers": json.dumps({"X-PARTNER-ID": "B"}),
        "request_body": "{}", "answered": True, "http_status": 200, "response_code": "2002400",
        "response_body": json.dumps({"responseCode": "2002400"}), "rule": None, "detail": None, "fault": None, "duration_ms": 1.234,
    }
    return {**row, **values}


def test_snap_and_iso8583_exchanges_fit_the_exchange_schema(spec):
    exchange = _validator(spec, "Exchange")
    snap = conformance.exchange_view(_row())
    iso = conformance.exchange_view(_row(
        channel="iso8583", service_code="payment", path="0200", http_status=None, response_code="13",
        response_body=json.dumps({"39": "13"}), rule="amount", detail="DE4 differs from the inquiry",
    ))
    for view in (snap, iso):
        errors = [e.message for e in exchange.iter_errors(view)]
        assert errors == [], (view, errors)
    # The members the ISO 8583 side adds, whether or not the view has them yet:
    iso.update(channel="iso8583", detail="DE4 differs from the inquiry")
    iso["response"]["http_status"] = None
    assert exchange.is_valid(iso)


def test_the_exchange_schema_refuses_what_the_code_never_answers(spec):
    exchange = _validator(spec, "Exchange")
    view = conformance.exchange_view(_row())
    assert not exchange.is_valid({**view, "verdict": "maybe"})
    assert not exchange.is_valid({**view, "channel": "fax"})
    assert not exchange.is_valid({**view, "surprise": 1})  # a member added in code must be added here too
