"""Opportunities over REST and gRPC against real PostgreSQL and NATS."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conftest import Tenant, http_client
from crm.common.v1 import money_pb2
from crm.sales.v1 import events_pb2, opportunity_pb2, sales_service_pb2, sales_service_pb2_grpc
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event
from crm_platform.testing.rest import all_pages, assert_subtree_only, listed_count

EVENT_TYPE = "crm.sales.opportunity.created.v1"


@pytest.fixture
async def client(sales: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(sales) as c:
        yield c


def opportunity(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Fleet of 12 trucks",
        "amount": {"currency_code": "CNY", "amount": "12345.67"},
    }
    return {**body, **overrides}


async def create(client: httpx.AsyncClient, tenant: Tenant, who: str, **fields: Any) -> Any:
    r = await client.post("/v1/opportunities", json=opportunity(**fields), headers=tenant.auth(who))
    assert r.status_code == 201, r.text
    return r.json()


async def visible_count(client: httpx.AsyncClient, tenant: Tenant) -> int:
    return await listed_count(client, "/v1/opportunities", tenant.auth("admin"))


async def test_dealer_creates_opportunity(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer_id, lead_id = str(uuid.uuid4()), str(uuid.uuid4())
    opp = await create(
        client,
        tenant,
        "d1-rep",
        title="  Ｆｌｅｅｔ   renewal ",
        customer_id=customer_id,
        lead_id=lead_id,
        amount={"currency_code": "CNY", "amount": "1234567.5"},
        stage="PROPOSAL",
        close_date="2030-06-30",
    )
    assert opp["title"] == "Fleet renewal"
    assert opp["owner_org_path"] == f"/{tenant.slug}/east/d1/"
    assert opp["customer_id"] == customer_id
    assert opp["lead_id"] == lead_id
    assert opp["contact_id"] == ""
    assert opp["amount"] == {"currency_code": "CNY", "amount": "1234567.50"}
    assert opp["stage"] == "OPPORTUNITY_STAGE_PROPOSAL"
    assert opp["close_date"] == "2030-06-30"
    r = await client.get(f"/v1/opportunities/{opp['id']}", headers=tenant.auth("d1-rep"))
    assert r.status_code == 200
    assert r.json() == opp


async def test_defaults_to_qualification_without_close_date(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    opp = await create(client, tenant, "d1-rep", amount={"currency_code": "USD", "amount": "0"})
    assert opp["stage"] == "OPPORTUNITY_STAGE_QUALIFICATION"
    assert opp["close_date"] == ""
    assert opp["amount"] == {"currency_code": "USD", "amount": "0.00"}


async def test_visible_to_hq_not_to_sibling_dealer(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    opp = await create(client, tenant, "d1-rep")
    await assert_subtree_only(
        client,
        "/v1/opportunities",
        opp["id"],
        readers=[tenant.auth(who) for who in ("d1-rep", "hq-manager", "admin")],
        sibling=tenant.auth("d2-rep"),
        reason="OPPORTUNITY_NOT_FOUND",
    )


async def test_other_tenant_cannot_read_opportunity(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    opp = await create(client, tenant, "admin")
    r = await client.get(f"/v1/opportunities/{opp['id']}", headers=other_tenant.auth("admin"))
    assert r.status_code == 404
    assert r.json()["reason"] == "OPPORTUNITY_NOT_FOUND"


async def test_list_pages_through_visible_opportunities(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = [(await create(client, tenant, "d2-rep", title=f"Page {i}"))["id"] for i in range(3)]
    items = await all_pages(client, "/v1/opportunities", tenant.auth("d2-rep"))
    assert all(x["owner_org_path"].endswith("/d2/") for x in items)
    seen = [x["id"] for x in items]
    assert len(seen) == len(set(seen)) >= 3
    assert seen[:3] == created[::-1]  # newest first


async def test_idempotency_key_returns_first_opportunity(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    before = await visible_count(client, tenant)
    headers = {**tenant.auth("d1-rep"), "Idempotency-Key": str(uuid.uuid4())}
    first = await client.post("/v1/opportunities", json=opportunity(), headers=headers)
    second = await client.post("/v1/opportunities", json=opportunity(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert await visible_count(client, tenant) == before + 1


def money(amount: object, currency: object = "CNY") -> dict[str, object]:
    return {"currency_code": currency, "amount": amount}


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        (opportunity(title=""), "title", 422),
        (opportunity(title="   "), "title", 422),
        (opportunity(title="x" * 201), "title", 422),
        (opportunity(title=["not", "a", "string"]), "title", 422),
        ({"title": "No amount"}, "amount", 422),
        (opportunity(amount=money("-1")), "amount.amount", 422),
        (opportunity(amount=money("12.345")), "amount.amount", 422),
        (opportunity(amount=money("ten")), "amount.amount", 422),
        (opportunity(amount=money("NaN")), "amount.amount", 422),
        (opportunity(amount=money("Infinity")), "amount.amount", 422),
        (opportunity(amount=money("1e16")), "amount.amount", 422),
        (opportunity(amount=money(12.5)), "amount.amount", 422),
        (opportunity(amount=money("1", "cny")), "amount.currency_code", 422),
        (opportunity(amount=money("1", "C1Y")), "amount.currency_code", 422),
        (opportunity(amount=money("1", "YUAN")), "amount.currency_code", 422),
        (opportunity(amount={**money("1"), "nanos": 5}), "amount.nanos", 422),
        (opportunity(stage="CLOSED"), "stage", 422),
        (opportunity(stage="UNSPECIFIED"), "stage", 422),
        (opportunity(stage=3), "stage", 422),
        (opportunity(close_date="2030-02-30"), "close_date", 422),
        (opportunity(close_date="20300101"), "close_date", 422),
        (opportunity(close_date="30/06/2030"), "close_date", 422),
        (opportunity(customer_id="cust-1"), "customer_id", 422),
        (opportunity(contact_id="12345"), "contact_id", 422),
        (opportunity(lead_id=7), "lead_id", 422),
        (opportunity(colour="red"), "colour", 422),
        (b'{"title": "X",', "body", 400),
    ],
)
async def test_bad_opportunity_gets_field_violation(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any] | bytes, field: str, status: int
) -> None:
    before = await visible_count(client, tenant)
    headers = {**tenant.auth("d1-rep"), "Content-Type": "application/json"}
    if isinstance(body, bytes):
        r = await client.post("/v1/opportunities", content=body, headers=headers)
    else:
        r = await client.post("/v1/opportunities", json=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert field in {v["field"] for v in problem["violations"]}, problem
    assert await visible_count(client, tenant) == before  # nothing written


async def test_every_bad_field_is_reported_at_once(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    r = await client.post(
        "/v1/opportunities",
        json=opportunity(
            title="", amount=money("-5", "cny"), stage="WHENEVER", close_date="soon", lead_id="x"
        ),
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 422
    problem = r.json()
    assert problem["reason"] == "OPPORTUNITY_INVALID"
    assert {v["field"] for v in problem["violations"]} == {
        "title",
        "amount.amount",
        "amount.currency_code",
        "stage",
        "close_date",
        "lead_id",
    }


async def test_malformed_id_is_field_violation(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.get("/v1/opportunities/not-a-uuid", headers=tenant.auth("admin"))
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "opportunity_id"


async def test_grpc_create_reports_field_violations(sales: Runtime, tenant: Tenant) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sales.grpc_port}") as channel:
        stub = sales_service_pb2_grpc.OpportunityServiceStub(channel)
        md = (("authorization", f"Bearer {tenant.tokens['d1-rep']}"),)
        ok = await stub.CreateOpportunity(
            sales_service_pb2.CreateOpportunityRequest(
                opportunity=opportunity_pb2.Opportunity(
                    title="G",
                    amount=money_pb2.Money(currency_code="EUR", units=99, nanos=990_000_000),
                )
            ),
            metadata=md,
        )
        assert ok.owner_org_path.endswith("/d1/")
        assert ok.stage == opportunity_pb2.OPPORTUNITY_STAGE_QUALIFICATION
        got = await stub.GetOpportunity(
            sales_service_pb2.GetOpportunityRequest(id=ok.id), metadata=md
        )
        assert got.amount == money_pb2.Money(currency_code="EUR", units=99, nanos=990_000_000)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateOpportunity(
                sales_service_pb2.CreateOpportunityRequest(
                    opportunity=opportunity_pb2.Opportunity(
                        title="G",
                        # A tenth of a cent: NUMERIC(18,2) cannot hold it.
                        amount=money_pb2.Money(currency_code="EUR", units=1, nanos=1_000_000),
                        stage=99,  # type: ignore[arg-type]
                    )
                ),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(err.value)
        assert status is not None
        bad = error_details_pb2.BadRequest()
        assert any(d.Unpack(bad) for d in status.details)
        assert {v.field for v in bad.field_violations} == {"amount.nanos", "stage"}
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateOpportunity(
                sales_service_pb2.CreateOpportunityRequest(
                    opportunity=opportunity_pb2.Opportunity(title="No amount")
                ),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_created_event_is_published(
    client: httpx.AsyncClient, sales: Runtime, tenant: Tenant
) -> None:
    opp = await create(client, tenant, "d1-rep", title="Evented")
    envelope, payload = await wait_for_event(
        sales.settings.nats_url,
        sales.settings.nats_namespace,
        EVENT_TYPE,
        events_pb2.OpportunityCreated,
        lambda p: p.opportunity.id == opp["id"],
    )
    assert envelope.type == EVENT_TYPE
    assert envelope.producer == "sales"
    assert envelope.tenant_id == tenant.id
    assert envelope.org_path == f"/{tenant.slug}/east/d1/"
    assert payload.opportunity.title == "Evented"


async def test_list_filters_by_customer_within_visibility(
    client: httpx.AsyncClient, sales: Runtime, tenant: Tenant
) -> None:
    cid = str(uuid.uuid4())
    mine = await create(client, tenant, "d1-rep", customer_id=cid)
    await create(client, tenant, "d2-rep", customer_id=cid)  # sibling dealer's
    await create(client, tenant, "d1-rep", customer_id=str(uuid.uuid4()))
    r = await client.get(
        "/v1/opportunities", params={"customer_id": cid}, headers=tenant.auth("d1-rep")
    )
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()["opportunities"]] == [mine["id"]]
    r = await client.get(
        "/v1/opportunities", params={"customer_id": "x"}, headers=tenant.auth("d1-rep")
    )
    assert r.status_code == 422
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sales.grpc_port}") as channel:
        stub = sales_service_pb2_grpc.OpportunityServiceStub(channel)
        resp = await stub.ListOpportunities(
            sales_service_pb2.ListOpportunitiesRequest(customer_id=cid),
            metadata=(("authorization", f"Bearer {tenant.tokens['admin']}"),),
        )
    assert len(resp.opportunities) == 2
    assert {o.customer_id for o in resp.opportunities} == {cid}
