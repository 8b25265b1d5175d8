"""Per-tenant lead settings through REST against real PostgreSQL and NATS: reading and
replacing them, who may, validation, and their effect on capture (REST, webhooks, imports)
and on the stale-lead job. Tenants whose settings change are made here, so other tests keep
the service defaults."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conftest import Tenant, http_client, make_tenant
from crm_leads.lead import review
from crm_leads.lead.models import leads as leads_table
from crm_leads.tenantsettings.rules import LeadSettings, parse_settings
from crm_platform.errors import InvalidArgument
from crm_platform.runtime import Runtime
from crm_platform.testing.harness import eventually

US_E164 = "+16502530000"


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


async def put_settings(
    c: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], who: str = "admin"
) -> httpx.Response:
    return await c.put("/v1/lead-settings", json=body, headers=tenant.auth(who))


async def tenant_with(c: httpx.AsyncClient, directory: Runtime, body: dict[str, Any]) -> Tenant:
    t = await make_tenant(directory)
    r = await put_settings(c, t, body)
    assert r.status_code == 200, r.text
    return t


POOL_DEFAULTS = {"private_pool_cap": 200, "reclaim_cooldown_hours": 24}


async def test_defaults_until_an_admin_sets_them(
    client: httpx.AsyncClient, directory: Runtime
) -> None:
    t = await make_tenant(directory)
    r = await client.get("/v1/lead-settings", headers=t.auth("d1-rep"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "version": 0,
        "settings": {
            "stale_lead_days": None,
            "phone_region": None,
            "private_pool_cap": None,
            "reclaim_cooldown_hours": None,
        },
        "effective": {"stale_lead_days": 90, "phone_region": "CN", **POOL_DEFAULTS},
        "from_default": [
            "stale_lead_days",
            "phone_region",
            "private_pool_cap",
            "reclaim_cooldown_hours",
        ],
    }

    r = await put_settings(client, t, {"phone_region": "US"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 1
    assert body["settings"] == {
        "stale_lead_days": None,
        "phone_region": "US",
        "private_pool_cap": None,
        "reclaim_cooldown_hours": None,
    }
    assert body["effective"] == {"stale_lead_days": 90, "phone_region": "US", **POOL_DEFAULTS}
    assert body["from_default"] == ["stale_lead_days", *POOL_DEFAULTS]
    assert body["updated_by"] and body["update_time"]

    pool = {"private_pool_cap": 5, "reclaim_cooldown_hours": 0}
    r = await put_settings(client, t, {"stale_lead_days": 30, "phone_region": "US", **pool})
    assert (r.json()["version"], r.json()["from_default"]) == (2, [])
    got = (await client.get("/v1/lead-settings", headers=t.auth("hq-manager"))).json()
    assert got["effective"] == {"stale_lead_days": 30, "phone_region": "US", **pool}
    assert got["version"] == 2

    # PUT replaces the document: an omitted setting is the service default again.
    r = await put_settings(client, t, {"stale_lead_days": 30})
    assert r.json()["effective"] == {"stale_lead_days": 30, "phone_region": "CN", **POOL_DEFAULTS}
    assert r.json()["from_default"] == ["phone_region", *POOL_DEFAULTS]


async def test_only_tenant_admins_change_settings(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for who in ("d1-rep", "hq-manager"):
        r = await put_settings(client, tenant, {"stale_lead_days": 1}, who=who)
        assert r.status_code == 403, r.text
    got = (await client.get("/v1/lead-settings", headers=tenant.auth("d1-rep"))).json()
    assert got["version"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone_region": "XX"}, "phone_region"),
        ({"phone_region": "cn"}, "phone_region"),
        ({"phone_region": "USA"}, "phone_region"),
        ({"stale_lead_days": 0}, "stale_lead_days"),
        ({"stale_lead_days": 3651}, "stale_lead_days"),
        ({"stale_lead_days": "30"}, "stale_lead_days"),
        ({"stale_days": 30}, "stale_days"),
    ],
)
async def test_bad_settings_are_422_naming_the_field(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    r = await put_settings(client, tenant, body)
    assert r.status_code == 422, r.text
    assert [v["field"] for v in r.json()["violations"]] == [field]


def test_parse_settings_names_each_bad_field() -> None:
    assert parse_settings({"phone_region": "US"}) == LeadSettings(phone_region="US")
    with pytest.raises(InvalidArgument) as caught:
        parse_settings({"phone_region": "XX", "stale_lead_days": 0, "extra": 1})
    assert caught.value.reason == "LEAD_SETTINGS_INVALID"
    assert sorted(v.field for v in caught.value.violations) == [
        "extra",
        "phone_region",
        "stale_lead_days",
    ]


async def test_capture_uses_the_tenants_phone_region(
    client: httpx.AsyncClient, directory: Runtime, tenant: Tenant
) -> None:
    us = await tenant_with(client, directory, {"phone_region": "US"})
    r = await client.post(
        "/v1/leads",
        json={"full_name": "Pat Doe", "phone": "+1 650-253-0000"},
        headers=us.auth("d1-rep"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["phone"] == US_E164
    # National US format: the same number, so the same lead.
    r = await client.post(
        "/v1/leads",
        json={"full_name": "Pat Doe", "phone": "(650) 253-0000"},
        headers=us.auth("d1-rep"),
    )
    assert r.status_code == 200, r.text
    assert (r.json()["phone"], r.json()["intent_count"]) == (US_E164, 2)
    batch = await client.post(
        "/v1/leads:batchCreate",
        json={"leads": [{"full_name": "Sam Roe", "phone": "212-736-5000"}]},
        headers=us.auth("d1-rep"),
    )
    assert batch.json()["results"][0]["lead"]["phone"] == "+12127365000"

    # The default tenant (CN) reads the national US number as a bad Chinese one.
    r = await client.post(
        "/v1/leads",
        json={"full_name": "Pat Doe", "phone": "(650) 253-0000"},
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 422, r.text
    assert [v["field"] for v in r.json()["violations"]] == ["phone"]


def _signed(secret: str, body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "X-Crm-Signature": f"sha256={mac.hexdigest()}",
        "X-Crm-Timestamp": str(timestamp),
        "Content-Type": "application/json",
    }


async def test_webhook_capture_uses_the_sources_tenant_region(
    client: httpx.AsyncClient, directory: Runtime
) -> None:
    us = await tenant_with(client, directory, {"phone_region": "US"})
    r = await client.post(
        "/v1/webhook-sources",
        json={"name": "us form", "platform": "generic"},
        headers=us.auth("admin"),
    )
    assert r.status_code == 201, r.text
    source_id, secret = r.json()["webhook_source"]["id"], r.json()["secret"]
    body = json.dumps({"name": "Pat Doe", "phone": "(650) 253-0000"}).encode()
    r = await client.post(f"/v1/webhooks/{source_id}", content=body, headers=_signed(secret, body))
    assert r.status_code == 201, r.text
    lead = await client.get(f"/v1/leads/{r.json()['lead_id']}", headers=us.auth("admin"))
    assert lead.json()["phone"] == US_E164


async def test_import_normalises_national_numbers_with_the_tenants_region(
    client: httpx.AsyncClient, directory: Runtime
) -> None:
    us = await tenant_with(client, directory, {"phone_region": "US"})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["full_name", "phone", "email", "company", "province", "city", "campaign"])
    writer.writerows(
        [
            ["Pat Doe", "(650) 253-0000", "", "", "", "", ""],
            ["Sam Roe", "212-736-5000", "", "", "", "", ""],
            ["Bad Phone", "12", "", "", "", "", ""],
        ]
    )
    r = await client.post(
        "/v1/lead-imports",
        content=out.getvalue().encode(),
        params={"file_name": "us.csv"},
        headers={**us.auth("d1-rep"), "Content-Type": "text/csv"},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    async def done() -> Any:
        job = (await client.get(f"/v1/lead-imports/{job_id}", headers=us.auth("d1-rep"))).json()
        assert job["state"] in ("SUCCEEDED", "FAILED"), job
        return job

    job = await eventually(done, within=60)
    assert job["state"] == "SUCCEEDED", job
    assert (job["rows_created"], job["rows_invalid"]) == (2, 1)
    listed = await client.get("/v1/leads", params={"page_size": 10}, headers=us.auth("d1-rep"))
    assert sorted(x["phone"] for x in listed.json()["leads"]) == ["+12127365000", US_E164]


async def test_stale_job_closes_by_each_tenants_days(
    client: httpx.AsyncClient, leads: Runtime, directory: Runtime
) -> None:
    quick = await tenant_with(client, directory, {"stale_lead_days": 1})
    patient = await make_tenant(directory)  # the service default, 90 days
    ids = {}
    for name, t in (("quick", quick), ("patient", patient)):
        r = await client.post(
            "/v1/leads",
            json={"full_name": "Li Lei", "phone": "13912345678", "city": "Hangzhou"},
            headers=t.auth("d1-rep"),
        )
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    fresh = (
        await client.post(
            "/v1/leads",
            json={"full_name": "Han Mei", "phone": "13912345679"},
            headers=quick.auth("d1-rep"),
        )
    ).json()["id"]
    async with leads.db.unit_of_work() as conn:
        await conn.execute(
            leads_table.update()
            .where(leads_table.c.id.in_([uuid.UUID(x) for x in ids.values()]))
            .values(update_time=sa.func.now() - sa.text("interval '2 days'"))
        )

    assert await review.close_stale(leads.db, older_than_days=90) >= 1
    lead = (await client.get(f"/v1/leads/{ids['quick']}", headers=quick.auth("d1-rep"))).json()
    assert (lead["status"], lead["closed_reason"]) == ("LEAD_STATUS_CLOSED", "stale")
    for t, lead_id in ((patient, ids["patient"]), (quick, fresh)):
        lead = (await client.get(f"/v1/leads/{lead_id}", headers=t.auth("d1-rep"))).json()
        assert lead["status"] == "LEAD_STATUS_NEW"
