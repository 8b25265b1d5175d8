"""Account hierarchy, custom fields, field-mask updates with etags, history, and contacts'
reports-to, roles, preferences and consents, over REST and gRPC on real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2

from conftest import Tenant, http_client
from crm.customers.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from crm.customers.v1 import events_pb2 as customers_events
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event
from crm_platform.testing.rest import all_pages, assert_subtree_only

ORG = {"kind": "ORGANIZATION", "display_name": "Acme", "tax_id": "9131 0000-ma1fl0xx1a"}


@pytest.fixture
async def client(customers: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(customers) as c:
        yield c


async def _create(
    client: httpx.AsyncClient, tenant: Tenant, who: str = "d1-rep", **fields: Any
) -> dict[str, Any]:
    r = await client.post("/v1/customers", json={**ORG, **fields}, headers=tenant.auth(who))
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def _move(
    client: httpx.AsyncClient, tenant: Tenant, customer_id: str, parent: str
) -> httpx.Response:
    return await client.post(
        f"/v1/customers/{customer_id}:move",
        json={"new_parent_id": parent},
        headers=tenant.auth("d1-rep"),
    )


async def test_organisation_and_person_profiles(client: httpx.AsyncClient, tenant: Tenant) -> None:
    org = await _create(client, tenant, industry="Retail", organization_size="MEDIUM")
    assert org["tax_id"] == "91310000MA1FL0XX1A"
    assert org["legal_name"] == "Acme"  # defaults to the trading name
    assert org["organization_size"] == "ORGANIZATION_SIZE_MEDIUM"
    assert org["account_path"] == f"/{org['id']}/"
    person = await _create(
        client,
        tenant,
        kind="PERSON",
        display_name="Li Lei",
        tax_id="",
        gender="MALE",
        birthday="1990-02-03",
    )
    assert (person["gender"], person["birthday"]) == ("GENDER_MALE", "1990-02-03")
    r = await client.post(
        "/v1/customers",
        json={
            "kind": "PERSON",
            "display_name": "X",
            "industry": "Retail",
            "birthday": "1990-13-01",
        },
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 422
    assert {v["field"] for v in r.json()["violations"]} == {"industry", "birthday"}
    r = await client.post(
        "/v1/customers", json={**ORG, "tax_id": "123"}, headers=tenant.auth("d1-rep")
    )
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "tax_id"


async def test_hierarchy_create_children_move_and_cycle(
    client: httpx.AsyncClient, customers: Runtime, tenant: Tenant
) -> None:
    group = await _create(client, tenant, display_name="Group")
    sub = await _create(client, tenant, display_name="Sub", parent_id=group["id"])
    leaf = await _create(client, tenant, display_name="Leaf", parent_id=sub["id"])
    other = await _create(client, tenant, display_name="Other")
    assert leaf["account_path"] == f"/{group['id']}/{sub['id']}/{leaf['id']}/"
    children = await all_pages(
        client, f"/v1/customers/{group['id']}/children", tenant.auth("d1-rep"), page_size=1
    )
    assert [c["id"] for c in children] == [sub["id"]]

    r = await _move(client, tenant, group["id"], leaf["id"])  # under its own grandchild
    assert r.status_code == 409
    assert r.json()["reason"] == "CUSTOMER_HIERARCHY_CYCLE"
    r = await _move(client, tenant, group["id"], group["id"])
    assert r.json()["reason"] == "CUSTOMER_HIERARCHY_CYCLE"

    r = await _move(client, tenant, sub["id"], other["id"])
    assert r.status_code == 200, r.text
    assert r.json()["parent_id"] == other["id"]
    got = await client.get(f"/v1/customers/{leaf['id']}", headers=tenant.auth("d1-rep"))
    assert got.json()["account_path"] == f"/{other['id']}/{sub['id']}/{leaf['id']}/"
    assert got.json()["etag"] != leaf["etag"]  # the subtree's paths changed with one UPDATE
    _, moved = await wait_for_event(
        customers.settings.nats_url,
        customers.settings.nats_namespace,
        "crm.customers.customer.moved.v1",
        customers_events.CustomerMoved,
        lambda p: p.customer.id == sub["id"],
    )
    assert (moved.old_parent_id, moved.new_parent_id) == (group["id"], other["id"])

    r = await _move(client, tenant, sub["id"], "")  # to the root
    assert r.json()["account_path"] == f"/{sub['id']}/"
    history = await client.get(f"/v1/customers/{sub['id']}/history", headers=tenant.auth("admin"))
    assert [(c["field"], c["old_value"], c["new_value"]) for c in history.json()["history"]] == [
        ("parent_id", other["id"], None),
        ("parent_id", group["id"], other["id"]),
    ]


async def test_hierarchy_respects_visibility(client: httpx.AsyncClient, tenant: Tenant) -> None:
    d1 = await _create(client, tenant, "d1-rep")
    d2 = await _create(client, tenant, "d2-rep")
    await assert_subtree_only(
        client,
        "/v1/customers",
        d1["id"],
        readers=[tenant.auth("d1-rep"), tenant.auth("hq-manager")],
        sibling=tenant.auth("d2-rep"),
        reason="CUSTOMER_NOT_FOUND",
    )
    r = await client.post(
        "/v1/customers", json={**ORG, "parent_id": d1["id"]}, headers=tenant.auth("d2-rep")
    )
    assert r.status_code == 404  # a sibling's account cannot be a parent
    r = await client.post(
        f"/v1/customers/{d2['id']}:move",
        json={"new_parent_id": d1["id"]},
        headers=tenant.auth("d2-rep"),
    )
    assert r.status_code == 404
    for path in ("children", "history", "contacts"):
        r = await client.get(f"/v1/customers/{d1['id']}/{path}", headers=tenant.auth("d2-rep"))
        assert r.status_code == 404, path


async def test_custom_fields_definitions_and_values(
    client: httpx.AsyncClient, other_tenant: Tenant
) -> None:
    tenant = other_tenant  # a fresh tenant: the definitions are tenant-wide
    admin = tenant.auth("admin")
    bad = {
        "fields": [
            {"name": "Tier", "type": "ENUM"},
            {"name": "tier2", "type": "COLOUR"},
            {"name": "x", "type": "STRING", "options": ["a"]},
        ]
    }
    r = await client.put("/v1/customer-fields", json=bad, headers=admin)
    assert r.status_code == 422
    assert {v["field"] for v in r.json()["violations"]} == {
        "fields.0.name",
        "fields.0.options",
        "fields.1.type",
        "fields.2.options",
    }
    schema = {
        "fields": [
            {"name": "tier", "type": "ENUM", "options": ["gold", "silver"], "required": True},
            {"name": "employees", "type": "NUMBER"},
            {"name": "since", "type": "DATE"},
            {"name": "vip", "type": "BOOL"},
        ]
    }
    r = await client.put("/v1/customer-fields", json=schema, headers=tenant.auth("d1-rep"))
    assert r.status_code == 403
    r = await client.put("/v1/customer-fields", json=schema, headers=admin)
    assert r.status_code == 200, r.text
    stale = r.json()["etag"]
    r = await client.put("/v1/customer-fields", json=schema, headers={**admin, "If-Match": stale})
    assert r.status_code == 200
    r = await client.put("/v1/customer-fields", json=schema, headers={**admin, "If-Match": stale})
    assert r.status_code == 409
    got = await client.get("/v1/customer-fields", headers=tenant.auth("d1-rep"))
    assert [f["type"] for f in got.json()["fields"]] == [
        "CUSTOM_FIELD_TYPE_ENUM",
        "CUSTOM_FIELD_TYPE_NUMBER",
        "CUSTOM_FIELD_TYPE_DATE",
        "CUSTOM_FIELD_TYPE_BOOL",
    ]

    values = {"employees": "many", "since": "2020-02-30", "vip": 1, "colour": "red"}
    r = await client.post(
        "/v1/customers", json={**ORG, "custom_fields": values}, headers=tenant.auth("d1-rep")
    )
    assert r.status_code == 422
    assert {v["field"] for v in r.json()["violations"]} == {
        "custom_fields.tier",
        "custom_fields.employees",
        "custom_fields.since",
        "custom_fields.vip",
        "custom_fields.colour",
    }
    ok = {"tier": "gold", "employees": 120, "since": "2020-02-29", "vip": True}
    customer = await _create(client, tenant, custom_fields=ok)
    assert customer["custom_fields"] == ok
    url = f"/v1/customers/{customer['id']}"
    r = await client.patch(
        url,
        params={"update_mask": "custom_fields.tier"},
        json={"custom_fields": {"tier": "bronze"}},
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "custom_fields.tier"
    r = await client.patch(
        url,
        params={"update_mask": "custom_fields.tier,custom_fields.vip"},
        json={"custom_fields": {"tier": "silver", "employees": 1}},
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["custom_fields"] == {"tier": "silver", "employees": 120, "since": "2020-02-29"}
    history = await client.get(f"{url}/history", headers=tenant.auth("d1-rep"))
    assert {(c["field"], c["old_value"], c["new_value"]) for c in history.json()["history"]} == {
        ("custom_fields.tier", "gold", "silver"),
        ("custom_fields.vip", True, None),
    }


async def test_patch_changes_only_masked_fields_with_etag(
    client: httpx.AsyncClient, customers: Runtime, tenant: Tenant
) -> None:
    customer = await _create(client, tenant, city="Hangzhou", phone="021 6888 8888")
    url = f"/v1/customers/{customer['id']}"
    headers = {**tenant.auth("d1-rep"), "If-Match": customer["etag"]}
    r = await client.patch(
        url,
        params={"update_mask": "phone,email"},
        json={"phone": "139 0013 9000", "email": "A@B.CN", "city": "Ningbo"},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert (updated["phone"], updated["email"], updated["city"]) == (
        "+8613900139000",
        "a@b.cn",
        "Hangzhou",
    )
    assert updated["etag"] != customer["etag"]
    again = await client.patch(
        url, params={"update_mask": "city"}, json={"city": "X"}, headers=headers
    )
    assert again.status_code == 409
    assert again.json()["reason"] == "CUSTOMER_ETAG_MISMATCH"
    for mask in ("colour", "kind", "parent_id", "account_path"):
        r = await client.patch(
            url, params={"update_mask": mask}, json={}, headers=tenant.auth("d1-rep")
        )
        assert r.status_code == 422, mask
        assert r.json()["violations"][0]["field"] == "update_mask"
    r = await client.patch(url, json={"city": "Ningbo"}, headers=tenant.auth("hq-manager"))
    assert r.json()["city"] == "Ningbo"  # no mask: the body's fields
    r = await client.patch(url, json={"city": "X"}, headers=tenant.auth("d2-rep"))
    assert r.status_code == 404
    history = await client.get(f"{url}/history", headers=tenant.auth("d1-rep"))
    changes = history.json()["history"]
    assert [(c["field"], c["new_value"]) for c in changes] == [
        ("city", "Ningbo"),
        ("phone", "+8613900139000"),  # one update's changes: newest id first
        ("email", "a@b.cn"),
    ]
    assert changes[0]["old_value"] == "Hangzhou"
    assert changes[0]["actor"] != changes[1]["actor"]  # hq-manager, then d1-rep
    _, event = await wait_for_event(
        customers.settings.nats_url,
        customers.settings.nats_namespace,
        "crm.customers.customer.updated.v1",
        customers_events.CustomerUpdated,
        lambda p: p.customer.id == customer["id"] and "city" in p.changed_fields,
    )
    assert event.customer.city == "Ningbo"


async def test_contacts_roles_preferences_consents_and_reports_to(
    client: httpx.AsyncClient, customers: Runtime, tenant: Tenant
) -> None:
    customer = await _create(client, tenant)
    url = f"/v1/customers/{customer['id']}/contacts"
    auth = tenant.auth("d1-rep")
    boss = (
        await client.post(
            url,
            json={
                "full_name": "Boss",
                "email": "boss@acme.cn",
                "buying_roles": ["DECISION_MAKER", "FINANCE", "DECISION_MAKER"],
                "allowed_channels": ["EMAIL", "WECHAT"],
                "preferred_channel": "EMAIL",
                "consents": [{"purpose": "MARKETING_EMAIL", "granted": True, "source": "web_form"}],
            },
            headers=auth,
        )
    ).json()
    assert boss["buying_roles"] == ["BUYING_ROLE_DECISION_MAKER", "BUYING_ROLE_FINANCE"]
    assert boss["consents"][0]["source"] == "web_form"
    assert boss["consents"][0]["consent_time"]
    mid = (
        await client.post(url, json={"full_name": "Mid", "reports_to_id": boss["id"]}, headers=auth)
    ).json()
    low = (
        await client.post(url, json={"full_name": "Low", "reports_to_id": mid["id"]}, headers=auth)
    ).json()
    assert low["reports_to_id"] == mid["id"]

    r = await client.patch(f"{url}/{boss['id']}", json={"reports_to_id": low["id"]}, headers=auth)
    assert r.status_code == 409
    assert r.json()["reason"] == "CONTACT_REPORTS_TO_CYCLE"
    r = await client.patch(f"{url}/{boss['id']}", json={"reports_to_id": boss["id"]}, headers=auth)
    assert r.json()["reason"] == "CONTACT_REPORTS_TO_CYCLE"
    stranger = await _create(client, tenant, display_name="Other")
    other = (
        await client.post(
            f"/v1/customers/{stranger['id']}/contacts", json={"full_name": "O"}, headers=auth
        )
    ).json()
    r = await client.patch(f"{url}/{low['id']}", json={"reports_to_id": other["id"]}, headers=auth)
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "reports_to_id"

    bad = {
        "full_name": "Bad",
        "buying_roles": ["BOSS"],
        "allowed_channels": ["EMAIL"],
        "preferred_channel": "SMS",
        "consents": [
            {"purpose": "MARKETING_SMS", "granted": True},
            {"purpose": "MARKETING_SMS", "granted": False, "source": "call"},
        ],
    }
    r = await client.post(url, json=bad, headers=auth)
    assert r.status_code == 422
    assert {v["field"] for v in r.json()["violations"]} == {
        "buying_roles.0",
        "preferred_channel",
        "consents.0.source",
        "consents.1.purpose",
    }

    r = await client.patch(
        f"{url}/{low['id']}",
        params={"update_mask": "title,consents"},
        json={
            "title": "Engineer",
            "full_name": "ignored",
            "consents": [{"purpose": "MARKETING_SMS", "granted": False, "source": "call"}],
        },
        headers={**auth, "If-Match": low["etag"]},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["title"], r.json()["full_name"]) == ("Engineer", "Low")
    r = await client.patch(
        f"{url}/{low['id']}", json={"title": "x"}, headers={**auth, "If-Match": low["etag"]}
    )
    assert r.status_code == 409
    history = (await client.get(f"{url}/{low['id']}/history", headers=auth)).json()["history"]
    assert {c["field"] for c in history} == {"title", "consents.MARKETING_SMS"}
    listed = await all_pages(client, url, auth)
    assert [c["id"] for c in listed] == [boss["id"], mid["id"], low["id"]]
    r = await client.get(f"{url}/{low['id']}", headers=tenant.auth("d2-rep"))
    assert r.status_code == 404
    _, event = await wait_for_event(
        customers.settings.nats_url,
        customers.settings.nats_namespace,
        "crm.customers.contact.updated.v1",
        customers_events.ContactUpdated,
        lambda p: p.contact.id == low["id"],
    )
    assert sorted(event.changed_fields) == ["consents.MARKETING_SMS", "title"]


async def test_grpc_update_move_and_contacts(customers: Runtime, tenant: Tenant) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{customers.grpc_port}") as channel:
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        md = (("authorization", f"Bearer {tenant.tokens['d1-rep']}"),)
        parent = await stub.CreateCustomer(
            customer_service_pb2.CreateCustomerRequest(
                customer=customer_pb2.Customer(
                    kind=customer_pb2.CUSTOMER_KIND_ORGANIZATION, display_name="P"
                )
            ),
            metadata=md,
        )
        child = await stub.CreateCustomer(
            customer_service_pb2.CreateCustomerRequest(
                customer=customer_pb2.Customer(
                    kind=customer_pb2.CUSTOMER_KIND_ORGANIZATION,
                    display_name="C",
                    city="Suzhou",
                    parent_id=parent.id,
                )
            ),
            metadata=md,
        )
        listed = await stub.ListCustomers(
            customer_service_pb2.ListCustomersRequest(parent_id=parent.id), metadata=md
        )
        assert [c.id for c in listed.customers] == [child.id]
        updated = await stub.UpdateCustomer(
            customer_service_pb2.UpdateCustomerRequest(
                customer=customer_pb2.Customer(
                    id=child.id, display_name="C2", city="", etag=child.etag
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=md,
        )
        assert (updated.display_name, updated.city) == ("C2", "Suzhou")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.UpdateCustomer(
                customer_service_pb2.UpdateCustomerRequest(
                    customer=customer_pb2.Customer(id=child.id, city="X", etag=child.etag),
                    update_mask=field_mask_pb2.FieldMask(paths=["city"]),
                ),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.ABORTED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.UpdateCustomer(
                customer_service_pb2.UpdateCustomerRequest(
                    customer=customer_pb2.Customer(id=child.id),
                    update_mask=field_mask_pb2.FieldMask(paths=["nope"]),
                ),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.MoveCustomer(
                customer_service_pb2.MoveCustomerRequest(id=parent.id, new_parent_id=child.id),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        moved = await stub.MoveCustomer(
            customer_service_pb2.MoveCustomerRequest(id=child.id), metadata=md
        )
        assert (moved.parent_id, moved.account_path) == ("", f"/{child.id}/")

        boss = await stub.CreateContact(
            customer_service_pb2.CreateContactRequest(
                customer_id=child.id,
                contact=customer_pb2.Contact(
                    full_name="B", buying_roles=[customer_pb2.BUYING_ROLE_INFLUENCER]
                ),
            ),
            metadata=md,
        )
        worker = await stub.CreateContact(
            customer_service_pb2.CreateContactRequest(
                customer_id=child.id, contact=customer_pb2.Contact(full_name="W")
            ),
            metadata=md,
        )
        worker = await stub.UpdateContact(
            customer_service_pb2.UpdateContactRequest(
                contact=customer_pb2.Contact(
                    id=worker.id, customer_id=child.id, reports_to_id=boss.id, etag=worker.etag
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["reports_to_id"]),
            ),
            metadata=md,
        )
        assert worker.reports_to_id == boss.id
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.UpdateContact(
                customer_service_pb2.UpdateContactRequest(
                    contact=customer_pb2.Contact(
                        id=boss.id, customer_id=child.id, reports_to_id=worker.id
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["reports_to_id"]),
                ),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        contacts = await stub.ListContacts(
            customer_service_pb2.ListContactsRequest(customer_id=child.id, page_size=1),
            metadata=md,
        )
        assert [c.id for c in contacts.contacts] == [boss.id] and contacts.next_page_token
        changes = await stub.ListFieldChanges(
            customer_service_pb2.ListFieldChangesRequest(customer_id=child.id), metadata=md
        )
        assert [c.field for c in changes.changes] == ["parent_id", "display_name"]
        assert changes.changes[1].new_value.string_value == "C2"
