"""Lead pools (公海) through REST against real PostgreSQL and NATS: the pool listing and its
filters, claiming (also concurrently), the caller's held leads, release and take-back, and
the events they publish."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conftest import Tenant, http_client, make_tenant
from crm.leads.v1 import events_pb2
from crm_leads.lead.models import leads as leads_table
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event


def mobile() -> str:
    return "137" + "".join(random.choices("0123456789", k=8))


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


@pytest.fixture
async def t(directory: Runtime, dir_client: httpx.AsyncClient) -> Tenant:
    """A fresh tenant (exact pool contents) with a second rep in d1."""
    tenant = await make_tenant(directory)
    r = await dir_client.post(
        "/v1/users",
        json={
            "org_unit_id": tenant.units["d1"]["id"],
            "username": "d1-rep2",
            "password": "d1-rep2-pw-123",
            "roles": ["rep"],
        },
        headers=tenant.auth("admin"),
    )
    assert r.status_code == 201, r.text
    r = await dir_client.post(
        "/v1/auth/token",
        json={"tenant": tenant.slug, "username": "d1-rep2", "password": "d1-rep2-pw-123"},
    )
    assert r.status_code == 200, r.text
    tenant.tokens["d1-rep2"] = r.json()["access_token"]
    return tenant


async def capture(c: httpx.AsyncClient, t: Tenant, who: str = "d1-rep", **body: Any) -> str:
    fields = {"full_name": "Han Meimei", "phone": mobile(), "city": "Hangzhou", **body}
    r = await c.post("/v1/leads", json=fields, headers=t.auth(who))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def listed(c: httpx.AsyncClient, t: Tenant, who: str, path: str, **params: Any) -> list[str]:
    r = await c.get(f"/v1/leads:{path}", params=params, headers=t.auth(who))
    assert r.status_code == 200, r.text
    return [x["id"] for x in r.json()["leads"]]


async def test_pool_lists_open_unheld_leads_with_filters(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    a = await capture(client, t, source="web", province="Zhejiang", city="Hangzhou")
    b = await capture(client, t, source="expo", province="Jiangsu", city="Suzhou")
    old = await capture(client, t, source="web", province="Zhejiang", city="Ningbo")
    elsewhere = await capture(client, t, who="d2-rep")
    async with leads.db.unit_of_work() as conn:
        for lead_id, grade in ((a, "A"), (b, "B"), (old, "C")):
            await conn.execute(
                leads_table.update()
                .where(leads_table.c.id == uuid.UUID(lead_id))
                .values(grade=grade)
            )
        await conn.execute(
            leads_table.update()
            .where(leads_table.c.id == uuid.UUID(old))
            .values(create_time=sa.func.now() - timedelta(days=10))
        )

    # Newest first; a rep's pool is its own unit's subtree, a manager's the whole tree.
    assert await listed(client, t, "d1-rep", "pool") == [old, b, a]
    assert await listed(client, t, "hq-manager", "pool") == [elsewhere, old, b, a]
    assert await listed(client, t, "d1-rep", "pool", grade=["A", "C"]) == [old, a]
    assert await listed(client, t, "d1-rep", "pool", grade="b") == [b]
    assert await listed(client, t, "d1-rep", "pool", source="web") == [old, a]
    assert await listed(client, t, "d1-rep", "pool", province="Jiangsu") == [b]
    assert await listed(client, t, "d1-rep", "pool", city="Ningbo") == [old]
    assert await listed(client, t, "d1-rep", "pool", min_age_days=7) == [old]
    assert await listed(client, t, "d1-rep", "pool", max_age_days=0) == [b, a]
    assert await listed(client, t, "d1-rep", "pool", min_age_days=10, max_age_days=10) == [old]

    r = await client.get("/v1/leads:pool", params={"grade": "E"}, headers=t.auth("d1-rep"))
    assert r.status_code == 422
    assert [v["field"] for v in r.json()["violations"]] == ["grade"]
    r = await client.get(
        "/v1/leads:pool", params={"min_age_days": 5, "max_age_days": 1}, headers=t.auth("d1-rep")
    )
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "max_age_days"


async def test_pool_pages_are_bound_to_the_filter(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    ids = [await capture(client, t, source="web") for _ in range(3)]
    seen: list[str] = []
    token = first_token = ""
    while True:
        params = {"source": "web", "page_size": 2, "page_token": token}
        r = await client.get("/v1/leads:pool", params=params, headers=t.auth("d1-rep"))
        assert r.status_code == 200, r.text
        seen += [x["id"] for x in r.json()["leads"]]
        token = r.json()["next_page_token"]
        if not token:
            break
        first_token = first_token or token
    assert seen == ids[::-1]
    r = await client.get(
        "/v1/leads:pool",
        params={"source": "expo", "page_token": first_token},
        headers=t.auth("d1-rep"),
    )
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "page_token"


async def test_claim_moves_a_lead_from_the_pool_to_mine(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    lead_id = await capture(client, t)
    r = await client.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("d1-rep"))
    assert r.status_code == 200, r.text
    claimed = r.json()
    assert claimed["assignee_id"]
    assert claimed["assign_time"]
    assert await listed(client, t, "d1-rep", "pool") == []
    assert await listed(client, t, "d1-rep", "mine") == [lead_id]
    assert await listed(client, t, "d1-rep2", "mine") == []

    _, payload = await wait_for_event(
        leads.settings.nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead.claimed.v1",
        events_pb2.LeadClaimed,
        lambda p: p.lead.id == lead_id,
    )
    assert payload.assignee_id == claimed["assignee_id"]
    assert payload.lead.assignee_id == claimed["assignee_id"]

    # Held: a second claim, even by the holder, is a conflict.
    r = await client.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("d1-rep2"))
    assert r.status_code == 409
    assert r.json()["reason"] == "LEAD_NOT_IN_POOL"


async def test_concurrent_claims_of_one_lead_have_one_winner(
    client: httpx.AsyncClient, t: Tenant
) -> None:
    for _ in range(3):
        lead_id = await capture(client, t)
        answers = await asyncio.gather(
            client.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("d1-rep")),
            client.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("d1-rep2")),
        )
        assert sorted(r.status_code for r in answers) == [200, 409]
        winner = next(r for r in answers if r.status_code == 200).json()["assignee_id"]
        r = await client.get(f"/v1/leads/{lead_id}", headers=t.auth("d1-rep"))
        assert r.json()["assignee_id"] == winner


async def test_claim_needs_visibility_an_open_lead_and_a_user(
    client: httpx.AsyncClient, dir_client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    lead_id = await capture(client, t)
    r = await client.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("d2-rep"))
    assert r.status_code == 404
    assert r.json()["reason"] == "LEAD_NOT_FOUND"

    r = await dir_client.post(
        "/v1/api-keys",
        json={"org_unit_id": t.units["d1"]["id"], "display_name": "crawler"},
        headers=t.auth("admin"),
    )
    assert r.status_code == 201, r.text
    api_key = {"Authorization": f"ApiKey {r.json()['secret']}"}
    r = await client.post(f"/v1/leads/{lead_id}:claim", headers=api_key)
    assert r.status_code == 403

    async with leads.db.unit_of_work() as conn:
        await conn.execute(
            leads_table.update().where(leads_table.c.id == uuid.UUID(lead_id)).values(status=4)
        )
    assert await listed(client, t, "d1-rep", "pool") == []
    r = await client.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("d1-rep"))
    assert r.status_code == 409
    assert r.json()["reason"] == "LEAD_NOT_IN_POOL"


async def test_release_by_holder_returns_the_lead_and_others_are_refused(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    lead_id = await capture(client, t)
    r = await client.post(f"/v1/leads/{lead_id}:release", headers=t.auth("d1-rep"))
    assert r.status_code == 409
    assert r.json()["reason"] == "LEAD_NOT_CLAIMED"
    r = await client.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("d1-rep"))
    holder = r.json()["assignee_id"]

    r = await client.post(f"/v1/leads/{lead_id}:release", headers=t.auth("d1-rep2"))
    assert r.status_code == 403
    assert r.json()["reason"] == "LEAD_HELD_BY_OTHER"
    r = await client.post(f"/v1/leads/{lead_id}:release", headers=t.auth("d2-rep"))
    assert r.status_code == 404

    r = await client.post(f"/v1/leads/{lead_id}:release", headers=t.auth("d1-rep"))
    assert r.status_code == 200, r.text
    assert r.json()["assignee_id"] == ""
    assert "assign_time" not in r.json()
    assert await listed(client, t, "d1-rep", "pool") == [lead_id]
    assert await listed(client, t, "d1-rep", "mine") == []
    _, payload = await wait_for_event(
        leads.settings.nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead.released.v1",
        events_pb2.LeadReleased,
        lambda p: p.lead.id == lead_id,
    )
    assert payload.previous_assignee_id == holder
    assert payload.by == holder
    assert payload.lead.assignee_id == ""

    # Back in the pool: another rep of the unit can claim it now.
    r = await client.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("d1-rep2"))
    assert r.status_code == 200, r.text


async def test_manager_takes_back_a_lead_of_the_pool(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    lead_id = await capture(client, t)
    r = await client.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("d1-rep"))
    holder = r.json()["assignee_id"]
    r = await client.post(f"/v1/leads/{lead_id}:release", headers=t.auth("hq-manager"))
    assert r.status_code == 200, r.text
    assert await listed(client, t, "d1-rep", "pool") == [lead_id]
    _, payload = await wait_for_event(
        leads.settings.nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead.released.v1",
        events_pb2.LeadReleased,
        lambda p: p.lead.id == lead_id,
    )
    assert payload.previous_assignee_id == holder
    assert payload.by not in ("", holder)
