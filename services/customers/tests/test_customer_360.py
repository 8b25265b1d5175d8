"""Customer 360 against real customers, sales and service-desk servers."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import httpx
import pytest

from conftest import Tenant, http_client
from crm.customers.v1 import customer_service_pb2, customer_service_pb2_grpc
from crm_platform.runtime import Runtime


@pytest.fixture
async def client(customers: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(customers) as c:
        yield c


@contextmanager
def targets(customers: Runtime, **update: Any) -> Iterator[None]:
    """The shared customers instance is started before sales and service-desk: point its
    360 targets at them (or elsewhere) for one test."""
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
    client: httpx.AsyncClient, customers: Runtime, service_desk: Runtime, tenant: Tenant
) -> None:
    cust = await make_customer(client, tenant)
    ticket = await post(
        service_desk, "/v1/tickets", tenant, {"subject": "Still broken", "customer_id": cust["id"]}
    )
    with targets(
        customers,
        sales_grpc_target=f"127.0.0.1:{closed_port()}",
        service_desk_grpc_target=f"127.0.0.1:{service_desk.grpc_port}",
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
            customer360_deadline_seconds=1.0,
        ):
            view = await stub.GetCustomer360(request, metadata=md)
        assert view.partial
        assert list(view.missing_parts) == ["opportunities"]
        assert view.partial_reasons["opportunities"]
        assert list(view.open_opportunities) == []
        assert [t.id for t in view.open_tickets] == [ticket["id"]]
