"""Editing a lead (PATCH /v1/leads/{id}, UpdateLead) against real PostgreSQL and NATS:
normalisation, history, events, re-scoring, identity keys, preconditions and visibility."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conftest import Tenant, http_client
from crm.leads.v1 import events_pb2, lead_pb2, lead_service_pb2, lead_service_pb2_grpc
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event

UPDATED = "crm.leads.lead.updated.v1"
SCORED = "crm.leads.lead.scored.v1"


def mobile() -> str:
    return "139" + "".join(random.choices("0123456789", k=8))


def subject(tenant: Tenant, who: str) -> str:
    """The user id a token's holder is recorded as (its ``sub`` claim)."""
    payload = tenant.tokens[who].split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    return str(json.loads(base64.urlsafe_b64decode(padded))["sub"])


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


async def capture(
    c: httpx.AsyncClient, tenant: Tenant, who: str = "d1-rep", **body: Any
) -> dict[str, Any]:
    fields = {"full_name": "Wang Wu", "phone": mobile(), "city": "Suzhou", **body}
    r = await c.post("/v1/leads", json=fields, headers=tenant.auth(who))
    assert r.status_code == 201, r.text
    lead: dict[str, Any] = r.json()
    return lead


async def patch(
    c: httpx.AsyncClient, tenant: Tenant, lead_id: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await c.patch(
        f"/v1/leads/{lead_id}", json=body, headers={**tenant.auth("d1-rep"), **headers}
    )


async def read(c: httpx.AsyncClient, tenant: Tenant, lead_id: str) -> dict[str, Any]:
    r = await c.get(f"/v1/leads/{lead_id}", headers=tenant.auth("d1-rep"))
    assert r.status_code == 200, r.text
    lead: dict[str, Any] = r.json()
    return lead


def problem(r: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["reason"] == reason, body
    return body


async def test_patch_normalises_records_history_rescores_and_publishes(
    client: httpx.AsyncClient, leads: Runtime, nats_url: str, tenant: Tenant
) -> None:
    lead = await capture(client, tenant)
    old_phone = lead["phone"]
    new_phone = mobile()
    r = await patch(
        client,
        tenant,
        lead["id"],
        {
            "phone": f"{new_phone[:3]} {new_phone[3:7]} {new_phone[7:]}",
            "company": "Ｘｉｎ  Co",
            "city": None,
        },
        **{"If-Match": f'"{lead["etag"]}"'},
    )
    assert r.status_code == 200, r.text
    edited = r.json()
    assert (edited["phone"], edited["company"], edited["city"]) == (f"+86{new_phone}", "Xin Co", "")
    assert edited["full_name"] == "Wang Wu"  # not in the body: unchanged
    assert r.headers["ETag"] == f'"{edited["etag"]}"' and edited["etag"] != lead["etag"]
    assert edited["score"] > lead["score"]  # a company scores (default rules)
    assert edited == await read(client, tenant, lead["id"])

    history = await client.get(f"/v1/leads/{lead['id']}/history", headers=tenant.auth("d1-rep"))
    assert history.status_code == 200, history.text
    changes = history.json()["changes"]
    assert sorted((c["field"], c["old_value"], c["new_value"]) for c in changes) == [
        ("city", "Suzhou", ""),
        ("company", "", "Xin Co"),
        ("phone", old_phone, f"+86{new_phone}"),
    ]
    assert {(c["action"], c["rule"], c["author"]) for c in changes} == {
        ("edit", "", subject(tenant, "d1-rep"))
    }

    _, updated = await wait_for_event(
        nats_url,
        leads.settings.nats_namespace,
        UPDATED,
        events_pb2.LeadUpdated,
        lambda e: e.lead.id == lead["id"],
    )
    assert list(updated.changed_fields) == ["city", "company", "phone"]
    assert (updated.rule, updated.intent_id, updated.lead.phone) == ("", "", f"+86{new_phone}")
    _, scored = await wait_for_event(
        nats_url,
        leads.settings.nats_namespace,
        SCORED,
        events_pb2.LeadScored,
        lambda e: e.lead_id == lead["id"],
    )
    assert (scored.previous_score, scored.score) == (lead["score"], edited["score"])

    # The keys follow the profile: the new phone finds this lead, the old one is free.
    again = await client.post(
        "/v1/leads",
        json={"full_name": "Wang Wu", "phone": new_phone},
        headers=tenant.auth("d1-rep"),
    )
    assert (again.status_code, again.json()["id"]) == (200, lead["id"])
    fresh = await client.post(
        "/v1/leads",
        json={"full_name": "Someone", "phone": old_phone},
        headers=tenant.auth("d1-rep"),
    )
    assert fresh.status_code == 201, fresh.text


async def test_patch_without_a_change_writes_nothing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    lead = await capture(client, tenant)
    national = lead["phone"].removeprefix("+86")
    r = await patch(client, tenant, lead["id"], {"phone": national, "city": " Suzhou "})
    assert r.status_code == 200, r.text
    assert r.json()["etag"] == lead["etag"]
    history = await client.get(f"/v1/leads/{lead['id']}/history", headers=tenant.auth("d1-rep"))
    assert history.json()["changes"] == []


async def test_stale_if_match_is_409_and_changes_nothing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    lead = await capture(client, tenant)
    first = await patch(
        client, tenant, lead["id"], {"company": "First"}, **{"If-Match": lead["etag"]}
    )
    assert first.status_code == 200, first.text
    r = await patch(client, tenant, lead["id"], {"company": "Second"}, **{"If-Match": lead["etag"]})
    problem(r, 409, "LEAD_VERSION_MISMATCH")
    assert (await read(client, tenant, lead["id"]))["company"] == "First"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone": "12345"}, "phone"),
        ({"email": "not-an-email"}, "email"),
        ({"full_name": ""}, "full_name"),
        ({"open_id": "short"}, "open_id"),
        ({"company": "x" * 201}, "company"),
        ({"city": 7}, "city"),
    ],
)
async def test_invalid_value_is_422_naming_the_field(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    lead = await capture(client, tenant)
    r = await patch(client, tenant, lead["id"], body)
    assert r.status_code == 422, r.text
    assert field in {v["field"] for v in r.json()["violations"]}, r.json()
    assert (await read(client, tenant, lead["id"]))["etag"] == lead["etag"]


@pytest.mark.parametrize("body", [{"status": "LEAD_STATUS_CLOSED", "company": "X"}, {"score": 99}])
async def test_read_only_field_is_422_on_update_mask(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any]
) -> None:
    lead = await capture(client, tenant)
    r = await patch(client, tenant, lead["id"], body)
    violations = problem(r, 422, "LEAD_INVALID")["violations"]
    bad = next(k for k in body if k != "company")
    assert violations == [
        {"field": "update_mask", "description": f"unknown or read-only field {bad!r}"}
    ]
    r = await patch(client, tenant, lead["id"], {})
    assert problem(r, 422, "LEAD_INVALID")["violations"][0]["field"] == "update_mask"
    assert (await read(client, tenant, lead["id"]))["etag"] == lead["etag"]


