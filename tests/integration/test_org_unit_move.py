"""A dealer moved to another region (the directory's ``:move``) takes along what it owns in
every service, and its users' tokens, issued before the move, follow it: the new region
sees the dealer's records, the old one no longer does."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from conftest import Tenant, http_client, make_tenant
from crm_platform.org_moves import MOVED
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_handled
from crm_platform.testing.harness import eventually

pytestmark = pytest.mark.integration
ORGANIZATION = {"kind": "ORGANIZATION", "display_name": "Acme"}


async def _post(rt: Runtime, tenant: Tenant, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http_client(rt) as c:
        r = await c.post(path, json=body, headers=tenant.auth("d1-rep"))
        assert r.status_code == 201, r.text
        return dict(r.json())


async def _created(rt: Runtime, tenant: Tenant, path: str, body: dict[str, Any]) -> str:
    return f"{path}/{(await _post(rt, tenant, path, body))['id']}"


async def _lead_total(analytics: Runtime, tenant: Tenant, who: str) -> int:
    async with http_client(analytics) as c:
        r = await c.get("/v1/reports/lead-counts", headers=tenant.auth(who))
        assert r.status_code == 200, r.text
        return int(r.json()["total"])


async def test_a_moved_dealer_takes_its_records_and_its_users_along(
    directory: Runtime,
    leads: Runtime,
    customers: Runtime,
    sales: Runtime,
    service_desk: Runtime,
    marketing: Runtime,
    analytics: Runtime,
) -> None:
    t = await make_tenant(directory)
    async with httpx.AsyncClient(base_url=t.directory_url, timeout=10) as c:
        r = await c.post(
            "/v1/org-units",
            json={
                "parent_id": t.units["hq"]["id"],
                "kind": "REGION",
                "code": "west",
                "display_name": "West",
            },
            headers=t.auth("admin"),
        )
        assert r.status_code == 201, r.text
        t.units["west"] = r.json()
    await t.add_user("west-manager", "west", ["manager"])
    await t.add_user("east-manager", "east", ["manager"])

    # d1's records, created with the token d1-rep will keep using after the move.
    campaign = {
        "name": "Spring",
        "channel": "EMAIL",
        "budget": {"currency_code": "CNY", "amount": "100.00"},
        "start_date": "2026-03-01",
        "end_date": "2026-03-31",
    }
    opportunity = {"title": "Trucks", "amount": {"currency_code": "CNY", "amount": "10.00"}}
    records = [
        (leads, await _created(leads, t, "/v1/leads", {"full_name": "Li", "phone": "13900139000"})),
        (customers, await _created(customers, t, "/v1/customers", ORGANIZATION)),
        (sales, await _created(sales, t, "/v1/opportunities", opportunity)),
        (service_desk, await _created(service_desk, t, "/v1/tickets", {"subject": "Engine"})),
        (marketing, await _created(marketing, t, "/v1/campaigns", campaign)),
    ]
    await wait_handled(leads, analytics, [("analytics-lead-created", "crm.leads.lead.created.v1")])
    assert await _lead_total(analytics, t, "east-manager") == 1

    async with httpx.AsyncClient(base_url=t.directory_url, timeout=10) as c:
        r = await c.post(
            f"/v1/org-units/{t.units['d1']['id']}:move",
            json={"new_parent_id": t.units["west"]["id"]},
            headers=t.auth("admin"),
        )
        assert r.status_code == 200, r.text
    new_path = f"/{t.slug}/west/d1/"
    for service, name in (
        (leads, "leads"),
        (customers, "customers"),
        (sales, "sales"),
        (service_desk, "service-desk"),
        (marketing, "marketing"),
        (analytics, "analytics"),
    ):
        await wait_handled(directory, service, [(f"{name}-org-unit-moved-paths", MOVED)])

    async def moved() -> None:
        for service, path in records:
            async with http_client(service) as c:
                for who in ("west-manager", "d1-rep"):  # d1-rep: a token from before the move
                    r = await c.get(path, headers=t.auth(who))
                    assert r.status_code == 200, (path, who, r.text)
                    assert r.json()["owner_org_path"] == new_path, (path, r.json())
                r = await c.get(path, headers=t.auth("east-manager"))
                assert r.status_code == 404, (path, r.text)

    await eventually(moved)
    assert await _lead_total(analytics, t, "west-manager") == 1
    assert await _lead_total(analytics, t, "east-manager") == 0
    # What the old token creates now lands under the unit's new path too.
    later = await _post(leads, t, "/v1/leads", {"full_name": "Zhao", "phone": "13900139001"})
    assert later["owner_org_path"] == new_path
