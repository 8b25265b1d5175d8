"""Cleansing through REST against real PostgreSQL and NATS: automatic checks on capture, the
review queue and decisions, and the stale-lead job (called directly, as each replica's
background task does)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conftest import Tenant, http_client, make_tenant
from crm.leads.v1 import lead_pb2
from crm_leads.lead import review
from crm_leads.lead.models import leads as leads_table
from crm_platform.events import parse_event
from crm_platform.outbox import outbox
from crm_platform.runtime import Runtime

VERIFIED_EVENT = "crm.leads.lead.verified.v1"
CLOSED_EVENT = "crm.leads.lead.closed.v1"


def mobile() -> str:
    return "139" + "".join(random.choices("0123456789", k=8))


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


async def capture(
    c: httpx.AsyncClient, tenant: Tenant, who: str = "d1-rep", **body: Any
) -> dict[str, Any]:
    fields = {"full_name": "Li Lei", "phone": mobile(), "city": "Hangzhou", **body}
    r = await c.post("/v1/leads", json=fields, headers=tenant.auth(who))
    assert r.status_code == 201, r.text
    lead: dict[str, Any] = r.json()
    return lead


async def events(leads: Runtime, event_type: str, lead_ids: set[str]) -> list[Any]:
    async with leads.db.read() as conn:
        rows = await conn.execute(
            sa.select(outbox.c.data).where(outbox.c.event_type == event_type).order_by(outbox.c.seq)
        )
        payloads = [parse_event(row.data).payload for row in rows]
    return [p for p in payloads if p.lead.id in lead_ids]


async def test_capture_verifies_a_complete_lead_and_queues_a_doubtful_one(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    good = await capture(client, tenant)
    assert good["verification"] == "LEAD_VERIFICATION_VERIFIED"
    placeholder = await capture(client, tenant, full_name="asdf")
    disposable = await capture(client, tenant, email=f"{uuid.uuid4().hex}@mailinator.com")
    nowhere = await capture(client, tenant, city="")
    for lead in (placeholder, disposable, nowhere):
        assert lead["verification"] == "LEAD_VERIFICATION_UNVERIFIED"
        assert lead["status"] == "LEAD_STATUS_NEW"


async def test_review_queue_is_oldest_first_paged_and_for_managers(
    client: httpx.AsyncClient, leads: Runtime, directory: Runtime
) -> None:
    t = await make_tenant(directory)
    queued = [(await capture(client, t, full_name="test"))["id"] for _ in range(3)]
    await capture(client, t)  # verified: not in the queue
    seen: list[str] = []
    notes: set[str] = set()
    token = ""
    while True:
        r = await client.get(
            "/v1/leads:review",
            params={"page_size": 2, "page_token": token},
            headers=t.auth("hq-manager"),
        )
        assert r.status_code == 200, r.text
        seen += [x["lead"]["id"] for x in r.json()["reviews"]]
        notes |= {x["note"] for x in r.json()["reviews"]}
        token = r.json()["next_page_token"]
        if not token:
            break
    assert seen == queued
    assert notes == {"placeholder name"}
    r = await client.get("/v1/leads:review", headers=t.auth("d1-rep"))
    assert r.status_code == 403
    assert r.json()["reason"] == "ROLE_REQUIRED"
    # A decided lead leaves the queue.
    r = await client.post(
        f"/v1/leads/{queued[0]}:verify",
        json={"decision": "VERIFIED", "note": "called, real person"},
        headers=t.auth("hq-manager"),
    )
    assert r.status_code == 200, r.text
    r = await client.get("/v1/leads:review", headers=t.auth("hq-manager"))
    assert [x["lead"]["id"] for x in r.json()["reviews"]] == queued[1:]


async def test_verify_and_invalidate_publish_events_and_a_second_decision_conflicts(
    client: httpx.AsyncClient, leads: Runtime, tenant: Tenant
) -> None:
    ok = await capture(client, tenant, full_name="111")
    bad = await capture(client, tenant, full_name="111")
    manager = tenant.auth("hq-manager")
    r = await client.post(
        f"/v1/leads/{ok['id']}:verify", json={"decision": "VERIFIED"}, headers=manager
    )
    assert r.status_code == 200, r.text
    assert r.json()["lead"]["verification"] == "LEAD_VERIFICATION_VERIFIED"
    assert r.json()["lead"]["status"] == "LEAD_STATUS_NEW"
    r = await client.post(
        f"/v1/leads/{bad['id']}:verify",
        json={"decision": "INVALID", "note": "number unreachable"},
        headers=manager,
    )
    assert r.status_code == 200, r.text
    closed = r.json()["lead"]
    assert closed["verification"] == "LEAD_VERIFICATION_INVALID"
    assert (closed["status"], closed["closed_reason"]) == ("LEAD_STATUS_CLOSED", "invalid")
    assert r.json()["note"] == "number unreachable"

    verified = await events(leads, VERIFIED_EVENT, {ok["id"], bad["id"]})
    assert [(e.lead.id, e.lead.verification, e.previous_verification) for e in verified] == [
        (ok["id"], lead_pb2.LEAD_VERIFICATION_VERIFIED, lead_pb2.LEAD_VERIFICATION_UNVERIFIED),
        (bad["id"], lead_pb2.LEAD_VERIFICATION_INVALID, lead_pb2.LEAD_VERIFICATION_UNVERIFIED),
    ]
    closed_events = await events(leads, CLOSED_EVENT, {ok["id"], bad["id"]})
    assert [(e.lead.id, e.reason) for e in closed_events] == [(bad["id"], "invalid")]

    for lead_id in (ok["id"], bad["id"]):
        r = await client.post(
            f"/v1/leads/{lead_id}:verify", json={"decision": "INVALID"}, headers=manager
        )
        assert r.status_code == 409
        assert r.json()["reason"] == "LEAD_ALREADY_REVIEWED"


async def test_decisions_need_a_visible_lead_a_reviewer_and_a_valid_body(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    lead = await capture(client, tenant, full_name="test")
    r = await client.post(
        f"/v1/leads/{lead['id']}:verify",
        json={"decision": "VERIFIED"},
        headers=other_tenant.auth("hq-manager"),
    )
    assert r.status_code == 404
    assert r.json()["reason"] == "LEAD_NOT_FOUND"
    r = await client.post(
        f"/v1/leads/{lead['id']}:verify",
        json={"decision": "VERIFIED"},
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 403
    r = await client.post(
        f"/v1/leads/{lead['id']}:verify",
        json={"decision": "MAYBE"},
        headers=tenant.auth("hq-manager"),
    )
    assert r.status_code == 422
    assert [v["field"] for v in r.json()["violations"]] == ["decision"]


async def test_concurrent_stale_runs_close_each_stale_lead_exactly_once(
    client: httpx.AsyncClient, leads: Runtime, tenant: Tenant
) -> None:
    stale = [(await capture(client, tenant))["id"] for _ in range(7)]
    fresh = [(await capture(client, tenant))["id"] for _ in range(2)]
    converted = (await capture(client, tenant))["id"]
    async with leads.db.unit_of_work() as conn:
        await conn.execute(
            leads_table.update()
            .where(leads_table.c.id.in_([uuid.UUID(x) for x in [*stale, converted]]))
            .values(update_time=sa.func.now() - sa.text("interval '91 days'"))
        )
        await conn.execute(
            leads_table.update()
            .where(leads_table.c.id == uuid.UUID(converted))
            .values(status=lead_pb2.LEAD_STATUS_CONVERTED)
        )

    # Two replicas at once, in batches smaller than the work.
    counts = await asyncio.gather(
        review.close_stale(leads.db, older_than_days=90, batch=2),
        review.close_stale(leads.db, older_than_days=90, batch=2),
    )
    assert sum(counts) >= len(stale)  # other tests' leads are never this old
    assert await review.close_stale(leads.db, older_than_days=90) == 0

    closed = await events(leads, CLOSED_EVENT, {*stale, *fresh, converted})
    assert sorted(e.lead.id for e in closed) == sorted(stale)
    assert {(e.reason, e.lead.closed_reason) for e in closed} == {("stale", "stale")}
    for lead_id in stale:
        r = await client.get(f"/v1/leads/{lead_id}", headers=tenant.auth("d1-rep"))
        assert (r.json()["status"], r.json()["closed_reason"]) == ("LEAD_STATUS_CLOSED", "stale")
    for lead_id in [*fresh, converted]:
        r = await client.get(f"/v1/leads/{lead_id}", headers=tenant.auth("d1-rep"))
        assert r.json()["status"] != "LEAD_STATUS_CLOSED"
        assert r.json()["closed_reason"] == ""
