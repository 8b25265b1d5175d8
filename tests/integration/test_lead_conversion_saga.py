"""The lead conversion saga end to end: leads -> customers -> sales -> leads over real NATS
JetStream, through the public REST and gRPC APIs of all three services."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa

from conftest import Tenant, http_client
from crm.leads.v1 import conversion_pb2, lead_service_pb2, lead_service_pb2_grpc
from crm_platform.runtime import Runtime

pytestmark = pytest.mark.integration
WAIT = 20.0


def phone() -> str:
    return f"+86138{uuid.uuid4().int % 10**8:08d}"


async def capture(
    leads: Runtime, tenant: Tenant, who: str = "d1-rep", **fields: Any
) -> dict[str, Any]:
    body = {
        "full_name": "Li Lei",
        "phone": phone(),
        "company": f"Acme {uuid.uuid4().hex[:6]} 有限公司",
        "province": "Zhejiang",
        "city": "Hangzhou",
        **fields,
    }
    async with http_client(leads) as c:
        r = await c.post("/v1/leads", json=body, headers=tenant.auth(who))
        assert r.status_code in (200, 201), r.text
        return dict(r.json())


async def convert(
    leads: Runtime, tenant: Tenant, lead_id: str, who: str = "d1-rep", **body: Any
) -> httpx.Response:
    async with http_client(leads) as c:
        c.timeout = httpx.Timeout(WAIT + 10)
        return await c.post(
            f"/v1/leads/{lead_id}:convert",
            json={"wait_seconds": WAIT, **body},
            headers=tenant.auth(who),
        )


async def get_json(rt: Runtime, path: str, tenant: Tenant, who: str = "admin") -> httpx.Response:
    async with http_client(rt) as c:
        return await c.get(path, headers=tenant.auth(who))


@pytest.fixture
async def doomed_title(sales: Runtime) -> AsyncIterator[str]:
    """A sales-side rule the leads service cannot know: opportunities with this title are
    refused by the sales database, so the sales step fails and the saga compensates."""
    title = f"doomed-{uuid.uuid4().hex[:6]}"
    name = f"test_{title.replace('-', '_')}"
    async with sales.db.unit_of_work() as conn:
        await conn.execute(
            sa.text(
                f"ALTER TABLE opportunities ADD CONSTRAINT {name} "
                f"CHECK (title NOT LIKE '{title}%') NOT VALID"
            )
        )
    yield title
    async with sales.db.unit_of_work() as conn:
        await conn.execute(sa.text(f"ALTER TABLE opportunities DROP CONSTRAINT {name}"))


async def test_conversion_creates_customer_contact_and_opportunity(
    leads: Runtime, customers: Runtime, sales: Runtime, tenant: Tenant
) -> None:
    lead = await capture(leads, tenant, email="li.lei@example.com")
    r = await convert(
        leads,
        tenant,
        lead["id"],
        customer={"tax_id": f"913301{uuid.uuid4().int % 10**12:012d}"},
        contact={"title": "Purchasing"},
        opportunity={
            "title": "Fleet renewal",
            "amount": {"currency_code": "CNY", "amount": "250000.00"},
            "product": "Truck X",
            "close_date": "2031-03-31",
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["Crm-Conversion-Started"] == "true"
    assert r.headers["Location"] == f"/v1/lead-conversions/{r.json()['id']}"
    conversion = r.json()
    assert conversion["state"] == "CONVERSION_STATE_COMPLETED", conversion.get("failure")
    outcome = conversion["outcome"]
    assert outcome["customer_created"] and outcome["contact_created"]
    assert len(outcome["opportunity_ids"]) == 1

    got = (await get_json(leads, f"/v1/leads/{lead['id']}", tenant, "d1-rep")).json()
    assert got["status"] == "LEAD_STATUS_CONVERTED"
    assert got["conversion_id"] == conversion["id"]

    customer = await get_json(
        customers, f"/v1/customers/{outcome['customer_id']}", tenant, "d1-rep"
    )
    assert customer.status_code == 200, customer.text
    assert customer.json()["display_name"] == lead["company"]
    assert customer.json()["owner_org_id"] == tenant.units["d1"]["id"]
    opp = await get_json(sales, f"/v1/opportunities/{outcome['opportunity_ids'][0]}", tenant)
    assert opp.status_code == 200, opp.text
    body = opp.json()
    assert (body["title"], body["product"], body["lead_id"]) == (
        "Fleet renewal",
        "Truck X",
        lead["id"],
    )
    assert body["customer_id"] == outcome["customer_id"]
    assert body["contact_id"] == outcome["contact_id"]
    assert body["amount"] == {"currency_code": "CNY", "amount": "250000.00"}

    # A second request returns the same conversion; nothing runs twice.
    again = await convert(leads, tenant, lead["id"])
    assert again.status_code == 200
    assert again.headers["Crm-Conversion-Started"] == "false"
    assert again.json()["id"] == conversion["id"]
    # The sibling dealer does not see the conversion.
    hidden = await get_json(leads, f"/v1/lead-conversions/{conversion['id']}", tenant, "d2-rep")
    assert hidden.status_code == 404


async def test_one_opportunity_per_intent_and_matching_existing_customer(
    leads: Runtime, customers: Runtime, sales: Runtime, tenant: Tenant
) -> None:
    first = await capture(leads, tenant)
    # A repeat enquiry with another product is merged into the lead as a second intent.
    async with http_client(leads) as c:
        r = await c.post(
            "/v1/leads",
            json={
                "full_name": "Li Lei",
                "phone": first["phone"],
                "intent": {"product_interest": "Van Y", "campaign": "spring-expo"},
            },
            headers=tenant.auth("d1-rep"),
        )
        assert r.status_code in (200, 201), r.text
    r = await convert(leads, tenant, first["id"], opportunity_per_intent=True)
    conversion = r.json()
    assert conversion["state"] == "CONVERSION_STATE_COMPLETED", conversion.get("failure")
    ids = conversion["outcome"]["opportunity_ids"]
    assert len(ids) == 2
    products = set()
    for opp_id in ids:
        opp = (await get_json(sales, f"/v1/opportunities/{opp_id}", tenant)).json()
        assert opp["lead_intent_id"] and opp["conversion_id"] == conversion["id"]
        products.add(opp["product"])
    assert "Van Y" in products

    # Another lead of the same company and city matches that customer instead of a new one.
    other = await capture(leads, tenant, full_name="Han Meimei", company=first["company"])
    r = await convert(leads, tenant, other["id"])
    matched = r.json()
    assert matched["state"] == "CONVERSION_STATE_COMPLETED", matched
    assert matched["outcome"]["customer_id"] == conversion["outcome"]["customer_id"]
    assert not matched["outcome"]["customer_created"]
    assert matched["outcome"]["contact_created"]


async def test_customer_step_failure_returns_the_lead(
    leads: Runtime, customers: Runtime, sales: Runtime, tenant: Tenant
) -> None:
    # A customer of the sibling dealer: invisible to d1, so d1 cannot attach a lead to it.
    async with http_client(customers) as c:
        r = await c.post(
            "/v1/customers",
            json={"kind": "ORGANIZATION", "display_name": "Sibling Co"},
            headers=tenant.auth("d2-rep"),
        )
        assert r.status_code == 201, r.text
        sibling_customer = r.json()["id"]
    lead = await capture(leads, tenant)
    r = await convert(leads, tenant, lead["id"], customer={"customer_id": sibling_customer})
    failed = r.json()
    assert failed["state"] == "CONVERSION_STATE_FAILED", failed
    assert failed["failure"]["step"] == "customer"
    assert failed["failure"]["reason"] == "CUSTOMER_NOT_FOUND"
    got = (await get_json(leads, f"/v1/leads/{lead['id']}", tenant, "d1-rep")).json()
    assert got["status"] == "LEAD_STATUS_NEW"
    assert got["conversion_id"] == failed["id"]  # the lead reports why

    # The failed conversion does not block a corrected one.
    r = await convert(leads, tenant, lead["id"])
    assert r.headers["Crm-Conversion-Started"] == "true"
    assert r.json()["state"] == "CONVERSION_STATE_COMPLETED", r.json()
    assert r.json()["id"] != failed["id"]


async def test_sales_step_failure_is_compensated(
    leads: Runtime, customers: Runtime, sales: Runtime, tenant: Tenant, doomed_title: str
) -> None:
    lead = await capture(leads, tenant)
    r = await convert(leads, tenant, lead["id"], opportunity={"title": doomed_title})
    failed = r.json()
    assert failed["state"] == "CONVERSION_STATE_FAILED", failed
    assert failed["failure"]["step"] == "opportunity"
    assert failed["failure"]["reason"] == "OPPORTUNITY_REJECTED"
    got = (await get_json(leads, f"/v1/leads/{lead['id']}", tenant, "d1-rep")).json()
    assert got["status"] == "LEAD_STATUS_NEW"
    # No orphans: the customer the conversion created is gone again.
    async with http_client(customers) as c:
        listed = await c.get(
            "/v1/customers", params={"page_size": 1000}, headers=tenant.auth("admin")
        )
    assert lead["company"] not in {x["display_name"] for x in listed.json()["customers"]}
    async with http_client(sales) as c:
        opps = await c.get(
            "/v1/opportunities", params={"page_size": 1000}, headers=tenant.auth("admin")
        )
    assert lead["id"] not in {x["lead_id"] for x in opps.json()["opportunities"]}


async def test_concurrent_requests_start_one_conversion(
    leads: Runtime, customers: Runtime, sales: Runtime, tenant: Tenant
) -> None:
    lead = await capture(leads, tenant)
    answers = await asyncio.gather(*(convert(leads, tenant, lead["id"]) for _ in range(8)))
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    assert sum(a.headers["Crm-Conversion-Started"] == "true" for a in answers) == 1
    assert all(a.json()["state"] == "CONVERSION_STATE_COMPLETED" for a in answers)


async def test_bad_conversion_requests_are_refused(
    leads: Runtime, customers: Runtime, sales: Runtime, tenant: Tenant
) -> None:
    lead = await capture(leads, tenant)
    r = await convert(
        leads,
        tenant,
        lead["id"],
        customer={"phone": "12", "kind": "ALIEN", "customer_id": "nope"},
        contact={"email": "not-an-email"},
        opportunity={"amount": {"currency_code": "cny", "amount": "1.234"}, "close_date": "31/03"},
    )
    assert r.status_code == 422, r.text
    fields = {v["field"] for v in r.json()["violations"]}
    assert fields >= {
        "customer.phone",
        "customer.kind",
        "customer.customer_id",
        "contact.email",
        "opportunity.amount.amount",
        "opportunity.amount.currency_code",
        "opportunity.close_date",
    }, r.json()
    r = await convert(leads, tenant, lead["id"], surprise=True)
    assert r.status_code == 422
    # Nothing started: the lead is still NEW, without a conversion.
    got = (await get_json(leads, f"/v1/leads/{lead['id']}", tenant, "d1-rep")).json()
    assert got["status"] == "LEAD_STATUS_NEW" and got["conversion_id"] == ""
    # The sibling dealer cannot convert (or learn of) the lead.
    assert (await convert(leads, tenant, lead["id"], who="d2-rep")).status_code == 404
    missing = await get_json(leads, f"/v1/lead-conversions/{uuid.uuid4()}", tenant)
    assert missing.status_code == 404


async def test_convert_over_grpc(
    leads: Runtime, customers: Runtime, sales: Runtime, tenant: Tenant
) -> None:
    lead = await capture(leads, tenant)
    metadata = (("authorization", tenant.auth("d1-rep")["Authorization"]),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{leads.grpc_port}") as channel:
        stub = lead_service_pb2_grpc.LeadServiceStub(channel)
        started = await stub.ConvertLead(
            lead_service_pb2.ConvertLeadRequest(lead_id=lead["id"]), metadata=metadata
        )
        assert started.started
        done = await stub.GetLeadConversion(
            lead_service_pb2.GetLeadConversionRequest(id=started.conversion.id, wait_seconds=WAIT),
            metadata=metadata,
            timeout=WAIT + 5,
        )
        assert done.state == conversion_pb2.CONVERSION_STATE_COMPLETED, done
        assert done.outcome.customer_id and len(done.outcome.opportunity_ids) == 1
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ConvertLead(
                lead_service_pb2.ConvertLeadRequest(
                    lead_id=lead["id"], contact=conversion_pb2.ConversionContact(email="x@")
                ),
                metadata=metadata,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
