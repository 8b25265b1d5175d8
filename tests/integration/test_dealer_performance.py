"""Dealer performance through real services: leads distributed by a unit's rules, accepted,
rejected and followed up through the leads REST API, and the SLA warning and breach its
timer job fires, reach the analytics report, which shows each dealer its own rows, HQ all
of them, and a sibling none."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
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

pytestmark = pytest.mark.integration

REPORT = "/v1/reports/dealer-performance"


@pytest.fixture
async def t(leads: Runtime, directory: Runtime, dir_client: httpx.AsyncClient) -> Tenant:
    """A fresh tenant (the shared one's report has other tests' leads) with managers at
    east and d1, its org tree replicated into leads."""
    tenant = await make_tenant(directory)
    for name, at in (("east-manager", "east"), ("d1-manager", "d1")):
        await tenant.add_user(name, at, ["manager"])

    async def replicated() -> None:
        async with leads.db.read() as conn:
            rows = await orgtree.subtree(conn=conn, unit_id=uuid.UUID(tenant.units["hq"]["id"]))
        assert {r.code for r in rows} == {tenant.slug, "east", "d1", "d2"}

    await eventually(replicated)
    return tenant


async def report(analytics: Runtime, t: Tenant, who: str, **params: str) -> dict[str, Any]:
    async with http_client(analytics) as c:
        r = await c.get(REPORT, params=params, headers=t.auth(who))
        assert r.status_code == 200, r.text
        return dict(r.json())


async def test_distribution_acceptance_and_follow_up_reach_the_report(
    leads: Runtime, analytics: Runtime, t: Tenant
) -> None:
    east, d1 = t.units["east"]["id"], t.units["d1"]["id"]
    admin = t.auth("admin")
    async with http_client(leads) as c:
        ids = []
        for _ in range(2):
            phone = "139" + "".join(random.choices("0123456789", k=8))
            r = await c.post(
                "/v1/leads",
                json={"full_name": "Li Lei", "phone": phone},
                headers=t.auth("east-manager"),
            )
            assert r.status_code == 201, r.text
            ids.append(str(r.json()["id"]))
        # Only d1 has a distribution profile: east's rule sends everything there.
        r = await c.put(f"/v1/distribution-profiles/{d1}", json={}, headers=admin)
        assert r.status_code == 200, r.text
        rules = {"rules": [{"name": "spread", "strategy": "weighted_round_robin"}]}
        r = await c.put(f"/v1/distribution-rules/{east}", json=rules, headers=admin)
        assert r.status_code == 200, r.text
        r = await c.post(f"/v1/distribution-rules/{east}:run", headers=t.auth("east-manager"))
        assert r.status_code == 200, r.text

        async def at_d1() -> None:
            for lead in ids:
                r = await c.get(f"/v1/leads/{lead}", headers=t.auth("d1-manager"))
                assert r.status_code == 200 and r.json()["owner_org_id"] == d1, r.text

        await eventually(at_d1)  # the capture consumer may have distributed them first

        async def received() -> None:
            assert (await report(analytics, t, "d1-manager"))["totals"]["received"] == 2

        # Receipt consumed before the follow-up: the two come from different consumers.
        await eventually(received)
        accepted, rejected = ids
        r = await c.post(f"/v1/leads/{accepted}:accept", headers=t.auth("d1-manager"))
        assert r.status_code == 200, r.text
        r = await c.post(
            f"/v1/leads/{rejected}:reject",
            json={"reason_code": "OUT_OF_TERRITORY"},
            headers=t.auth("d1-manager"),
        )
        assert r.status_code == 200, r.text
        r = await c.post(
            f"/v1/leads/{accepted}/activities",
            json={"kind": "call", "note": "first call"},
            headers=t.auth("d1-manager"),
        )
        assert r.status_code == 201, r.text
        # d1's assignment run gives the accepted lead to its rep: a batch event, counted once.
        rep = await t.add_user("d1-seller", "d1", ["rep"])
        policy = {"strategy": "round_robin", "reps": [{"user_id": rep}]}

        async def policy_set() -> None:  # once the rep has reached the leads replica
            r = await c.put(
                f"/v1/assignment-policies/{d1}", json=policy, headers=t.auth("d1-manager")
            )
            assert r.status_code == 200, r.text

        await eventually(policy_set)
        r = await c.post(f"/v1/assignment-policies/{d1}:run", headers=t.auth("d1-manager"))
        assert r.status_code == 200 and r.json()["assigned"] == 1, r.text

    async def settled() -> dict[str, Any]:
        body = await report(analytics, t, "d1-rep")
        totals = body["totals"]
        assert (totals["accepted"], totals["rejected"], totals["first_contacts"]) == (1, 1, 1)
        assert totals["assigned"] == 1
        return body

    mine = await eventually(settled)
    totals = mine["totals"]
    assert (totals["received"], totals["expired"], totals["reclaimed"]) == (2, 0, 0)
    assert totals["acceptance_rate"] == 0.5 and totals["reclaim_rate"] == 0
    assert totals["first_contact_seconds"] > 0
    assert totals["avg_first_contact_seconds"] == totals["first_contact_seconds"]
    assert {x["org_unit_id"] for x in mine["rows"]} == {d1}
    assert {x["org_path"] for x in mine["rows"]} == {t.units["d1"]["path"]}

    # HQ sees the same rows (only d1 took part); the rejection counts at d1, not at east.
    hq = await report(analytics, t, "hq-manager")
    assert hq["rows"] == mine["rows"] and hq["totals"] == totals
    # The sibling dealer sees none of d1's rows.
    theirs = await report(analytics, t, "d2-rep")
    assert theirs["rows"] == [] and theirs["totals"]["received"] == 0
    assert theirs["totals"]["acceptance_rate"] is None

    today = datetime.now(UTC).date()
    around = {
        "start_day": (today - timedelta(days=1)).isoformat(),
        "end_day": (today + timedelta(days=1)).isoformat(),
    }
    assert (await report(analytics, t, "admin", **around))["totals"] == totals
    later = {"start_day": (today + timedelta(days=2)).isoformat()}
    assert (await report(analytics, t, "admin", **later))["rows"] == []


async def due_time(leads: Runtime, lead: str, kind: str) -> datetime:
    """When the lead's unfired ``kind`` timer is due (its clock started on acceptance)."""
    async with leads.db.read() as conn:
        due: datetime = await conn.scalar(
            sa.select(lead_timers.c.due_time).where(
                lead_timers.c.lead_id == uuid.UUID(lead),
                lead_timers.c.kind == kind,
                lead_timers.c.fired_time.is_(None),
            )
        )
    return due


