"""Campaigns over REST and gRPC against real PostgreSQL and NATS."""

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
from crm.marketing.v1 import campaign_pb2, marketing_service_pb2, marketing_service_pb2_grpc
from crm.marketing.v1 import events_pb2 as marketing_events
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event
from crm_platform.testing.rest import all_pages, listed_count

BUDGET = {"currency_code": "cny", "amount": "5000.5"}
SPRING: dict[str, object] = {
    "name": "  Spring   Launch ",
    "channel": "EMAIL",
    "budget": BUDGET,
    "start_date": "2026-03-01",
    "end_date": "2026-03-31",
}


@pytest.fixture
async def client(marketing: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(marketing) as c:
        yield c


async def _create(
    client: httpx.AsyncClient, tenant: Tenant, who: str, **changes: Any
) -> dict[str, Any]:
    r = await client.post("/v1/campaigns", json={**SPRING, **changes}, headers=tenant.auth(who))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def _count(client: httpx.AsyncClient, tenant: Tenant) -> int:
    return await listed_count(client, "/v1/campaigns", tenant.auth("admin"))


async def test_dealer_creates_draft_campaign_with_normalised_fields(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    campaign = await _create(client, tenant, "d1-rep")
    assert campaign["name"] == "Spring Launch"
    assert campaign["channel"] == "CAMPAIGN_CHANNEL_EMAIL"
    assert campaign["status"] == "CAMPAIGN_STATUS_DRAFT"
    assert campaign["budget"] == {"currency_code": "CNY", "amount": "5000.50"}
    assert (campaign["start_date"], campaign["end_date"]) == ("2026-03-01", "2026-03-31")
    assert campaign["owner_org_path"] == f"/{tenant.slug}/east/d1/"
    assert campaign["etag"]


async def test_campaign_is_visible_up_the_tree_but_not_to_siblings(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    campaign = await _create(client, tenant, "d1-rep", name="Dealer Event", channel="EVENT")
    path = f"/v1/campaigns/{campaign['id']}"
    for who in ("d1-rep", "hq-manager", "admin"):
        r = await client.get(path, headers=tenant.auth(who))
        assert r.status_code == 200, (who, r.text)
        assert r.json() == campaign
    r = await client.get(path, headers=tenant.auth("d2-rep"))
    assert r.status_code == 404  # not 403: a sibling must not learn the campaign exists
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["reason"] == "CAMPAIGN_NOT_FOUND"


async def test_other_tenant_cannot_read_campaign(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    campaign = await _create(client, tenant, "admin")
    r = await client.get(f"/v1/campaigns/{campaign['id']}", headers=other_tenant.auth("admin"))
    assert r.status_code == 404
    assert r.json()["reason"] == "CAMPAIGN_NOT_FOUND"


async def test_list_pages_through_visible_campaigns_newest_first(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = [(await _create(client, tenant, "d2-rep", name=f"Page {i}"))["id"] for i in range(3)]
    items = await all_pages(client, "/v1/campaigns", tenant.auth("d2-rep"))
    assert all(x["owner_org_path"].endswith("/d2/") for x in items)
    seen = [x["id"] for x in items]
    assert len(seen) == len(set(seen)) >= 3
    assert seen[:3] == created[::-1]


async def test_idempotency_key_returns_first_campaign(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = {**tenant.auth("d1-rep"), "Idempotency-Key": str(uuid.uuid4())}
    first = await client.post("/v1/campaigns", json=SPRING, headers=headers)
    before = await _count(client, tenant)
    second = await client.post("/v1/campaigns", json=SPRING, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert await _count(client, tenant) == before


def _with_budget(**budget: object) -> dict[str, object]:
    return {**SPRING, "budget": {**BUDGET, **budget}}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**SPRING, "name": ""}, "name"),
        ({**SPRING, "name": "x" * 201}, "name"),
        ({k: v for k, v in SPRING.items() if k != "name"}, "name"),
        ({**SPRING, "channel": "FAX"}, "channel"),
        ({**SPRING, "channel": ""}, "channel"),
        ({k: v for k, v in SPRING.items() if k != "budget"}, "budget"),
        (_with_budget(currency_code=""), "budget.currency_code"),
        (_with_budget(currency_code="C1Y"), "budget.currency_code"),
        (_with_budget(amount="lots"), "budget.amount"),
        (_with_budget(amount="-1"), "budget.amount"),
        (_with_budget(amount="10.005"), "budget.amount"),
        (_with_budget(amount="NaN"), "budget.amount"),
        (_with_budget(amount="1e16"), "budget.amount"),
        ({**SPRING, "start_date": ""}, "start_date"),
        ({**SPRING, "start_date": "2026-02-30"}, "start_date"),
        ({**SPRING, "start_date": "01/03/2026"}, "start_date"),
        ({**SPRING, "end_date": "20260331"}, "end_date"),
        ({**SPRING, "end_date": "２０２６-０３-３１"}, "end_date"),  # full-width digits
        ({**SPRING, "end_date": "2026-02-28"}, "end_date"),  # before start_date
        ({**SPRING, "colour": "red"}, "colour"),
        (_with_budget(colour="red"), "budget.colour"),
        ({**SPRING, "name": ["not", "a", "string"]}, "name"),
        (_with_budget(amount=5000), "budget.amount"),  # a JSON number, not a decimal string
        ({**SPRING, "budget": "5000 CNY"}, "budget"),
    ],
)
async def test_bad_campaign_gets_field_violation(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, object], field: str
) -> None:
    before = await _count(client, tenant)
    r = await client.post("/v1/campaigns", json=body, headers=tenant.auth("d1-rep"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert field in {v["field"] for v in problem["violations"]}, problem
    assert await _count(client, tenant) == before  # nothing written


async def test_every_violation_is_reported_at_once(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    r = await client.post(
        "/v1/campaigns",
        json={
            "name": " ",
            "channel": "FAX",
            "budget": {"currency_code": "12", "amount": "-5"},
            "start_date": "2026-04-01",
            "end_date": "2026-03-01",
        },
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 422
    problem = r.json()
    assert problem["reason"] == "CAMPAIGN_INVALID"
    assert {v["field"] for v in problem["violations"]} == {
        "name",
        "channel",
        "budget.currency_code",
        "budget.amount",
        "end_date",
    }


async def test_malformed_json_is_400(client: httpx.AsyncClient, tenant: Tenant) -> None:
    before = await _count(client, tenant)
    r = await client.post(
        "/v1/campaigns",
        content=b'{"name": "X",',
        headers={**tenant.auth("d1-rep"), "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["reason"] == "MALFORMED_JSON"
    assert "body" in {v["field"] for v in r.json()["violations"]}
    assert await _count(client, tenant) == before


async def test_malformed_id_is_field_violation(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.get("/v1/campaigns/not-a-uuid", headers=tenant.auth("admin"))
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "campaign_id"


def _violations(err: grpc.aio.AioRpcError) -> set[str]:
    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    return {v.field for v in bad.field_violations}


async def test_grpc_create_get_list_and_field_violations(
    marketing: Runtime, tenant: Tenant
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{marketing.grpc_port}") as channel:
        stub = marketing_service_pb2_grpc.CampaignServiceStub(channel)
        md = (("authorization", f"Bearer {tenant.tokens['d1-rep']}"),)
        ok = await stub.CreateCampaign(
            marketing_service_pb2.CreateCampaignRequest(
                campaign=campaign_pb2.Campaign(
                    name="Over gRPC",
                    channel=campaign_pb2.CAMPAIGN_CHANNEL_SMS,
                    budget=money_pb2.Money(currency_code="USD", units=1200, nanos=250_000_000),
                    start_date="2026-05-01",
                    end_date="2026-05-01",
                )
            ),
            metadata=md,
        )
        assert ok.owner_org_path.endswith("/d1/")
        assert ok.status == campaign_pb2.CAMPAIGN_STATUS_DRAFT
        assert (ok.budget.units, ok.budget.nanos) == (1200, 250_000_000)
        got = await stub.GetCampaign(
            marketing_service_pb2.GetCampaignRequest(id=ok.id), metadata=md
        )
        assert got == ok
        listed = await stub.ListCampaigns(
            marketing_service_pb2.ListCampaignsRequest(page_size=1000), metadata=md
        )
        assert ok.id in {c.id for c in listed.campaigns}

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateCampaign(
                marketing_service_pb2.CreateCampaignRequest(campaign=campaign_pb2.Campaign()),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _violations(err.value) == {
            "name",
            "channel",
            "budget.currency_code",
            "start_date",
            "end_date",
        }
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateCampaign(
                marketing_service_pb2.CreateCampaignRequest(
                    campaign=campaign_pb2.Campaign(
                        name="Mixed signs",
                        channel=campaign_pb2.CAMPAIGN_CHANNEL_SMS,
                        budget=money_pb2.Money(currency_code="USD", units=5, nanos=-1),
                        start_date="2026-05-01",
                        end_date="2026-05-02",
                    )
                ),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _violations(err.value) == {"budget.nanos"}
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetCampaign(
                marketing_service_pb2.GetCampaignRequest(id=ok.id),
                metadata=(("authorization", f"Bearer {tenant.tokens['d2-rep']}"),),
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_campaign_created_event_reaches_nats(
    client: httpx.AsyncClient, marketing: Runtime, tenant: Tenant
) -> None:
    campaign = await _create(client, tenant, "d1-rep", name="Announced")
    envelope, payload = await wait_for_event(
        marketing.settings.nats_url,
        marketing.settings.nats_namespace,
        "crm.marketing.campaign.created.v1",
        marketing_events.CampaignCreated,
        lambda p: p.campaign.id == campaign["id"],
    )
    assert envelope.producer == "marketing"
    assert payload.campaign.name == "Announced"
    assert payload.campaign.owner_org_path == campaign["owner_org_path"]
    assert payload.campaign.budget == money_pb2.Money(
        currency_code="CNY", units=5000, nanos=500_000_000
    )
