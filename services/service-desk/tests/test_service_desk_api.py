"""Tickets over REST and gRPC against real PostgreSQL and NATS."""

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
from crm.servicedesk.v1 import (
    events_pb2,
    service_desk_service_pb2,
    service_desk_service_pb2_grpc,
    ticket_pb2,
)
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event
from crm_platform.testing.rest import all_pages, assert_subtree_only, listed_count

EVENT_TYPE = "crm.servicedesk.ticket.created.v1"


@pytest.fixture
async def client(service_desk: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(service_desk) as c:
        yield c


def ticket(**overrides: Any) -> dict[str, Any]:
    return {"subject": "Engine light stays on", **overrides}


async def create(client: httpx.AsyncClient, tenant: Tenant, who: str, **fields: Any) -> Any:
    r = await client.post("/v1/tickets", json=ticket(**fields), headers=tenant.auth(who))
    assert r.status_code == 201, r.text
    return r.json()


async def visible_count(client: httpx.AsyncClient, tenant: Tenant) -> int:
    return await listed_count(client, "/v1/tickets", tenant.auth("admin"))


async def test_dealer_creates_ticket(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer_id = str(uuid.uuid4())
    t = await create(
        client,
        tenant,
        "d1-rep",
        subject="  Noise  from the ｇｅａｒｂｏｘ ",
        description="Since the last service.\nOnly when cold.",
        customer_id=customer_id,
        priority="HIGH",
        channel="email",
    )
    assert t["subject"] == "Noise from the gearbox"
    assert t["description"] == "Since the last service.\nOnly when cold."
    assert t["owner_org_path"] == f"/{tenant.slug}/east/d1/"
    assert t["customer_id"] == customer_id
    assert t["priority"] == "TICKET_PRIORITY_HIGH"
    assert t["status"] == "TICKET_STATUS_NEW"
    assert t["channel"] == "email"
    r = await client.get(f"/v1/tickets/{t['id']}", headers=tenant.auth("d1-rep"))
    assert r.status_code == 200
    assert r.json() == t


async def test_defaults(client: httpx.AsyncClient, tenant: Tenant) -> None:
    t = await create(client, tenant, "d1-rep")
    assert t["priority"] == "TICKET_PRIORITY_NORMAL"
    assert t["channel"] == "api"
    assert t["description"] == ""
    assert t["customer_id"] == ""


async def test_visible_to_hq_not_to_sibling_dealer(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    t = await create(client, tenant, "d1-rep")
    await assert_subtree_only(
        client,
        "/v1/tickets",
        t["id"],
        readers=[tenant.auth(who) for who in ("d1-rep", "hq-manager", "admin")],
        sibling=tenant.auth("d2-rep"),
        reason="TICKET_NOT_FOUND",
    )


async def test_other_tenant_cannot_read_ticket(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    t = await create(client, tenant, "admin")
    r = await client.get(f"/v1/tickets/{t['id']}", headers=other_tenant.auth("admin"))
    assert r.status_code == 404
    assert r.json()["reason"] == "TICKET_NOT_FOUND"


async def test_list_pages_through_visible_tickets(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = [
        (await create(client, tenant, "d2-rep", subject=f"Page {i}"))["id"] for i in range(3)
    ]
    items = await all_pages(client, "/v1/tickets", tenant.auth("d2-rep"))
    assert all(x["owner_org_path"].endswith("/d2/") for x in items)
    seen = [x["id"] for x in items]
    assert len(seen) == len(set(seen)) >= 3
    assert seen[:3] == created[::-1]  # newest first


async def test_idempotency_key_returns_first_ticket(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    before = await visible_count(client, tenant)
    headers = {**tenant.auth("d1-rep"), "Idempotency-Key": str(uuid.uuid4())}
    first = await client.post("/v1/tickets", json=ticket(), headers=headers)
    second = await client.post("/v1/tickets", json=ticket(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert await visible_count(client, tenant) == before + 1


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        (ticket(subject=""), "subject", 422),
        (ticket(subject="   "), "subject", 422),
        (ticket(subject="x" * 201), "subject", 422),
        ({"description": "No subject"}, "subject", 422),
        (ticket(subject=["not", "a", "string"]), "subject", 422),
        (ticket(description="x" * 10_001), "description", 422),
        (ticket(priority="CRITICAL"), "priority", 422),
        (ticket(priority="UNSPECIFIED"), "priority", 422),
        (ticket(priority=3), "priority", 422),
        (ticket(channel="fax"), "channel", 422),
        (ticket(customer_id="cust-1"), "customer_id", 422),
        (ticket(colour="red"), "colour", 422),
        (b'{"subject": "X",', "body", 400),
    ],
)
async def test_bad_ticket_gets_field_violation(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any] | bytes, field: str, status: int
) -> None:
    before = await visible_count(client, tenant)
    headers = {**tenant.auth("d1-rep"), "Content-Type": "application/json"}
    if isinstance(body, bytes):
        r = await client.post("/v1/tickets", content=body, headers=headers)
    else:
        r = await client.post("/v1/tickets", json=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert field in {v["field"] for v in problem["violations"]}, problem
    assert await visible_count(client, tenant) == before  # nothing written


async def test_every_bad_field_is_reported_at_once(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    r = await client.post(
        "/v1/tickets",
        json={"subject": "", "priority": "SOON", "channel": "pigeon", "customer_id": "x"},
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 422
    problem = r.json()
    assert problem["reason"] == "TICKET_INVALID"
    assert {v["field"] for v in problem["violations"]} == {
        "subject",
        "priority",
        "channel",
        "customer_id",
    }


async def test_malformed_id_is_field_violation(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.get("/v1/tickets/not-a-uuid", headers=tenant.auth("admin"))
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "ticket_id"


async def test_grpc_create_reports_field_violations(service_desk: Runtime, tenant: Tenant) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service_desk.grpc_port}") as channel:
        stub = service_desk_service_pb2_grpc.TicketServiceStub(channel)
        md = (("authorization", f"Bearer {tenant.tokens['d1-rep']}"),)
        ok = await stub.CreateTicket(
            service_desk_service_pb2.CreateTicketRequest(ticket=ticket_pb2.Ticket(subject="G")),
            metadata=md,
        )
        assert ok.owner_org_path.endswith("/d1/")
        assert ok.priority == ticket_pb2.TICKET_PRIORITY_NORMAL
        assert ok.status == ticket_pb2.TICKET_STATUS_NEW
        assert ok.channel == "api"
        got = await stub.GetTicket(service_desk_service_pb2.GetTicketRequest(id=ok.id), metadata=md)
        assert got == ok
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateTicket(
                service_desk_service_pb2.CreateTicketRequest(
                    ticket=ticket_pb2.Ticket(subject="G", priority=42)  # type: ignore[arg-type]
                ),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(err.value)
        assert status is not None
        bad = error_details_pb2.BadRequest()
        assert any(d.Unpack(bad) for d in status.details)
        assert [v.field for v in bad.field_violations] == ["priority"]


async def test_created_event_is_published(
    client: httpx.AsyncClient, service_desk: Runtime, tenant: Tenant
) -> None:
    t = await create(client, tenant, "d1-rep", subject="Evented")
    envelope, payload = await wait_for_event(
        service_desk.settings.nats_url,
        service_desk.settings.nats_namespace,
        EVENT_TYPE,
        events_pb2.TicketCreated,
        lambda p: p.ticket.id == t["id"],
    )
    assert envelope.type == EVENT_TYPE
    assert envelope.producer == "service-desk"
    assert envelope.tenant_id == tenant.id
    assert envelope.org_path == f"/{tenant.slug}/east/d1/"
    assert payload.ticket.subject == "Evented"


async def test_list_filters_by_customer_within_visibility(
    client: httpx.AsyncClient, service_desk: Runtime, tenant: Tenant
) -> None:
    cid = str(uuid.uuid4())
    mine = await create(client, tenant, "d1-rep", customer_id=cid)
    await create(client, tenant, "d2-rep", customer_id=cid)  # sibling dealer's
    await create(client, tenant, "d1-rep", customer_id=str(uuid.uuid4()))
    r = await client.get("/v1/tickets", params={"customer_id": cid}, headers=tenant.auth("d1-rep"))
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()["tickets"]] == [mine["id"]]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service_desk.grpc_port}") as channel:
        stub = service_desk_service_pb2_grpc.TicketServiceStub(channel)
        resp = await stub.ListTickets(
            service_desk_service_pb2.ListTicketsRequest(customer_id=cid),
            metadata=(("authorization", f"Bearer {tenant.tokens['admin']}"),),
        )
    assert len(resp.tickets) == 2
    assert {t.customer_id for t in resp.tickets} == {cid}