async def test_sla_warning_and_breach_count_at_the_unit_holding_the_lead(
    leads: Runtime, analytics: Runtime, t: Tenant
) -> None:
    d1 = t.units["d1"]["id"]
    async with http_client(leads) as c:
        phone = "139" + "".join(random.choices("0123456789", k=8))
        body = {"full_name": "Han Meimei", "phone": phone}
        r = await c.post("/v1/leads", json=body, headers=t.auth("east-manager"))
        assert r.status_code == 201, r.text
        lead = str(r.json()["id"])
        body = {"lead_ids": [lead], "target_org_unit_id": d1}
        r = await c.post("/v1/leads:distribute", json=body, headers=t.auth("east-manager"))
        assert r.status_code == 200, r.text
        r = await c.post(f"/v1/leads/{lead}:accept", headers=t.auth("d1-manager"))
        assert r.status_code == 200, r.text

    # Acceptance armed the default policy's reminder and first-contact target; fire each
    # at its due time (hours ahead), as the timer job would, with no follow-up in between.
    tenant = uuid.UUID(t.id)
    warn = await due_time(leads, lead, REMINDER)
    assert await jobs.fire_due(leads.db, now=warn, tenant_id=tenant) == {REMINDER: 1}
    breach = await due_time(leads, lead, FIRST_CONTACT_DUE)
    assert await jobs.fire_due(leads.db, now=breach, tenant_id=tenant) == {FIRST_CONTACT_DUE: 1}

    async def settled() -> dict[str, Any]:
        body = await report(analytics, t, "d1-manager")
        assert (body["totals"]["sla_warnings"], body["totals"]["sla_breaches"]) == (1, 1)
        return body

    mine = await eventually(settled)
    assert {x["org_unit_id"] for x in mine["rows"]} == {d1}
    hq = await report(analytics, t, "hq-manager")
    assert hq["rows"] == mine["rows"] and hq["totals"]["sla_warnings"] == 1
    # The sibling dealer sees none of it.
    theirs = await report(analytics, t, "d2-rep")
    assert theirs["rows"] == [] and theirs["totals"]["sla_warnings"] == 0


async def test_invalid_ranges_name_the_field(analytics: Runtime, tenant: Tenant) -> None:
    async with http_client(analytics) as c:
        for params, field in (
            ({"start_day": "yesterday"}, "start_day"),
            ({"start_day": "2026-11-02", "end_day": "2026-11-01"}, "end_day"),
            ({"start_day": "2020-01-01", "end_day": "2026-01-01"}, "end_day"),
        ):
            r = await c.get(REPORT, params=params, headers=tenant.auth("admin"))
            assert r.status_code == 422, r.text
            assert {v["field"] for v in r.json()["violations"]} == {field}
        assert (await c.get(REPORT)).status_code == 401
