"""Customer 360 against real customers, sales, service-desk and leads servers."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conftest import Tenant, http_client
from crm.customers.v1 import customer_service_pb2, customer_service_pb2_grpc
from crm.leads.v1 import lead_service_pb2, lead_service_pb2_grpc
from crm_platform.runtime import Runtime


@pytest.fixture
async def client(customers: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(customers) as c:
        yield c


@contextmanager
def targets(customers: Runtime, **update: Any) -> Iterator[None]:
    """The shared customers instance is started before sales, service-desk and leads: point
    its 360 targets at them (or elsewhere) for one test."""
    before = customers.settings
    customers.settings = before.model_copy(update=update)
    try:
        yield
    finally:
        customers.settings = before


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def post(base: Runtime, path: str, tenant: Tenant, body: dict[str, Any]) -> Any:
    async with http_client(base) as c:
        r = await c.post(path, json=body, headers=tenant.auth("d1-rep"))
    assert r.status_code == 201, r.text
    return r.json()


async def make_customer(client: httpx.AsyncClient, tenant: Tenant) -> Any:
    r = await client.post(
        "/v1/customers",
        json={"kind": "ORGANIZATION", "display_name": "Acme 360", "contacts": [{"full_name": "A"}]},
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 201, r.text
    return r.json()


async def test_360_has_opportunities_tickets_and_timeline(
    client: httpx.AsyncClient,
    customers: Runtime,
    sales: Runtime,
    service_desk: Runtime,
    leads: Runtime,
    tenant: Tenant,
) -> None:
    cust = await make_customer(client, tenant)
    opp = await post(
        sales,
        "/v1/opportunities",
        tenant,
        {
            "title": "Trucks",
            "customer_id": cust["id"],
            "amount": {"currency_code": "CNY", "amount": "10.00"},
        },
    )
    won = await post(
        sales,
        "/v1/opportunities",
        tenant,
        {
            "title": "First order",
            "customer_id": cust["id"],
            "stage": "WON",
            "amount": {"currency_code": "CNY", "amount": "99.00"},
        },
    )
    ticket = await post(
        service_desk, "/v1/tickets", tenant, {"subject": "Broken", "customer_id": cust["id"]}
    )
    with targets(
        customers,
        sales_grpc_target=f"127.0.0.1:{sales.grpc_port}",
        service_desk_grpc_target=f"127.0.0.1:{service_desk.grpc_port}",
        leads_grpc_target=f"127.0.0.1:{leads.grpc_port}",
        customer360_deadline_seconds=5.0,
    ):
        r = await client.get(f"/v1/customers/{cust['id']}:view360", headers=tenant.auth("d1-rep"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["partial"] == []
        assert body["customer"]["id"] == cust["id"]
        assert len(body["customer"]["contacts"]) == 1
        assert [o["id"] for o in body["open_opportunities"]] == [opp["id"]]
        # A won opportunity is an order, not an open opportunity.
        assert [o["id"] for o in body["recent_orders"]] == [won["id"]]
        assert [t["id"] for t in body["open_tickets"]] == [ticket["id"]]
        refs = [e["ref"] for e in body["timeline"]]
        assert refs[:3] == [ticket["id"], won["id"], opp["id"]]  # newest first
        kinds = {e["ref"]: e["kind"] for e in body["timeline"]}
        assert kinds[won["id"]] == "order_won"
        times = [e["time"] for e in body["timeline"]]
        assert len(times) <= 50
        # A sibling dealer cannot see the customer at all.
        r = await client.get(f"/v1/customers/{cust['id']}:view360", headers=tenant.auth("d2-rep"))
        assert r.status_code == 404


async def test_unreachable_sales_gives_partial_not_error(
    client: httpx.AsyncClient,
    customers: Runtime,
    service_desk: Runtime,
    leads: Runtime,
    tenant: Tenant,
) -> None:
    cust = await make_customer(client, tenant)
    ticket = await post(
        service_desk, "/v1/tickets", tenant, {"subject": "Still broken", "customer_id": cust["id"]}
    )
    with targets(
        customers,
        sales_grpc_target=f"127.0.0.1:{closed_port()}",
        service_desk_grpc_target=f"127.0.0.1:{service_desk.grpc_port}",
        leads_grpc_target=f"127.0.0.1:{leads.grpc_port}",
        customer360_deadline_seconds=1.0,
    ):
        r = await client.get(f"/v1/customers/{cust['id']}:view360", headers=tenant.auth("d1-rep"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["partial"] == ["opportunities"]
    assert body["partial_reasons"]["opportunities"]
    assert body["open_opportunities"] == []
    assert [t["id"] for t in body["open_tickets"]] == [ticket["id"]]


async def test_grpc_360_matches_the_rest_view(
    client: httpx.AsyncClient,
    customers: Runtime,
    sales: Runtime,
    service_desk: Runtime,
    leads: Runtime,
    tenant: Tenant,
) -> None:
    cust = await make_customer(client, tenant)
    opp = await post(
        sales,
        "/v1/opportunities",
        tenant,
        {
            "title": "Vans",
            "customer_id": cust["id"],
            "amount": {"currency_code": "CNY", "amount": "20.00"},
        },
    )
    ticket = await post(
        service_desk, "/v1/tickets", tenant, {"subject": "Noisy", "customer_id": cust["id"]}
    )
    md = (("authorization", f"Bearer {tenant.tokens['d1-rep']}"),)
    request = customer_service_pb2.GetCustomer360Request(id=cust["id"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{customers.grpc_port}") as channel:
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        with targets(
            customers,
            sales_grpc_target=f"127.0.0.1:{sales.grpc_port}",
            service_desk_grpc_target=f"127.0.0.1:{service_desk.grpc_port}",
            leads_grpc_target=f"127.0.0.1:{leads.grpc_port}",
            customer360_deadline_seconds=5.0,
        ):
            view = await stub.GetCustomer360(request, metadata=md)
            rest = (
                await client.get(
                    f"/v1/customers/{cust['id']}:view360", headers=tenant.auth("d1-rep")
                )
            ).json()
            # A sibling dealer cannot see the customer at all.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetCustomer360(
                    request, metadata=(("authorization", f"Bearer {tenant.tokens['d2-rep']}"),)
                )
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert not view.partial
        assert list(view.missing_parts) == []
        assert view.customer.id == cust["id"]
        assert len(view.customer.contacts) == 1
        assert [o.id for o in view.open_opportunities] == [opp["id"]]
        assert view.open_opportunities[0].title == "Vans"
        assert [t.id for t in view.open_tickets] == [ticket["id"]]
        assert [e.ref for e in view.timeline][:2] == [ticket["id"], opp["id"]]
        assert view.timeline[0].kind == "ticket_created"
        # The same assembly behind both transports.
        assert [e.ref for e in view.timeline] == [e["ref"] for e in rest["timeline"]]
        assert [o.id for o in view.open_opportunities] == [
            o["id"] for o in rest["open_opportunities"]
        ]

        # Sales unreachable: still an answer, with the part named.
        with targets(
            customers,
            sales_grpc_target=f"127.0.0.1:{closed_port()}",
            service_desk_grpc_target=f"127.0.0.1:{service_desk.grpc_port}",
            leads_grpc_target=f"127.0.0.1:{leads.grpc_port}",
            customer360_deadline_seconds=1.0,
        ):
            view = await stub.GetCustomer360(request, metadata=md)
        assert view.partial
        assert list(view.missing_parts) == ["opportunities"]
        assert view.partial_reasons["opportunities"]
        assert list(view.open_opportunities) == []
        assert [t.id for t in view.open_tickets] == [ticket["id"]]


# Campaign touches and score: the leads converted into the customer, from the leads service.

CONVERT_WAIT = 20.0


def new_phone() -> str:
    return f"+86138{uuid.uuid4().int % 10**8:08d}"


async def capture(leads: Runtime, tenant: Tenant, who: str, **fields: Any) -> Any:
    """A lead (201) or an enquiry merged into the lead with the same phone (200)."""
    body = {"full_name": "Wang Fang", "province": "Zhejiang", "city": "Hangzhou", **fields}
    body.setdefault("phone", new_phone())
    async with http_client(leads) as c:
        r = await c.post("/v1/leads", json=body, headers=tenant.auth(who))
    assert r.status_code in (200, 201), r.text
    return r.json()


async def convert_into(
    leads: Runtime, tenant: Tenant, who: str, lead_id: str, customer_id: str
) -> None:
    """The real saga (leads -> customers -> sales -> leads over NATS), into this customer."""
    async with http_client(leads) as c:
        c.timeout = httpx.Timeout(CONVERT_WAIT + 10)
        r = await c.post(
            f"/v1/leads/{lead_id}:convert",
            json={"wait_seconds": CONVERT_WAIT, "customer": {"customer_id": customer_id}},
            headers=tenant.auth(who),
        )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "CONVERSION_STATE_COMPLETED", r.json().get("failure")


async def lead_doc(leads: Runtime, tenant: Tenant, lead_id: str) -> Any:
    """The lead with its intents and score, as the leads service has it."""
    async with http_client(leads) as c:
        r = await c.get(f"/v1/leads/{lead_id}", headers=tenant.auth("hq-manager"))
    assert r.status_code == 200, r.text
    return r.json()


def expected_touches(docs: list[Any]) -> list[tuple[str, str, str, str]]:
    """(campaign, lead_id, intent_id, time) of every intent with a campaign, newest first."""
    touches = [
        (i["campaign"], d["id"], i["id"], i["occur_time"])
        for d in docs
        for i in d["intents"]
        if i["campaign"]
    ]
    return sorted(touches, key=lambda t: t[3], reverse=True)


def expected_score(docs: list[Any]) -> dict[str, Any]:
    # Highest score; a tie goes to the newest lead (UUIDv7 ids sort by creation).
    best = max(docs, key=lambda d: (d["score"], d["id"]))
    return {"score": best["score"], "grade": best["grade"], "lead_id": best["id"]}


def all_targets(
    customers: Runtime, sales: Runtime, service_desk: Runtime, leads_target: str
) -> AbstractContextManager[None]:
    return targets(
        customers,
        sales_grpc_target=f"127.0.0.1:{sales.grpc_port}",
        service_desk_grpc_target=f"127.0.0.1:{service_desk.grpc_port}",
        leads_grpc_target=leads_target,
        customer360_deadline_seconds=5.0,
    )


async def test_360_has_campaign_touches_and_score_of_visible_converted_leads(
    client: httpx.AsyncClient,
    customers: Runtime,
    sales: Runtime,
    service_desk: Runtime,
    leads: Runtime,
    tenant: Tenant,
) -> None:
    cust = await make_customer(client, tenant)  # owned by dealer d1
    phone = new_phone()
    first = await capture(
        leads,
        tenant,
        "d1-rep",
        phone=phone,
        email=f"wang.{uuid.uuid4().hex[:8]}@example.com",
        company=f"Fleet {uuid.uuid4().hex[:6]} Co",
        source="web",
        intent={"product_interest": "Truck X"},  # no campaign: not a touch
    )
    # Repeat enquiries through campaigns are merged into the lead as intents.
    await capture(
        leads,
        tenant,
        "d1-rep",
        phone=phone,
        source="expo",
        intent={"campaign": "spring-expo", "product_interest": "Truck X"},
    )
    await capture(
        leads,
        tenant,
        "d1-rep",
        phone=phone,
        source="wechat",
        intent={"campaign": "wechat-ad", "product_interest": "Van Y"},
    )
    second = await capture(leads, tenant, "d1-rep", intent={"campaign": "roadshow"})
    # A sibling dealer's lead, converted into the same customer by their common manager: the
    # d1 rep sees the customer but not this lead.
    hidden = await capture(
        leads,
        tenant,
        "d2-rep",
        email=f"d2.{uuid.uuid4().hex[:8]}@example.com",
        intent={"campaign": "d2-fair"},
    )
    # A lead of this customer that never converted contributes nothing.
    await capture(leads, tenant, "d1-rep", intent={"campaign": "not-converted"})
    await convert_into(leads, tenant, "d1-rep", first["id"], cust["id"])
    await convert_into(leads, tenant, "d1-rep", second["id"], cust["id"])
    await convert_into(leads, tenant, "hq-manager", hidden["id"], cust["id"])
    docs = {
        d["id"]: d
        for d in [await lead_doc(leads, tenant, x["id"]) for x in (first, second, hidden)]
    }
    d1_docs = [docs[second["id"]], docs[first["id"]]]
    all_docs = [docs[hidden["id"]], *d1_docs]
    assert [t[0] for t in expected_touches(d1_docs)] == ["roadshow", "wechat-ad", "spring-expo"]

    fresh = await make_customer(client, tenant)
    with all_targets(customers, sales, service_desk, f"127.0.0.1:{leads.grpc_port}"):
        views = {}
        for who in ("d1-rep", "hq-manager"):
            r = await client.get(f"/v1/customers/{cust['id']}:view360", headers=tenant.auth(who))
            assert r.status_code == 200, r.text
            views[who] = r.json()
        r = await client.get(f"/v1/customers/{fresh['id']}:view360", headers=tenant.auth("d1-rep"))
        assert r.status_code == 200, r.text
        empty = r.json()
        md = (("authorization", f"Bearer {tenant.tokens['d1-rep']}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{customers.grpc_port}") as channel:
            stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
            view = await stub.GetCustomer360(
                customer_service_pb2.GetCustomer360Request(id=cust["id"]), metadata=md
            )
            empty_view = await stub.GetCustomer360(
                customer_service_pb2.GetCustomer360Request(id=fresh["id"]), metadata=md
            )

    for who, visible in (("d1-rep", d1_docs), ("hq-manager", all_docs)):
        body = views[who]
        assert body["partial"] == [], body["partial_reasons"]
        want = expected_touches(visible)
        got = body["campaign_touches"]
        assert [(t["campaign"], t["lead_id"], t["intent_id"], t["time"]) for t in got] == want
        assert body["score"] == expected_score(visible)
        # Each touch is also a timeline entry of its own kind.
        kinds = {e["ref"]: e for e in body["timeline"] if e["kind"] == "campaign_touch"}
        assert set(kinds) == {t[2] for t in want}
        assert {e["summary"] for e in kinds.values()} == {t[0] for t in want}
    by_campaign = {t["campaign"]: t for t in views["d1-rep"]["campaign_touches"]}
    assert (by_campaign["wechat-ad"]["source"], by_campaign["wechat-ad"]["product_interest"]) == (
        "wechat",
        "Van Y",
    )
    # The caller who cannot see the sibling's lead gets neither its touch nor its score.
    assert "d2-fair" not in by_campaign
    assert views["d1-rep"]["score"]["lead_id"] != hidden["id"]
    assert "d2-fair" in {t["campaign"] for t in views["hq-manager"]["campaign_touches"]}

    # gRPC: the same assembly.
    assert not view.partial
    assert [(t.campaign, t.lead_id, t.intent_id) for t in view.campaign_touches] == [
        (t[0], t[1], t[2]) for t in expected_touches(d1_docs)
    ]
    assert view.HasField("score")
    assert (view.score.score, view.score.grade, view.score.lead_id) == tuple(
        expected_score(d1_docs).values()
    )
    assert [e.ref for e in view.timeline] == [e["ref"] for e in views["d1-rep"]["timeline"]]

    # No converted lead: no touches, no score, and still not partial.
    assert (empty["campaign_touches"], empty["score"], empty["partial"]) == ([], None, [])
    assert not empty_view.HasField("score") and not empty_view.partial


async def test_unreachable_leads_gives_partial_not_error(
    client: httpx.AsyncClient,
    customers: Runtime,
    sales: Runtime,
    service_desk: Runtime,
    leads: Runtime,
    tenant: Tenant,
) -> None:
    cust = await make_customer(client, tenant)
    lead = await capture(leads, tenant, "d1-rep", intent={"campaign": "autumn-show"})
    await convert_into(leads, tenant, "d1-rep", lead["id"], cust["id"])
    ticket = await post(
        service_desk, "/v1/tickets", tenant, {"subject": "Leads down", "customer_id": cust["id"]}
    )
    request = customer_service_pb2.GetCustomer360Request(id=cust["id"])
    md = (("authorization", f"Bearer {tenant.tokens['d1-rep']}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{customers.grpc_port}") as channel:
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        with all_targets(customers, sales, service_desk, f"127.0.0.1:{closed_port()}"):
            r = await client.get(
                f"/v1/customers/{cust['id']}:view360", headers=tenant.auth("d1-rep")
            )
            view = await stub.GetCustomer360(request, metadata=md)
        with all_targets(customers, sales, service_desk, f"127.0.0.1:{leads.grpc_port}"):
            healthy = await stub.GetCustomer360(request, metadata=md)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["partial"] == ["leads"]
    assert body["partial_reasons"]["leads"].startswith("UNAVAILABLE")
    assert (body["campaign_touches"], body["score"]) == ([], None)
    assert [t["id"] for t in body["open_tickets"]] == [ticket["id"]]
    assert list(view.missing_parts) == ["leads"] and view.partial
    assert not view.HasField("score") and list(view.campaign_touches) == []
    assert [t.id for t in view.open_tickets] == [ticket["id"]]
    # The same view with leads back: the touch and the score are there.
    assert not healthy.partial
    assert [t.campaign for t in healthy.campaign_touches] == ["autumn-show"]
    assert healthy.score.lead_id == lead["id"]


async def test_list_leads_by_customer(
    client: httpx.AsyncClient, customers: Runtime, sales: Runtime, leads: Runtime, tenant: Tenant
) -> None:
    """The leads service's side: ListLeads(customer_id) under the caller's visibility."""
    cust = await make_customer(client, tenant)
    mine = await capture(leads, tenant, "d1-rep", intent={"campaign": "c1"})
    theirs = await capture(leads, tenant, "d2-rep", intent={"campaign": "c2"})
    await convert_into(leads, tenant, "d1-rep", mine["id"], cust["id"])
    await convert_into(leads, tenant, "hq-manager", theirs["id"], cust["id"])

    def md(who: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {tenant.tokens[who]}"),)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{leads.grpc_port}") as channel:
        stub = lead_service_pb2_grpc.LeadServiceStub(channel)

        async def ids(who: str, **req: Any) -> list[str]:
            resp = await stub.ListLeads(lead_service_pb2.ListLeadsRequest(**req), metadata=md(who))
            return [x.id for x in resp.leads]

        assert await ids("hq-manager", customer_id=cust["id"]) == [theirs["id"], mine["id"]]
        assert await ids("d1-rep", customer_id=cust["id"]) == [mine["id"]]
        assert await ids("d2-rep", customer_id=cust["id"]) == [theirs["id"]]
        assert await ids("d1-rep", customer_id=str(uuid.uuid4())) == []
        first = await stub.ListLeads(
            lead_service_pb2.ListLeadsRequest(customer_id=cust["id"], page_size=1),
            metadata=md("hq-manager"),
        )
        lead = first.leads[0]
        assert [i.campaign for i in lead.intents] == ["c2"]
        assert (lead.score, lead.grade) != (0, "")
        nxt = await stub.ListLeads(
            lead_service_pb2.ListLeadsRequest(
                customer_id=cust["id"], page_size=1, page_token=first.next_page_token
            ),
            metadata=md("hq-manager"),
        )
        assert [x.id for x in nxt.leads] == [mine["id"]] and not nxt.next_page_token

        # A token of one customer's list does not page another query.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListLeads(
                lead_service_pb2.ListLeadsRequest(page_token=first.next_page_token),
                metadata=md("hq-manager"),
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A malformed customer_id is a field violation.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListLeads(
                lead_service_pb2.ListLeadsRequest(customer_id="not-a-uuid"), metadata=md("d1-rep")
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(err.value)
        assert status is not None
        bad = error_details_pb2.BadRequest()
        assert any(d.Unpack(bad) for d in status.details)
        assert [(v.field, v.description) for v in bad.field_violations] == [
            ("customer_id", "must be a UUID")
        ]
