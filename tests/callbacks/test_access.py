"""Who may read what on the callbacks API: the employer's key for its own
endpoints and deliveries, or the admin token."""

from __future__ import annotations

from tests.callbacks.test_delivery import _employer_endpoint


async def test_another_employers_delivery_is_unknown_without_naming_its_endpoint(callback_gateway, api, bills, make_receiver):
    receiver = await make_receiver()
    employer, api_key, kpjs, endpoint = await _employer_endpoint(api, bills, receiver, events=("bill.created",))
    await bills.report(employer, api_key, kpjs, bills.default_period())
    await receiver.wait_for(lambda: receiver.ids(200))
    [delivery] = (await api("GET", f"/api/v1/callbacks/endpoints/{endpoint['id']}/deliveries", token=api_key))["deliveries"]

    _other, other_key, _ = await bills.create_employer(workers=1)
    for method, path in [("GET", f"/api/v1/callbacks/deliveries/{delivery['id']}"),
                         ("POST", f"/api/v1/callbacks/deliveries/{delivery['id']}/replay")]:
        refused = await api(method, path, token=other_key, expect=404)
        assert refused["detail"] == f"no delivery {delivery['id']}"
        assert endpoint["id"] not in str(refused)
    # Nothing was replayed.
    assert (await api("GET", f"/api/v1/callbacks/deliveries/{delivery['id']}", token=api_key))["replays"] == 0
