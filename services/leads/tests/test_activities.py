"""Follow-up activities through REST against real PostgreSQL and NATS: who may log them,
validation naming fields, listing newest first, the followed_up event and the follow-up
hooks run in the activity's transaction."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from conftest import Tenant, http_client
from crm.leads.v1 import events_pb2
from crm_leads.activities import hooks
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


async def held_lead(c: httpx.AsyncClient, t: Tenant) -> str:
    phone = "139" + "".join(random.choices("0123456789", k=8))
    r = await c.post(
        "/v1/leads", json={"full_name": "Wang", "phone": phone}, headers=t.auth("d1-rep")
    )
    lead_id = str(r.json()["id"])
    assert (await c.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("d1-rep"))).is_success
    return lead_id


async def test_holder_and_managers_log_activities_listed_newest_first(
    client: httpx.AsyncClient, leads: Runtime, tenant: Tenant
) -> None:
    lead_id = await held_lead(client, tenant)
    seen: list[hooks.FollowUp] = []

    async def hook(conn: AsyncConnection, follow_up: hooks.FollowUp) -> None:
        seen.append(follow_up)

    hooks.FOLLOW_UP_HOOKS.append(hook)
    try:
        yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        r = await client.post(
            f"/v1/leads/{lead_id}/activities",
            json={"kind": "call", "note": "no answer", "occur_time": yesterday},
            headers=tenant.auth("d1-rep"),
        )
        assert r.status_code == 201, r.text
        first = r.json()
        assert (first["kind"], first["note"]) == ("call", "no answer")
        r = await client.post(
            f"/v1/leads/{lead_id}/activities",
            json={"kind": "note", "note": "escalate"},
            headers=tenant.auth("hq-manager"),
        )
        assert r.status_code == 201, r.text
        second = r.json()
    finally:
        hooks.FOLLOW_UP_HOOKS.remove(hook)
    assert [x.lead_id for x in seen] == [uuid.UUID(lead_id)] * 2
    assert [(str(x.activity_id), x.kind) for x in seen] == [
        (first["id"], "call"),
        (second["id"], "note"),
    ]
    assert seen[0].at == datetime.fromisoformat(yesterday)

    r = await client.get(f"/v1/leads/{lead_id}/activities", headers=tenant.auth("d1-rep"))
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()["activities"]] == [second["id"], first["id"]]
    r = await client.get(
        f"/v1/leads/{lead_id}/activities", params={"page_size": 1}, headers=tenant.auth("d1-rep")
    )
    assert [x["id"] for x in r.json()["activities"]] == [second["id"]]
    assert r.json()["next_page_token"]

    _, payload = await wait_for_event(
        leads.settings.nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead.followed_up.v1",
        events_pb2.LeadFollowedUp,
        lambda p: p.activity_id == first["id"],
    )
    assert payload.lead_id == lead_id
    assert payload.kind == events_pb2.LEAD_ACTIVITY_KIND_CALL
    assert payload.assignee_id and payload.actor == payload.assignee_id


async def test_others_are_refused_and_siblings_see_nothing(
    client: httpx.AsyncClient, dir_client: httpx.AsyncClient, other_tenant: Tenant
) -> None:
    tenant = other_tenant  # a fresh one: the colleague added below stays out of shared lists
    lead_id = await held_lead(client, tenant)
    r = await dir_client.post(
        "/v1/users",
        json={
            "org_unit_id": tenant.units["d1"]["id"],
            "username": f"act-{uuid.uuid4().hex[:6]}",
            "password": "act-rep-pw-123",
            "roles": ["rep"],
        },
        headers=tenant.auth("admin"),
    )
    name = r.json()["username"]
    r = await dir_client.post(
        "/v1/auth/token",
        json={"tenant": tenant.slug, "username": name, "password": "act-rep-pw-123"},
    )
    colleague = {"Authorization": f"Bearer {r.json()['access_token']}"}
    body = {"kind": "visit"}
    r = await client.post(f"/v1/leads/{lead_id}/activities", json=body, headers=colleague)
    assert r.status_code == 403
    assert r.json()["reason"] == "ACTIVITY_NOT_ALLOWED"
    for method in ("post", "get"):
        kwargs = {"json": body} if method == "post" else {}
        r = await getattr(client, method)(
            f"/v1/leads/{lead_id}/activities", headers=tenant.auth("d2-rep"), **kwargs
        )
        assert r.status_code == 404
        assert r.json()["reason"] == "LEAD_NOT_FOUND"


async def test_bad_activities_are_422_naming_the_field(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    lead_id = await held_lead(client, tenant)
    url = f"/v1/leads/{lead_id}/activities"
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for body, field in (
        ({"kind": "fax"}, "kind"),
        ({"kind": "call", "note": "x" * 4001}, "note"),
        ({"kind": "call", "occur_time": "2025-01-01T10:00:00"}, "occur_time"),  # no offset
        ({"kind": "call", "occur_time": tomorrow}, "occur_time"),
        ({"kind": "call", "by": "me"}, "by"),
    ):
        r = await client.post(url, json=body, headers=tenant.auth("d1-rep"))
        assert r.status_code == 422, (body, r.text)
        assert [v["field"] for v in r.json()["violations"]] == [field]
