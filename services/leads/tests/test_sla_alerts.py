"""The SLA inbox (GET /v1/sla-alerts) through the real leads service, PostgreSQL and NATS:
the timer job's reminders and escalations stored with their events, addressed to the
lead's holder or its unit's managers, read by subtree, never by a sibling dealer, written
once however often a timer fires, and resolved by the next logged follow-up."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conftest import Tenant, http_client, make_tenant
from crm_leads.orgtree import service as orgtree
from crm_leads.sla import jobs
from crm_leads.sla.models import lead_timers
from crm_leads.sla.rules import FIRST_CONTACT_DUE, REMINDER
from crm_platform.runtime import Runtime
from crm_platform.testing.harness import eventually

MINUTE = timedelta(minutes=1)
POLICY = {"first_contact_hours": {"A": 2, "B": 2, "C": 2, "D": 2}, "reminder_minutes": 30}


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


@pytest.fixture
async def t(leads: Runtime, directory: Runtime, client: httpx.AsyncClient) -> Tenant:
    """A fresh tenant (its timers and alerts are the test's own) with a manager at east and
    at each dealer, and the test's SLA policy."""
    tenant = await make_tenant(directory)
    for name, at in (("east-manager", "east"), ("d1-manager", "d1"), ("d2-manager", "d2")):
        await tenant.add_user(name, at, ["manager"])

    async def replicated() -> None:
        async with leads.db.read() as conn:
            rows = await orgtree.subtree(conn=conn, unit_id=uuid.UUID(tenant.units["hq"]["id"]))
        assert len(rows) == 4

    await eventually(replicated)
    r = await client.put("/v1/sla-policy", json=POLICY, headers=tenant.auth("admin"))
    assert r.status_code == 200, r.text
    return tenant


def phone() -> str:
    return "139" + "".join(random.choices("0123456789", k=8))


async def capture(c: httpx.AsyncClient, t: Tenant, who: str) -> str:
    r = await c.post("/v1/leads", json={"full_name": "Li", "phone": phone()}, headers=t.auth(who))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def first_contact_due(c: httpx.AsyncClient, t: Tenant, lead: str) -> datetime:
    r = await c.get(f"/v1/leads/{lead}/sla", headers=t.auth("admin"))
    assert r.status_code == 200 and r.json()["clock"], r.text
    return datetime.fromisoformat(r.json()["clock"]["first_contact_due"])


async def inbox(c: httpx.AsyncClient, t: Tenant, who: str, **params: Any) -> list[dict[str, Any]]:
    r = await c.get("/v1/sla-alerts", params=params, headers=t.auth(who))
    assert r.status_code == 200, r.text
    alerts: list[dict[str, Any]] = r.json()["alerts"]
    return alerts


async def log_follow_up(c: httpx.AsyncClient, t: Tenant, who: str, lead: str) -> str:
    r = await c.post(f"/v1/leads/{lead}/activities", json={"kind": "call"}, headers=t.auth(who))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_a_warning_reminds_the_holder_and_a_breach_escalates_to_the_unit_managers(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    tenant, d1 = uuid.UUID(t.id), t.units["d1"]["id"]
    lead = await capture(client, t, "d1-manager")
    r = await client.post(f"/v1/leads/{lead}:claim", headers=t.auth("d1-rep"))
    assert r.status_code == 200, r.text
    rep = r.json()["assignee_id"]
    due = await first_contact_due(client, t, lead)

    fired = await jobs.fire_due(leads.db, now=due - 29 * MINUTE, tenant_id=tenant)
    assert fired == {REMINDER: 1}
    (warning,) = await inbox(client, t, "d1-rep")
    assert warning["lead_id"] == lead
    assert (warning["kind"], warning["target"]) == ("warning", FIRST_CONTACT_DUE)
    assert datetime.fromisoformat(warning["due_time"]) == due
    assert warning["recipient"] == {"user_id": rep}
    assert warning["org_unit_id"] == d1 and warning["resolve_time"] is None
    # The unit's manager supervises it too; the sibling dealer sees nothing.
    assert [x["id"] for x in await inbox(client, t, "d1-manager")] == [warning["id"]]
    for who in ("d2-manager", "d2-rep"):
        assert await inbox(client, t, who) == []

    assert await jobs.fire_due(leads.db, now=due, tenant_id=tenant) == {FIRST_CONTACT_DUE: 1}
    (breach,) = await inbox(client, t, "d1-manager", kind="breach")
    assert (breach["lead_id"], breach["kind"], breach["target"]) == (
        lead,
        "breach",
        FIRST_CONTACT_DUE,
    )
    assert breach["recipient"] == {"role": "manager", "org_unit_id": d1}
    # Managers above the unit read their subtree's escalations; the sibling dealer's manager
    # and the rep (the escalation is not addressed to them) do not.
    for who in ("east-manager", "hq-manager", "admin"):
        assert [x["id"] for x in await inbox(client, t, who, kind="breach")] == [breach["id"]]
    assert await inbox(client, t, "d2-manager") == []
    assert [x["id"] for x in await inbox(client, t, "d1-rep")] == [warning["id"]]

    # The job firing the breach again (a replayed run) adds no second alert.
    async with leads.db.unit_of_work() as conn:
        await conn.execute(
            lead_timers.update()
            .where(lead_timers.c.lead_id == uuid.UUID(lead), lead_timers.c.kind != REMINDER)
            .where(lead_timers.c.due_time <= due)
            .values(fired_time=None)
        )
    assert await jobs.fire_due(leads.db, now=due, tenant_id=tenant) == {FIRST_CONTACT_DUE: 1}
    both = await inbox(client, t, "d1-manager")
    assert [x["id"] for x in both] == [breach["id"], warning["id"]]  # newest first

    activity = await log_follow_up(client, t, "d1-rep", lead)
    assert await inbox(client, t, "d1-manager", state="open") == []
    resolved = await inbox(client, t, "d1-manager", state="resolved")
    assert [x["id"] for x in resolved] == [breach["id"], warning["id"]]
    assert {x["resolved_by_activity_id"] for x in resolved} == {activity}
    assert all(x["resolve_time"] for x in resolved)
    assert [x["id"] for x in await inbox(client, t, "d1-rep", state="resolved")] == [warning["id"]]


async def test_alerts_are_paged_newest_first_and_filters_are_validated(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    tenant = uuid.UUID(t.id)
    lead = await capture(client, t, "d1-manager")
    r = await client.post(f"/v1/leads/{lead}:claim", headers=t.auth("d1-rep"))
    assert r.status_code == 200, r.text
    due = await first_contact_due(client, t, lead)
    await jobs.fire_due(leads.db, now=due, tenant_id=tenant)
    everything = await inbox(client, t, "d1-manager")
    assert [x["kind"] for x in everything] == ["breach", "warning"]

    manager = t.auth("d1-manager")
    r = await client.get("/v1/sla-alerts", params={"page_size": 1}, headers=manager)
    assert [x["id"] for x in r.json()["alerts"]] == [everything[0]["id"]]
    token = r.json()["next_page_token"]
    assert token
    r = await client.get("/v1/sla-alerts", params={"page_token": token}, headers=manager)
    assert [x["id"] for x in r.json()["alerts"]] == [everything[1]["id"]]
    assert r.json()["next_page_token"] == ""
    # A token is bound to its filter.
    r = await client.get(
        "/v1/sla-alerts", params={"page_token": token, "kind": "warning"}, headers=manager
    )
    assert r.status_code == 422 and [v["field"] for v in r.json()["violations"]] == ["page_token"]
    for params in ({"kind": "late"}, {"state": "closed"}, {"page_size": 0}):
        r = await client.get("/v1/sla-alerts", params=params, headers=manager)
        assert r.status_code == 422, (params, r.text)
        (field,) = [v["field"] for v in r.json()["violations"]]
        assert field.endswith(next(iter(params))), (params, field)
    assert (await client.get("/v1/sla-alerts")).status_code == 401


async def test_a_warning_on_a_lead_nobody_holds_goes_to_the_unit_managers(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    tenant, d1 = uuid.UUID(t.id), t.units["d1"]["id"]
    lead = await capture(client, t, "east-manager")
    body = {"lead_ids": [lead], "target_org_unit_id": d1}
    r = await client.post("/v1/leads:distribute", json=body, headers=t.auth("east-manager"))
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/leads/{lead}:accept", headers=t.auth("d1-manager"))
    assert r.status_code == 200, r.text
    due = await first_contact_due(client, t, lead)

    assert await jobs.fire_due(leads.db, now=due - 29 * MINUTE, tenant_id=tenant) == {REMINDER: 1}
    (warning,) = await inbox(client, t, "d1-manager", kind="warning", state="open")
    assert warning["lead_id"] == lead
    assert warning["recipient"] == {"role": "manager", "org_unit_id": d1}
    for who in ("d1-rep", "d2-manager"):
        assert await inbox(client, t, who) == []

    await log_follow_up(client, t, "d1-manager", lead)
    assert await inbox(client, t, "d1-manager", state="open") == []
    # The follow-up re-armed the clock: the old target fires nothing, so nothing reopens.
    async with leads.db.read() as conn:
        pending = await conn.scalar(
            sa.select(sa.func.count()).where(
                lead_timers.c.lead_id == uuid.UUID(lead),
                lead_timers.c.kind == FIRST_CONTACT_DUE,
                lead_timers.c.fired_time.is_(None),
            )
        )
    assert pending == 0
    assert not await jobs.fire_due(leads.db, now=due, tenant_id=tenant)
    assert await inbox(client, t, "d1-manager", state="open") == []