async def test_clearing_every_contact_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    lead = await capture(client, tenant, email="wu@example.com")
    r = await patch(client, tenant, lead["id"], {"phone": None})
    assert r.status_code == 200, r.text  # the email still reaches the person
    r = await patch(client, tenant, lead["id"], {"email": ""})
    violations = problem(r, 422, "LEAD_INVALID")["violations"]
    assert [v["field"] for v in violations] == ["phone"]
    assert (await read(client, tenant, lead["id"]))["email"] == "wu@example.com"


async def test_contact_of_another_lead_is_409_naming_it_only_when_visible(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    mine = await capture(client, tenant)
    other = await capture(client, tenant)
    sibling = await capture(client, tenant, who="d2-rep")
    r = await patch(client, tenant, mine["id"], {"phone": other["phone"], "company": "C"})
    body = problem(r, 409, "LEAD_DUPLICATE")
    assert body["violations"] == [
        {"field": "phone", "description": f"already the phone of lead {other['id']}"}
    ]
    r = await patch(client, tenant, mine["id"], {"phone": sibling["phone"]})
    body = problem(r, 409, "LEAD_DUPLICATE")
    assert body["violations"] == [
        {"field": "phone", "description": "already the phone of another lead"}
    ]
    assert sibling["id"] not in r.text
    after = await read(client, tenant, mine["id"])
    assert (after["phone"], after["company"], after["etag"]) == (mine["phone"], "", mine["etag"])


async def test_sibling_dealers_lead_is_404(client: httpx.AsyncClient, tenant: Tenant) -> None:
    sibling = await capture(client, tenant, who="d2-rep")
    r = await patch(client, tenant, sibling["id"], {"company": "Mine now"})
    problem(r, 404, "LEAD_NOT_FOUND")
    r = await client.patch(
        f"/v1/leads/{sibling['id']}", json={"company": "Ok"}, headers=tenant.auth("hq-manager")
    )
    assert r.status_code == 200, r.text  # the subtree above sees (and edits) it


async def test_closed_lead_is_409(client: httpx.AsyncClient, tenant: Tenant) -> None:
    lead = await capture(client, tenant, full_name="111")  # placeholder name: in review
    r = await client.post(
        f"/v1/leads/{lead['id']}:verify",
        json={"decision": "INVALID"},
        headers=tenant.auth("hq-manager"),
    )
    assert r.status_code == 200, r.text
    r = await patch(client, tenant, lead["id"], {"full_name": "Real Name"})
    problem(r, 409, "LEAD_NOT_OPEN")


async def test_grpc_update_lead_with_a_mask(leads: Runtime, tenant: Tenant) -> None:
    md = (("authorization", f"Bearer {tenant.tokens['d1-rep']}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{leads.grpc_port}") as channel:
        stub = lead_service_pb2_grpc.LeadServiceStub(channel)
        lead = await stub.CreateLead(
            lead_service_pb2.CreateLeadRequest(
                lead=lead_pb2.Lead(full_name="Grpc", phone=mobile(), city="Ningbo")
            ),
            metadata=md,
        )
        # Fields outside the mask are ignored, even when set; a masked empty one clears.
        updated = await stub.UpdateLead(
            lead_service_pb2.UpdateLeadRequest(
                lead=lead_pb2.Lead(
                    id=lead.id, etag=lead.etag, email="G@Example.com", full_name="Ignored"
                ),
                update_mask=FieldMask(paths=["email", "city"]),
            ),
            metadata=md,
        )
        assert (updated.email, updated.city, updated.full_name) == ("g@example.com", "", "Grpc")
        assert updated.etag != lead.etag

        stale = lead_service_pb2.UpdateLeadRequest(
            lead=lead_pb2.Lead(id=lead.id, etag=lead.etag, company="Stale"),
            update_mask=FieldMask(paths=["company"]),
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.UpdateLead(stale, metadata=md)
        assert err.value.code() == grpc.StatusCode.ABORTED

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.UpdateLead(
                lead_service_pb2.UpdateLeadRequest(
                    lead=lead_pb2.Lead(id=lead.id, company="X"),
                    update_mask=FieldMask(paths=["company", "owner_org_id", "nope"]),
                ),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(err.value)
        assert status is not None
        bad = error_details_pb2.BadRequest()
        assert any(d.Unpack(bad) for d in status.details)
        assert [(v.field, v.description) for v in bad.field_violations] == [
            ("update_mask", "unknown or read-only field 'nope'"),
            ("update_mask", "unknown or read-only field 'owner_org_id'"),
        ]
        got = await stub.GetLead(lead_service_pb2.GetLeadRequest(id=lead.id), metadata=md)
        assert (got.company, got.etag) == ("", updated.etag)


async def test_a_key_an_edit_just_freed_is_claimed_by_the_capture_that_missed_it(
    client: httpx.AsyncClient, leads: Runtime, tenant: Tenant
) -> None:
    """The capture race with an edit: the capture's claim of a phone fails (another lead
    holds it), the edit then moves that lead to a new phone and commits, and the capture's
    owner lookup finds no holder. The capture must take the key, not fail."""
    import uuid

    from crm_leads.lead.service import key_owner

    phone = mobile()
    first = await capture(client, tenant, phone=phone)
    e164 = first["phone"]
    tenant_id, newcomer = uuid.UUID(tenant.id), uuid.uuid4()
    async with leads.db.unit_of_work() as conn:
        # Before the edit: the lookup names the holder; nothing is claimed.
        assert await key_owner(conn, tenant_id, newcomer, "phone", e164) == uuid.UUID(first["id"])
        await conn.rollback()
    r = await patch(client, tenant, first["id"], {"phone": mobile()})
    assert r.status_code == 200, r.text
    async with leads.db.unit_of_work() as conn:
        # After it: no holder any more, so the capture claims the key itself.
        assert await key_owner(conn, tenant_id, newcomer, "phone", e164) is None
        holder = await conn.execute(
            sa.text("SELECT lead_id FROM lead_keys WHERE tenant_id = :t AND value = :v"),
            {"t": tenant_id, "v": e164},
        )
        assert holder.scalar_one() == newcomer
        await conn.rollback()
    # End to end: a capture with the freed phone makes a new lead.
    second = await capture(client, tenant, phone=phone)
    assert second["id"] != first["id"]
