"""Customers and contacts over REST and gRPC against real PostgreSQL and NATS."""

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
from crm.customers.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from crm.customers.v1 import events_pb2 as customers_events
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event
from crm_platform.testing.rest import all_pages, listed_count

ACME = {
    "kind": "ORGANIZATION",
    "display_name": "  Ａｃｍｅ   Trading ",
    "tax_id": "91310000ma1fl0xx1a",
    "phone": "021 6888 8888",
    "email": "Sales@Acme.CN",
    "province": "Shanghai",
    "city": "Shanghai",
    "contacts": [
        {"full_name": "Wang Wu", "title": "Buyer", "phone": "139 0013 9000"},
        {"full_name": "Zhao Liu", "email": "ZL@Acme.CN"},
    ],
}


@pytest.fixture
async def client(customers: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(customers) as c:
        yield c


async def _create(
    client: httpx.AsyncClient, tenant: Tenant, who: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    r = await client.post("/v1/customers", json=body or ACME, headers=tenant.auth(who))
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def _count(client: httpx.AsyncClient, tenant: Tenant) -> int:
    return await listed_count(client, "/v1/customers", tenant.auth("admin"))


async def test_dealer_creates_customer_with_contacts(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    customer = await _create(client, tenant, "d1-rep")
    assert customer["kind"] == "CUSTOMER_KIND_ORGANIZATION"
    assert customer["display_name"] == "Acme Trading"
    assert customer["tax_id"] == "91310000MA1FL0XX1A"
    assert customer["phone"] == "+862168888888"
    assert customer["email"] == "sales@acme.cn"
    assert customer["owner_org_path"] == f"/{tenant.slug}/east/d1/"
    wang, zhao = customer["contacts"]
    assert (wang["full_name"], wang["title"], wang["phone"]) == (
        "Wang Wu",
        "Buyer",
        "+8613900139000",
    )
    assert (zhao["full_name"], zhao["email"]) == ("Zhao Liu", "zl@acme.cn")
    assert {wang["customer_id"], zhao["customer_id"]} == {customer["id"]}


async def test_get_includes_contacts(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await _create(client, tenant, "d1-rep")
    r = await client.get(f"/v1/customers/{created['id']}", headers=tenant.auth("d1-rep"))
    assert r.status_code == 200, r.text
    assert r.json() == created


async def test_visibility_follows_the_org_tree(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    customer_id = (await _create(client, tenant, "d1-rep"))["id"]
    r = await client.get(f"/v1/customers/{customer_id}", headers=tenant.auth("d2-rep"))
    assert r.status_code == 404  # the sibling dealer: missing, not forbidden
    assert r.json()["reason"] == "CUSTOMER_NOT_FOUND"
    r = await client.get(f"/v1/customers/{customer_id}", headers=tenant.auth("hq-manager"))
    assert r.status_code == 200
    assert len(r.json()["contacts"]) == 2
    r = await client.get(f"/v1/customers/{customer_id}", headers=other_tenant.auth("admin"))
    assert r.status_code == 404
    assert r.json()["reason"] == "CUSTOMER_NOT_FOUND"
    r = await client.post(
        f"/v1/customers/{customer_id}/contacts",
        json={"full_name": "Sneaky"},
        headers=tenant.auth("d2-rep"),
    )
    assert r.status_code == 404
    assert r.json()["reason"] == "CUSTOMER_NOT_FOUND"


async def test_list_pages_newest_first_through_visible_customers(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    made = [
        (await _create(client, tenant, "d2-rep", {"kind": "PERSON", "display_name": f"P{i}"}))["id"]
        for i in range(3)
    ]
    items = await all_pages(client, "/v1/customers", tenant.auth("d2-rep"))
    assert all(x["owner_org_path"].endswith("/d2/") for x in items)
    seen = [x["id"] for x in items]
    assert len(seen) == len(set(seen)) >= 3
    assert seen[:3] == made[::-1]  # newest first
    assert seen == sorted(seen, key=uuid.UUID, reverse=True)


async def test_idempotency_key_returns_first_customer(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = {**tenant.auth("d1-rep"), "Idempotency-Key": str(uuid.uuid4())}
    first = await client.post("/v1/customers", json=ACME, headers=headers)
    before = await _count(client, tenant)
    second = await client.post("/v1/customers", json=ACME, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()  # contacts included, none duplicated
    assert await _count(client, tenant) == before


async def test_add_contact(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _create(client, tenant, "d1-rep", {"kind": "PERSON", "display_name": "Sun"})
    assert customer["contacts"] == []
    url = f"/v1/customers/{customer['id']}/contacts"
    headers = {**tenant.auth("d1-rep"), "Idempotency-Key": str(uuid.uuid4())}
    body = {"full_name": " Ｓｕｎ Qi ", "title": "Owner", "phone": "+86 137 0013 7000"}
    r = await client.post(url, json=body, headers=headers)
    assert r.status_code == 201, r.text
    contact = r.json()
    assert contact["full_name"] == "Sun Qi"
    assert contact["phone"] == "+8613700137000"
    assert contact["customer_id"] == customer["id"]
    again = await client.post(url, json=body, headers=headers)
    assert again.status_code == 201
    assert again.json()["id"] == contact["id"]
    r = await client.get(f"/v1/customers/{customer['id']}", headers=tenant.auth("hq-manager"))
    got = r.json()
    assert got["contacts"] == [contact]
    assert got["etag"] != customer["etag"]  # the contact is part of the customer


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"kind": "PERSON"}, "display_name", 422),
        ({"kind": "PERSON", "display_name": "  "}, "display_name", 422),
        ({"display_name": "X"}, "kind", 422),
        ({"kind": "COMPANY", "display_name": "X"}, "kind", 422),
        ({"kind": "PERSON", "display_name": "X", "email": "not-an-email"}, "email", 422),
        ({"kind": "PERSON", "display_name": "X", "phone": "12345"}, "phone", 422),
        ({"kind": "PERSON", "display_name": "X", "colour": "red"}, "colour", 422),
        ({"kind": "PERSON", "display_name": ["not", "a", "string"]}, "display_name", 422),
        ({"kind": "PERSON", "display_name": "X", "contacts": "Wang"}, "contacts", 422),
        (
            {"kind": "PERSON", "display_name": "X", "contacts": [{"full_name": "A"}, {}]},
            "contacts.1.full_name",
            422,
        ),
        (
            {
                "kind": "PERSON",
                "display_name": "X",
                "contacts": [{"full_name": "A", "email": "a@example.com"}, {"full_name": " "}],
            },
            "contacts.1.full_name",
            422,
        ),
        (
            {"kind": "PERSON", "display_name": "X", "contacts": [{"full_name": "A", "phone": "1"}]},
            "contacts.0.phone",
            422,
        ),
    ],
)
async def test_bad_customer_gets_field_violation(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, object], field: str, status: int
) -> None:
    before = await _count(client, tenant)
    r = await client.post("/v1/customers", json=body, headers=tenant.auth("d1-rep"))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert field in {v["field"] for v in problem["violations"]}, problem
    assert await _count(client, tenant) == before  # nothing written


async def test_all_violations_come_back_at_once(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = {
        "kind": "ROBOT",
        "display_name": "",
        "email": "x@",
        "contacts": [{"full_name": "", "email": "bad"}],
    }
    r = await client.post("/v1/customers", json=body, headers=tenant.auth("d1-rep"))
    assert r.status_code == 422
    problem = r.json()
    assert problem["reason"] == "CUSTOMER_INVALID"
    assert {v["field"] for v in problem["violations"]} == {
        "kind",
        "display_name",
        "email",
        "contacts.0.full_name",
        "contacts.0.email",
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "CEO"}, "full_name"),
        ({"full_name": ""}, "full_name"),
        ({"full_name": "A", "email": "nope"}, "email"),
        ({"full_name": "A", "phone": "12"}, "phone"),
        ({"full_name": "A", "mood": "happy"}, "mood"),
        ({"full_name": 42}, "full_name"),
    ],
)
async def test_bad_contact_gets_field_violation(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, object], field: str
) -> None:
    customer = await _create(client, tenant, "d1-rep", {"kind": "PERSON", "display_name": "Q"})
    url = f"/v1/customers/{customer['id']}"
    r = await client.post(f"{url}/contacts", json=body, headers=tenant.auth("d1-rep"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert field in {v["field"] for v in r.json()["violations"]}
    after = await client.get(url, headers=tenant.auth("d1-rep"))
    assert after.json()["contacts"] == []  # nothing written
    assert after.json()["etag"] == customer["etag"]


@pytest.mark.parametrize("path", ["/v1/customers", "/v1/customers/{id}/contacts"])
async def test_malformed_json_is_400(client: httpx.AsyncClient, tenant: Tenant, path: str) -> None:
    customer = await _create(client, tenant, "d1-rep", {"kind": "PERSON", "display_name": "J"})
    before = await _count(client, tenant)
    r = await client.post(
        path.format(id=customer["id"]),
        content=b'{"kind": "PERSON", "display_name": "X",',
        headers={**tenant.auth("d1-rep"), "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["reason"] == "MALFORMED_JSON"
    assert "body" in {v["field"] for v in problem["violations"]}
    assert await _count(client, tenant) == before


@pytest.mark.parametrize(
    ("path", "field"),
    [("/v1/customers/not-a-uuid", "customer_id"), ("/v1/customers/x/contacts", "customer_id")],
)
async def test_malformed_id_is_field_violation(
    client: httpx.AsyncClient, tenant: Tenant, path: str, field: str
) -> None:
    if path.endswith("contacts"):
        r = await client.post(path, json={"full_name": "A"}, headers=tenant.auth("admin"))
    else:
        r = await client.get(path, headers=tenant.auth("admin"))
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == field


async def test_bad_idempotency_key_is_field_violation(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    before = await _count(client, tenant)
    r = await client.post(
        "/v1/customers", json=ACME, headers={**tenant.auth("d1-rep"), "Idempotency-Key": "abc"}
    )
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "Idempotency-Key"
    assert await _count(client, tenant) == before


async def test_missing_credentials_are_401(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/customers")
    assert r.status_code == 401
    assert r.json()["reason"] == "CREDENTIALS_MISSING"


async def test_grpc_create_reports_field_violations(customers: Runtime, tenant: Tenant) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{customers.grpc_port}") as channel:
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        md = (("authorization", f"Bearer {tenant.tokens['d1-rep']}"),)
        ok = await stub.CreateCustomer(
            customer_service_pb2.CreateCustomerRequest(
                customer=customer_pb2.Customer(
                    kind=customer_pb2.CUSTOMER_KIND_PERSON,
                    display_name="G",
                    contacts=[customer_pb2.Contact(full_name="H", phone="13500135000")],
                )
            ),
            metadata=md,
        )
        assert ok.owner_org_path.endswith("/d1/")
        assert ok.contacts[0].phone == "+8613500135000"
        contact = await stub.CreateContact(
            customer_service_pb2.CreateContactRequest(
                customer_id=ok.id, contact=customer_pb2.Contact(full_name="I")
            ),
            metadata=md,
        )
        got = await stub.GetCustomer(customer_service_pb2.GetCustomerRequest(id=ok.id), metadata=md)
        assert [c.id for c in got.contacts] == [ok.contacts[0].id, contact.id]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateCustomer(
                customer_service_pb2.CreateCustomerRequest(
                    customer=customer_pb2.Customer(
                        display_name="G", contacts=[customer_pb2.Contact(phone="1")]
                    )
                ),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(err.value)
        assert status is not None
        bad = error_details_pb2.BadRequest()
        assert any(d.Unpack(bad) for d in status.details)
        assert {v.field for v in bad.field_violations} == {
            "kind",
            "contacts.0.full_name",
            "contacts.0.phone",
        }
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetCustomer(
                customer_service_pb2.GetCustomerRequest(id=ok.id),
                metadata=(("authorization", f"Bearer {tenant.tokens['d2-rep']}"),),
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_customer_created_event_reaches_nats(
    client: httpx.AsyncClient, customers: Runtime, tenant: Tenant
) -> None:
    customer = await _create(client, tenant, "d1-rep")
    envelope, payload = await wait_for_event(
        customers.settings.nats_url,
        customers.settings.nats_namespace,
        "crm.customers.customer.created.v1",
        customers_events.CustomerCreated,
        lambda p: p.customer.id == customer["id"],
    )
    assert envelope.producer == "customers"
    assert payload.customer.owner_org_path == customer["owner_org_path"]
    assert [c.id for c in payload.customer.contacts] == [c["id"] for c in customer["contacts"]]
