"""/openapi.json and the /docs page, as an integrator fetches them: the
callback, fault and conformance routes are there, with who may call them."""

from __future__ import annotations

import aiohttp

PARTNER_ROUTES = {
    "/api/v1/partners/{partner_id}/faults": {"get", "put", "delete"},
    "/api/v1/partners/{partner_id}/conformance": {"get"},
    "/api/v1/partners/{partner_id}/conformance.json": {"get"},
    "/api/v1/partners/{partner_id}/conformance.html": {"get"},
    "/api/v1/partners/{partner_id}/callbacks/endpoints": {"get", "post"},
}


async def test_the_served_spec_has_the_partner_routes_behind_the_admin_token(gateway_server):
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway_server.url + "/openapi.json") as response:
            spec = await response.json()
    for path, methods in PARTNER_ROUTES.items():
        assert set(spec["paths"][path]) == methods, path
        for op in spec["paths"][path].values():
            assert op["security"] == [{"adminToken": []}], path
    rotate = spec["paths"]["/api/v1/callbacks/endpoints/{endpoint_id}/rotate-secret"]["post"]
    assert rotate["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/EndpointWithSecret")
    assert "secret" in spec["components"]["schemas"]["EndpointWithSecret"]["required"]


async def test_the_docs_page_lists_the_callback_routes_and_their_credentials(gateway_server):
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway_server.url + "/docs") as response:
            page = await response.text()
    assert response.status == 200
    for path in (*PARTNER_ROUTES, "/api/v1/callbacks/deliveries/{delivery_id}/replay", "/api/v1/employers/{npp}/callbacks/endpoints"):
        assert f"<code>{path}</code>" in page, path
    assert "KANAL_ADMIN_TOKEN" in page and "the employer's API key" in page
    assert "<code>verdict</code> (pass | fail | fault | error)" in page  # query parameters with their values
    assert "src=" not in page and "http://" not in page.replace(gateway_server.url, "")  # nothing loaded from elsewhere
