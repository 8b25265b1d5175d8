"""De-duplication (system keys: phone, email, WeChat open_id), merge into intents, and batch
capture, through REST against real PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from conftest import Tenant, http_client
from crm.leads.v1 import events_pb2
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event


def mobile() -> str:
    return "139" + "".join(random.choices("0123456789", k=8))


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


async def capture(c: httpx.AsyncClient, tenant: Tenant, who: str, **body: object) -> httpx.Response:
    return await c.post("/v1/leads", json={"full_name": "Dup", **body}, headers=tenant.auth(who))


async def test_repeat_enquiry_merges_into_intents(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    phone = mobile()
    first = await capture(client, tenant, "d1-rep", phone=phone, intent={"campaign": "spring"})
    assert first.status_code == 201
    assert first.headers["crm-capture-outcome"] == "created"
    again = await capture(
        client,
        tenant,
        "d1-rep",
        phone=phone,
        email="dup@example.com",
        intent={"campaign": "summer", "product_interest": "SUV"},
    )
    assert again.status_code == 200, again.text
    assert again.headers["crm-capture-outcome"] == "merged"
    lead = again.json()
    assert lead["id"] == first.json()["id"]
    assert lead["intent_count"] == 2
    assert lead["email"] == "dup@example.com"  # a blank field is filled, nothing overwritten
    assert [i["campaign"] for i in lead["intents"]] == ["summer", "spring"]
    # The new email is now a key of the same lead.
    by_email = await capture(client, tenant, "d1-rep", email="DUP@example.com")
    assert by_email.json()["id"] == lead["id"]
    assert by_email.json()["intent_count"] == 3


async def test_concurrent_duplicates_make_one_lead(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    phone = mobile()
    answers = await asyncio.gather(
        *(capture(client, tenant, "d1-rep", phone=phone) for _ in range(20))
    )
    assert sorted(r.status_code for r in answers) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in answers}) == 1
    got = await client.get(f"/v1/leads/{answers[0].json()['id']}", headers=tenant.auth("d1-rep"))
    assert got.json()["intent_count"] == 20


async def test_duplicate_of_a_sibling_dealers_lead_does_not_leak_it(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    phone = mobile()
    mine = (await capture(client, tenant, "d1-rep", phone=phone)).json()
    theirs = await capture(client, tenant, "d2-rep", phone=phone)
    assert theirs.status_code == 202
    assert theirs.json() == {"outcome": "MERGED", "lead": None}
    got = await client.get(f"/v1/leads/{mine['id']}", headers=tenant.auth("d1-rep"))
    assert got.json()["intent_count"] == 2


async def test_retried_capture_changes_nothing(client: httpx.AsyncClient, tenant: Tenant) -> None:
    phone = mobile()
    await capture(client, tenant, "d1-rep", phone=phone)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    headers = {**tenant.auth("d1-rep"), **key}
    body = {"full_name": "Retry", "phone": phone}
    first = await client.post("/v1/leads", json=body, headers=headers)
    retry = await client.post("/v1/leads", json=body, headers=headers)
    assert first.status_code == retry.status_code == 200
    assert first.json()["intent_count"] == retry.json()["intent_count"] == 2
    reused = await client.post(
        "/v1/leads", json={"full_name": "Other", "phone": mobile()}, headers=headers
    )
    assert reused.status_code == 409
    assert reused.json()["reason"] == "IDEMPOTENCY_KEY_REUSED"


async def test_wechat_open_id_is_a_dedup_key(client: httpx.AsyncClient, tenant: Tenant) -> None:
    open_id = "o" + uuid.uuid4().hex[:27]
    first = await capture(client, tenant, "d1-rep", open_id=open_id, source="wechat")
    assert first.status_code == 201, first.text
    again = await capture(client, tenant, "d1-rep", open_id=open_id, phone=mobile())
    assert again.json()["id"] == first.json()["id"]
    bad = await capture(client, tenant, "d1-rep", open_id="not valid!")
    assert bad.status_code == 422
    assert bad.json()["violations"][0]["field"] == "open_id"


async def test_batch_reports_each_item(client: httpx.AsyncClient, tenant: Tenant) -> None:
    phone, other = mobile(), mobile()
    r = await client.post(
        "/v1/leads:batchCreate",
        json={
            "leads": [
                {"full_name": "A", "phone": phone},
                {"full_name": "A again", "phone": phone},
                {"full_name": "Bad", "phone": "12"},
                {"full_name": "B", "phone": other, "request_id": "not-a-uuid"},
                {"full_name": "C", "email": f"{uuid.uuid4().hex[:8]}@example.com"},
            ]
        },
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["outcome"] for x in results] == [
        "CREATED",
        "MERGED",
        "REJECTED",
        "REJECTED",
        "CREATED",
    ]
    assert results[1]["lead"]["id"] == results[0]["lead"]["id"]
    assert results[1]["lead"]["intent_count"] == 2
    assert results[2]["violations"][0]["field"] == "phone"
    assert results[3]["violations"][0]["field"] == "request_id"


async def test_batch_over_the_limit_writes_nothing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    items = [{"full_name": f"N{i}", "phone": mobile()} for i in range(1001)]
    r = await client.post(
        "/v1/leads:batchCreate", json={"leads": items}, headers=tenant.auth("d1-rep")
    )
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "leads"
    r = await client.post(
        "/v1/leads:batchCreate", json={"leads": []}, headers=tenant.auth("d1-rep")
    )
    assert r.status_code == 422


async def test_merge_publishes_lead_merged(
    client: httpx.AsyncClient, tenant: Tenant, leads: Runtime, nats_url: str
) -> None:
    phone = mobile()
    lead = (await capture(client, tenant, "d1-rep", phone=phone)).json()
    await capture(client, tenant, "d1-rep", phone=phone, intent={"campaign": "expo"})
    _, merged = await wait_for_event(
        nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead.merged.v1",
        events_pb2.LeadMerged,
        lambda m: m.lead.id == lead["id"],
    )
    assert merged.lead.intent_count == 2
    assert merged.intent.campaign == "expo"
