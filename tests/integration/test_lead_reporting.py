"""Cross-service flows through public APIs and real NATS: visibility across the dealer
tree, lead events feeding analytics, exactly-once under redelivery."""

from __future__ import annotations

import uuid

import nats
import pytest

from conftest import Tenant, http_client
from crm_platform.events import Namespace, parse_event
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_handled
from crm_platform.testing.harness import eventually

pytestmark = pytest.mark.integration


async def lead_total(analytics: Runtime, tenant: Tenant, who: str = "admin") -> int:
    async with http_client(analytics) as c:
        r = await c.get("/v1/reports/lead-counts", headers=tenant.auth(who))
        assert r.status_code == 200, r.text
        return int(r.json()["total"])


async def settled_total(
    leads: Runtime, analytics: Runtime, tenant: Tenant, who: str = "admin"
) -> int:
    """The report once analytics has consumed everything leads has written so far."""
    await wait_handled(
        leads,
        analytics,
        [
            ("analytics-lead-created", "crm.leads.lead.created.v1"),
            ("analytics-lead-batch-created", "crm.leads.lead_batch.created.v1"),
        ],
    )
    return await lead_total(analytics, tenant, who)


async def create_lead(
    leads: Runtime, tenant: Tenant, who: str, name: str = "Wang"
) -> dict[str, str]:
    async with http_client(leads) as c:
        r = await c.post(
            "/v1/leads",
            json={"full_name": name, "email": f"{uuid.uuid4().hex[:8]}@example.com"},
            headers=tenant.auth(who),
        )
        assert r.status_code == 201, r.text
        return dict(r.json())


async def test_dealer_lead_visible_to_hq_and_dealer_not_to_sibling(
    leads: Runtime, tenant: Tenant
) -> None:
    lead = await create_lead(leads, tenant, "d1-rep")
    async with http_client(leads) as c:
        for who in ("d1-rep", "hq-manager", "admin"):
            r = await c.get(f"/v1/leads/{lead['id']}", headers=tenant.auth(who))
            assert r.status_code == 200, (who, r.text)
        r = await c.get(f"/v1/leads/{lead['id']}", headers=tenant.auth("d2-rep"))
        assert r.status_code == 404  # not 403: existence does not leak
        listed = await c.get("/v1/leads", params={"page_size": 1000}, headers=tenant.auth("d2-rep"))
        assert lead["id"] not in {x["id"] for x in listed.json()["leads"]}


async def test_lead_event_updates_analytics_counts(
    leads: Runtime, analytics: Runtime, tenant: Tenant
) -> None:
    before_hq = await settled_total(leads, analytics, tenant)
    before_d2 = await lead_total(analytics, tenant, "d2-rep")
    await create_lead(leads, tenant, "d1-rep")

    async def counted() -> None:
        assert await lead_total(analytics, tenant) == before_hq + 1

    await eventually(counted)
    # The sibling dealer's report does not move: analytics applies the same visibility.
    assert await lead_total(analytics, tenant, "d2-rep") == before_d2


async def test_redelivered_event_is_applied_once(
    leads: Runtime, analytics: Runtime, tenant: Tenant, nats_url: str
) -> None:
    before = await settled_total(leads, analytics, tenant)
    await create_lead(leads, tenant, "d1-rep", name="Redelivered")

    async def counted() -> None:
        assert await lead_total(analytics, tenant) == before + 1

    await eventually(counted)
    # Publish the newest lead event again under a new Nats-Msg-Id, as a relay would after
    # the de-duplication window: JetStream delivers it, the inbox must drop it.
    ns = Namespace(analytics.settings.nats_namespace)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        last = await js.get_last_msg(
            ns.stream("CRM_LEADS"), ns.subject("crm.leads.lead.created.v1")
        )
        event = parse_event(last.data or b"")
        assert event.payload.lead.full_name == "Redelivered"  # type: ignore[attr-defined]
        await js.publish(
            last.subject or "", last.data or b"", headers={"Nats-Msg-Id": f"replay-{uuid.uuid4()}"}
        )
    finally:
        await nc.close()

    assert await settled_total(leads, analytics, tenant) == before + 1


async def test_imported_leads_reach_analytics_in_batch_events(
    leads: Runtime, analytics: Runtime, tenant: Tenant
) -> None:
    before_hq = await settled_total(leads, analytics, tenant)
    before_d1 = await lead_total(analytics, tenant, "d1-rep")
    before_d2 = await lead_total(analytics, tenant, "d2-rep")
    rows = "\n".join(f"Imported {i},{uuid.uuid4().hex[:10]}@example.com" for i in range(3))
    async with http_client(leads) as c:
        r = await c.post(
            "/v1/lead-imports",
            content=f"full_name,email\n{rows}\n".encode(),
            headers={**tenant.auth("d1-rep"), "Content-Type": "text/csv"},
        )
        assert r.status_code == 202, r.text

    async def counted() -> None:
        assert await lead_total(analytics, tenant) == before_hq + 3

    await eventually(counted)
    assert await lead_total(analytics, tenant, "d1-rep") == before_d1 + 3
    assert await lead_total(analytics, tenant, "d2-rep") == before_d2
