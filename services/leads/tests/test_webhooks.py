"""Signed webhook capture through REST against real PostgreSQL and NATS: sources, signature
and timestamp checks, replay protection, and each platform's payload mapping."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conftest import Tenant, http_client
from crm_platform.runtime import Runtime
from crm_platform.testing.rest import listed_count


def mobile() -> str:
    return "139" + "".join(random.choices("0123456789", k=8))


def signed(secret: str, body: bytes, *, at: int | None = None) -> dict[str, str]:
    """What a platform sends: HMAC-SHA256(secret, f"{timestamp}." + body), written out here
    rather than imported, so the test pins the wire contract."""
    timestamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "X-Crm-Signature": f"sha256={mac.hexdigest()}",
        "X-Crm-Timestamp": str(timestamp),
        "Content-Type": "application/json",
    }


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


@pytest.fixture(scope="module")
async def d1_manager(tenant: Tenant) -> dict[str, str]:
    """A manager of dealer d1 (the shared tenant has reps there only)."""
    username = f"d1-wh-mgr-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=tenant.directory_url, timeout=10) as c:
        r = await c.post(
            "/v1/users",
            json={
                "org_unit_id": tenant.units["d1"]["id"],
                "username": username,
                "password": "d1-wh-mgr-pw-123",
                "roles": ["manager"],
            },
            headers=tenant.auth("admin"),
        )
        r.raise_for_status()
        r = await c.post(
            "/v1/auth/token",
            json={"tenant": tenant.slug, "username": username, "password": "d1-wh-mgr-pw-123"},
        )
        r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def new_source(
    client: httpx.AsyncClient, headers: dict[str, str], platform: str
) -> tuple[str, str]:
    """(source id, secret) of a new source of d1."""
    r = await client.post(
        "/v1/webhook-sources",
        json={"name": f"{platform} feed", "platform": platform},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return r.json()["webhook_source"]["id"], r.json()["secret"]


async def deliver(
    client: httpx.AsyncClient, source_id: str, secret: str, payload: Any, *, at: int | None = None
) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await client.post(
        f"/v1/webhooks/{source_id}", content=body, headers=signed(secret, body, at=at)
    )


async def lead_of(client: httpx.AsyncClient, tenant: Tenant, lead_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/leads/{lead_id}", headers=tenant.auth("d1-rep"))
    assert r.status_code == 200, r.text
    lead: dict[str, Any] = r.json()
    return lead


async def test_secret_is_shown_once_and_never_listed(
    client: httpx.AsyncClient, tenant: Tenant, d1_manager: dict[str, str]
) -> None:
    r = await client.post(
        "/v1/webhook-sources",
        json={"name": " Expo form ", "platform": "generic"},
        headers=d1_manager,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert len(created["secret"]) >= 43  # 32 random bytes, URL-safe base64
    source = created["webhook_source"]
    assert source["name"] == "Expo form"
    assert source["owner_org_path"] == f"/{tenant.slug}/east/d1/"
    assert source["url"] == f"/v1/webhooks/{source['id']}"
    for who in (d1_manager, tenant.auth("hq-manager")):  # the unit and the units above it
        listed = await client.get("/v1/webhook-sources", headers=who)
        assert listed.status_code == 200, listed.text
        assert source in listed.json()["webhook_sources"]
        assert created["secret"] not in listed.text
        assert all("secret" not in x for x in listed.json()["webhook_sources"])


async def test_only_managers_create_sources_for_their_own_unit(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = {"name": "feed", "platform": "generic"}
    r = await client.post("/v1/webhook-sources", json=body, headers=tenant.auth("d1-rep"))
    assert r.status_code == 403
    assert r.json()["reason"] == "ROLE_REQUIRED"
    r = await client.get("/v1/webhook-sources", headers=tenant.auth("d1-rep"))
    assert r.status_code == 403
    r = await client.post(
        "/v1/webhook-sources",
        json={"name": "", "platform": "fax", "org_unit_id": tenant.units["d1"]["id"]},
        headers=tenant.auth("hq-manager"),
    )
    assert r.status_code == 422
    assert r.json()["reason"] == "WEBHOOK_SOURCE_INVALID"
    assert [v["field"] for v in r.json()["violations"]] == ["name", "platform", "org_unit_id"]


async def test_generic_delivery_creates_a_lead_of_the_sources_unit(
    client: httpx.AsyncClient, tenant: Tenant, d1_manager: dict[str, str]
) -> None:
    source_id, secret = await new_source(client, d1_manager, "generic")
    phone = mobile()
    payload = {
        "name": "Wang Wu",
        "phone": " ".join((phone[:3], phone[3:7], phone[7:])),
        "email": "WW@Example.com",
        "city": "Hangzhou",
        "campaign": "spring-expo",
        "product": "SUV",
    }
    r = await deliver(client, source_id, secret, payload)
    assert r.status_code == 201, r.text
    assert r.headers["crm-capture-outcome"] == "created"
    assert r.json()["outcome"] == "CREATED"
    lead = await lead_of(client, tenant, r.json()["lead_id"])
    assert (lead["full_name"], lead["phone"]) == ("Wang Wu", f"+86{phone}")
    assert (lead["email"], lead["city"]) == ("ww@example.com", "Hangzhou")
    assert lead["source"] == "webhook"
    assert lead["owner_org_path"] == f"/{tenant.slug}/east/d1/"
    assert [(i["campaign"], i["product_interest"]) for i in lead["intents"]] == [
        ("spring-expo", "SUV")
    ]
    hidden = await client.get(f"/v1/leads/{lead['id']}", headers=tenant.auth("d2-rep"))
    assert hidden.status_code == 404
    # The platform retries (new timestamp, so a new signature): the same answer, no new intent.
    again = await deliver(client, source_id, secret, payload, at=int(time.time()) + 1)
    assert again.status_code == 201, again.text
    assert again.json() == r.json()
    assert (await lead_of(client, tenant, lead["id"]))["intent_count"] == 1


async def test_duplicate_of_a_sibling_dealers_lead_is_not_revealed(
    client: httpx.AsyncClient, tenant: Tenant, d1_manager: dict[str, str]
) -> None:
    phone = mobile()
    theirs = await client.post(
        "/v1/leads", json={"full_name": "D2", "phone": phone}, headers=tenant.auth("d2-rep")
    )
    assert theirs.status_code == 201, theirs.text
    source_id, secret = await new_source(client, d1_manager, "generic")
    r = await deliver(client, source_id, secret, {"name": "D2 again", "phone": phone})
    assert r.status_code == 202, r.text
    assert r.json() == {"outcome": "MERGED", "lead_id": None}


async def test_wechat_deliveries_of_one_follower_merge(
    client: httpx.AsyncClient, tenant: Tenant, d1_manager: dict[str, str]
) -> None:
    source_id, secret = await new_source(client, d1_manager, "wechat")
    openid = "o" + uuid.uuid4().hex[:27]
    follower = {"openid": openid, "unionid": "u" + uuid.uuid4().hex[:27], "nickname": "小李"}
    first = await deliver(client, source_id, secret, {**follower, "scene": "qr-store-1"})
    assert first.status_code == 201, first.text
    second = await deliver(
        client, source_id, secret, {**follower, "scene": "qr-expo", "mobile": mobile()}
    )
    assert second.status_code == 200, second.text
    assert second.headers["crm-capture-outcome"] == "merged"
    assert second.json() == {"outcome": "MERGED", "lead_id": first.json()["lead_id"]}
    lead = await lead_of(client, tenant, first.json()["lead_id"])
    assert (lead["open_id"], lead["full_name"], lead["source"]) == (openid, "小李", "wechat")
    assert lead["intent_count"] == 2
    assert lead["phone"].startswith("+86139")  # filled by the merge
    assert [i["campaign"] for i in lead["intents"]] == ["qr-expo", "qr-store-1"]


async def test_ad_platform_field_data_is_mapped(
    client: httpx.AsyncClient, tenant: Tenant, d1_manager: dict[str, str]
) -> None:
    source_id, secret = await new_source(client, d1_manager, "ad_platform")
    phone = mobile()
    payload = {
        "lead_id": f"ad-{uuid.uuid4().hex}",
        "campaign_name": "双十一",
        "ad_id": "2381",
        "field_data": [
            {"name": "full_name", "values": ["Zhao Liu"]},
            {"name": "phone_number", "values": [phone]},
            {"name": "company_name", "values": ["Liu Motors"]},
            {"name": "product_interest", "values": ["SUV", "MPV"]},
        ],
    }
    r = await deliver(client, source_id, secret, payload)
    assert r.status_code == 201, r.text
    lead = await lead_of(client, tenant, r.json()["lead_id"])
    assert (lead["full_name"], lead["phone"], lead["company"]) == (
        "Zhao Liu",
        f"+86{phone}",
        "Liu Motors",
    )
    assert (lead["intents"][0]["campaign"], lead["intents"][0]["product_interest"]) == (
        "双十一",
        "SUV, MPV",
    )
    # A retry re-serialised by the platform is the same enquiry: its lead_id says so.
    reserialised = json.dumps(payload, indent=2, ensure_ascii=False).encode()
    again = await deliver(client, source_id, secret, reserialised, at=int(time.time()) + 1)
    assert again.json() == r.json()
    assert (await lead_of(client, tenant, lead["id"]))["intent_count"] == 1
    # The same lead_id for someone else is refused, and the refusal records no delivery:
    # sending the very same request again is refused the same way, not as a replay.
    other = {
        **payload,
        "field_data": [
            {"name": "full_name", "values": ["Other"]},
            {"name": "email", "values": [f"{uuid.uuid4().hex}@x.cn"]},
        ],
    }
    body = json.dumps(other).encode()
    headers = signed(secret, body)
    for _ in range(2):
        refused = await client.post(f"/v1/webhooks/{source_id}", content=body, headers=headers)
        assert refused.status_code == 409, refused.text
        assert refused.json()["reason"] == "WEBHOOK_EVENT_ID_REUSED"


async def test_signature_and_timestamp_failures(
    client: httpx.AsyncClient, d1_manager: dict[str, str]
) -> None:
    source_id, secret = await new_source(client, d1_manager, "generic")
    body = json.dumps({"name": "Sig", "phone": mobile()}).encode()
    now = int(time.time())
    cases = {
        "WEBHOOK_SIGNATURE_MISSING": {"Content-Type": "application/json"},
        "WEBHOOK_SIGNATURE_INVALID": signed("not-the-secret", body),
        "WEBHOOK_TIMESTAMP_INVALID": {**signed(secret, body), "X-Crm-Timestamp": "12.5"},
        "WEBHOOK_TIMESTAMP_STALE": signed(secret, body, at=now - 301),
    }
    for reason, headers in cases.items():
        r = await client.post(f"/v1/webhooks/{source_id}", content=body, headers=headers)
        assert (r.status_code, r.json()["reason"]) == (401, reason), r.text
    tampered = body.replace(b"Sig", b"Gis")
    r = await client.post(
        f"/v1/webhooks/{source_id}", content=tampered, headers=signed(secret, body)
    )
    assert (r.status_code, r.json()["reason"]) == (401, "WEBHOOK_SIGNATURE_INVALID")
    future = signed(secret, body, at=now + 400)
    r = await client.post(f"/v1/webhooks/{source_id}", content=body, headers=future)
    assert (r.status_code, r.json()["reason"]) == (401, "WEBHOOK_TIMESTAMP_STALE")


async def test_exact_replay_is_refused_and_writes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, d1_manager: dict[str, str]
) -> None:
    source_id, secret = await new_source(client, d1_manager, "generic")
    body = json.dumps({"name": "Replay", "email": f"{uuid.uuid4().hex[:8]}@example.com"}).encode()
    headers = signed(secret, body)
    first = await client.post(f"/v1/webhooks/{source_id}", content=body, headers=headers)
    assert first.status_code == 201, first.text
    leads_before = await listed_count(client, "/v1/leads", tenant.auth("d1-rep"))
    replay = await client.post(f"/v1/webhooks/{source_id}", content=body, headers=headers)
    assert replay.status_code == 409, replay.text
    assert replay.json()["reason"] == "WEBHOOK_REPLAYED"
    # Re-cased hex is the same signature, so still a replay.
    recased = {
        **headers,
        "X-Crm-Signature": "sha256=" + headers["X-Crm-Signature"].removeprefix("sha256=").upper(),
    }
    again = await client.post(f"/v1/webhooks/{source_id}", content=body, headers=recased)
    assert again.json()["reason"] == "WEBHOOK_REPLAYED"
    assert await listed_count(client, "/v1/leads", tenant.auth("d1-rep")) == leads_before
    assert (await lead_of(client, tenant, first.json()["lead_id"]))["intent_count"] == 1


async def test_unknown_source_is_not_found(client: httpx.AsyncClient) -> None:
    body = b'{"name": "Nobody", "phone": "13900000000"}'
    for source_id in (str(uuid.uuid4()), "not-a-uuid"):
        r = await client.post(
            f"/v1/webhooks/{source_id}", content=body, headers=signed("guess", body)
        )
        assert (r.status_code, r.json()["reason"]) == (404, "WEBHOOK_SOURCE_NOT_FOUND")


async def test_payload_errors_name_the_payload_field(
    client: httpx.AsyncClient, tenant: Tenant, d1_manager: dict[str, str]
) -> None:
    generic_id, generic_secret = await new_source(client, d1_manager, "generic")
    ad_id, ad_secret = await new_source(client, d1_manager, "ad_platform")
    leads_before = await listed_count(client, "/v1/leads", tenant.auth("d1-rep"))
    r = await deliver(client, generic_id, generic_secret, b'{"name": "Broken"')
    assert (r.status_code, r.json()["reason"]) == (400, "MALFORMED_JSON")
    r = await deliver(client, generic_id, generic_secret, [1, 2])
    assert (r.status_code, r.json()["violations"][0]["field"]) == (422, "body")
    cases: list[tuple[str, str, Any, str, list[str]]] = [
        (generic_id, generic_secret, {"company": "X"}, "LEAD_INVALID", ["name", "phone"]),
        (
            generic_id,
            generic_secret,
            {"name": "X", "phone": 139, "fax": "1"},
            "WEBHOOK_PAYLOAD_INVALID",
            ["fax", "phone"],
        ),
        (
            ad_id,
            ad_secret,
            {"field_data": [{"name": "full_name", "values": ["X"]}, {"name": "age", "values": []}]},
            "WEBHOOK_PAYLOAD_INVALID",
            ["lead_id", "field_data.age"],
        ),
        (
            ad_id,
            ad_secret,
            {"lead_id": "l-1", "field_data": [{"name": "phone_number", "values": ["12"]}]},
            "LEAD_INVALID",
            ["field_data.full_name", "field_data.phone_number"],
        ),
        # No text column can hold a NUL or a lone surrogate (the JSON escape "\ud800"):
        # refused naming the payload field, not a 500 — also where the value is not a lead
        # field but the platform's event id, which is hashed into the idempotency key.
        (
            generic_id,
            generic_secret,
            {"name": "Zhang\x00San", "phone": "13800138000", "company": "A\x00"},
            "WEBHOOK_PAYLOAD_INVALID",
            ["name", "company"],
        ),
        (
            generic_id,
            generic_secret,
            b'{"name": "Zhang\\ud800", "phone": "13800138000"}',
            "WEBHOOK_PAYLOAD_INVALID",
            ["name"],
        ),
        (
            ad_id,
            ad_secret,
            b'{"lead_id": "l-\\udfff", "field_data": [{"name": "full_name", "values": ["X"]}]}',
            "WEBHOOK_PAYLOAD_INVALID",
            ["lead_id"],
        ),
    ]
    for source_id, secret, payload, reason, fields in cases:
        r = await deliver(client, source_id, secret, payload)
        assert r.status_code == 422, r.text
        assert r.json()["reason"] == reason
        assert [v["field"] for v in r.json()["violations"]] == fields
    assert await listed_count(client, "/v1/leads", tenant.auth("d1-rep")) == leads_before


async def test_body_over_the_limit_is_refused(
    client: httpx.AsyncClient, leads: Runtime, d1_manager: dict[str, str]
) -> None:
    source_id, secret = await new_source(client, d1_manager, "generic")
    body = json.dumps({"name": "x" * leads.settings.max_body_bytes}).encode()
    r = await client.post(f"/v1/webhooks/{source_id}", content=body, headers=signed(secret, body))
    assert r.status_code == 413
