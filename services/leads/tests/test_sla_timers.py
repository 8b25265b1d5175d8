"""SLA policies and durable timers: the pure clock arithmetic (protection extended by
follow-ups, never past the maximum), and against real PostgreSQL and NATS the policy
document, reminders and breaches fired once at controlled times, ``on_follow_up``, and
reclaim (公海回收) of a held lead fired exactly once with two service replicas racing."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conftest import Tenant, http_client, make_tenant
from crm.leads.v1 import events_pb2
from crm_leads.__main__ import DEFINITION
from crm_leads.activities.hooks import FollowUp
from crm_leads.distribution.models import lead_owner_history
from crm_leads.lead.models import leads as leads_table
from crm_leads.orgtree import service as orgtree
from crm_leads.sla import jobs, service
from crm_leads.sla.models import lead_timers
from crm_leads.sla.rules import (
    FIRST_CONTACT_DUE,
    FOLLOW_UP_DUE,
    RECLAIM,
    REMINDER,
    SlaPolicy,
    extended_protection,
    follow_up,
    parse_policy,
    start_clock,
    timers,
)
from crm_platform.errors import InvalidArgument
from crm_platform.ids import new_id
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event
from crm_platform.testing.harness import ServiceStarter, eventually

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


# Pure rules


def policy(**overrides: Any) -> SlaPolicy:
    document: dict[str, Any] = {
        "first_contact_hours": {"A": 1, "B": 2, "C": 4, "D": 8},
        "follow_up_hours": {"A": 24, "B": 24, "C": 48, "D": 72},
        "reminder_minutes": 30,
        "protection_hours": 24,
        "max_protection_hours": 48,
        "extension_hours": 12,
        **overrides,
    }
    return parse_policy(document)


def test_protection_is_extended_by_follow_ups_but_never_past_the_maximum() -> None:
    rules = policy()
    clock = start_clock(rules, "B", T0)
    assert (clock.first_contact_due, clock.protect_until, clock.protect_max) == (
        T0 + 2 * H,
        T0 + 24 * H,
        T0 + 48 * H,
    )
    # Early follow-ups never shorten the protection.
    clock = follow_up(rules, clock, T0 + 3 * H)
    assert clock.protect_until == T0 + 24 * H and clock.first_contact_time == T0 + 3 * H
    assert clock.follow_up_due == T0 + 27 * H
    clock = follow_up(rules, clock, T0 + 20 * H)
    assert clock.protect_until == T0 + 32 * H and clock.first_contact_time == T0 + 3 * H
    clock = follow_up(rules, clock, T0 + 40 * H)
    assert clock.protect_until == T0 + 48 * H  # capped: 52h asked for
    clock = follow_up(rules, clock, T0 + 47 * H)
    assert clock.protect_until == T0 + 48 * H
    for at in range(0, 100, 7):
        until = extended_protection(rules, T0 + 24 * H, T0 + 48 * H, T0 + at * H)
        assert T0 + 24 * H <= until <= T0 + 48 * H


def test_timers_follow_the_open_target() -> None:
    rules = policy()
    clock = start_clock(rules, "A", T0)
    armed = {(x.kind, x.due) for x in timers(rules, clock, "u")}
    assert armed == {
        (FIRST_CONTACT_DUE, T0 + H),
        (REMINDER, T0 + 30 * timedelta(minutes=1)),
        (RECLAIM, T0 + 24 * H),
    }
    clock = follow_up(rules, clock, T0 + 2 * H)
    kinds = {x.kind: x for x in timers(rules, clock, "u")}
    assert set(kinds) == {FOLLOW_UP_DUE, REMINDER, RECLAIM}
    assert kinds[REMINDER].payload["target"] == FOLLOW_UP_DUE
    # No reminders, no reclaim: only the target.
    quiet = policy(reminder_minutes=0, reclaim=False)
    assert [x.kind for x in timers(quiet, start_clock(quiet, "D", T0), "u")] == [FIRST_CONTACT_DUE]


def test_policy_documents_are_validated() -> None:
    assert SlaPolicy().acceptance_hours == 24
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"acceptance_hours": 0}, {"acceptance_hours"}),
        ({"first_contact_hours": {"A": 1, "B": 1, "C": 1}}, {"first_contact_hours.D"}),
        ({"reminder_minutes": "60"}, {"reminder_minutes"}),
        ({"protection_hours": 100, "max_protection_hours": 50}, {"max_protection_hours"}),
        ({"protect": 1}, {"protect"}),
    ]
    for document, fields in cases:
        with pytest.raises(InvalidArgument) as caught:
            parse_policy(document)
        assert {v.field for v in caught.value.violations} == fields, document


# Through the service


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


@pytest.fixture
async def t(leads: Runtime, directory: Runtime, dir_client: httpx.AsyncClient) -> Tenant:
    tenant = await make_tenant(directory)
    for name, at in (("east-manager", "east"), ("d1-manager", "d1")):
        await tenant.add_user(name, at, ["manager"])

    async def replicated() -> None:
        async with leads.db.read() as conn:
            rows = await orgtree.subtree(conn=conn, unit_id=unit(tenant, "hq"))
        assert len(rows) == 4

    await eventually(replicated)
    return tenant


def unit(t: Tenant, name: str) -> uuid.UUID:
    return uuid.UUID(t.units[name]["id"])


async def accepted_at_d1(c: httpx.AsyncClient, t: Tenant, n: int) -> list[str]:
    """``n`` leads captured at east, distributed by hand to d1 and accepted there."""
    ids = []
    for _ in range(n):
        phone = "139" + "".join(random.choices("0123456789", k=8))
        body = {"full_name": "Han Meimei", "phone": phone}
        r = await c.post("/v1/leads", json=body, headers=t.auth("east-manager"))
        assert r.status_code == 201, r.text
        ids.append(str(r.json()["id"]))
    body = {"lead_ids": ids, "target_org_unit_id": str(unit(t, "d1"))}
    r = await c.post("/v1/leads:distribute", json=body, headers=t.auth("east-manager"))
    assert r.status_code == 200, r.text
    for lead in ids:
        r = await c.post(f"/v1/leads/{lead}:accept", headers=t.auth("d1-manager"))
        assert r.status_code == 200, r.text
    return ids


async def start_of_clock(rt: Runtime, lead: str) -> datetime:
    async with rt.db.read() as conn:
        row = (
            await conn.execute(
                sa.select(lead_timers.c.due_time).where(
                    lead_timers.c.lead_id == uuid.UUID(lead),
                    lead_timers.c.kind == RECLAIM,
                    lead_timers.c.fired_time.is_(None),
                )
            )
        ).one()
    return row.due_time - 24 * H  # the test policy's protection period


async def events(rt: Runtime, event_type: str, lead: str) -> int:
    """Outbox rows of ``event_type`` mentioning the lead (its id is a string in the payload)."""
    async with rt.db.read() as conn:
        count = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM crm_outbox WHERE event_type = :type "
                "AND position(convert_to(:lead, 'UTF8') in data) > 0"
            ),
            {"type": event_type, "lead": lead},
        )
    return int(count or 0)


async def test_policy_reminders_breaches_and_follow_ups(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    tenant = uuid.UUID(t.id)
    r = await client.get("/v1/sla-policy", headers=t.auth("d1-rep"))
    assert r.status_code == 200 and r.json()["version"] == 0
    assert r.json()["policy"]["acceptance_hours"] == 24
    document = {
        "first_contact_hours": {"A": 2, "B": 2, "C": 2, "D": 2},
        "follow_up_hours": {"A": 24, "B": 24, "C": 24, "D": 24},
        "reminder_minutes": 30,
        "protection_hours": 24,
        "max_protection_hours": 48,
        "extension_hours": 12,
    }
    r = await client.put("/v1/sla-policy", json=document, headers=t.auth("d1-manager"))
    assert r.status_code == 403
    r = await client.put("/v1/sla-policy", json={"protection_hours": "x"}, headers=t.auth("admin"))
    assert r.status_code == 422 and {v["field"] for v in r.json()["violations"]} == {
        "protection_hours"
    }
    r = await client.put("/v1/sla-policy", json=document, headers=t.auth("admin"))
    assert r.status_code == 200 and r.json()["version"] == 1, r.text

    (lead,) = await accepted_at_d1(client, t, 1)
    start = await start_of_clock(leads, lead)
    # Nothing due yet; then the reminder half an hour before first contact is due.
    assert not await jobs.fire_due(leads.db, now=start + H, tenant_id=tenant)
    assert await jobs.fire_due(
        leads.db, now=start + 91 * timedelta(minutes=1), tenant_id=tenant
    ) == {REMINDER: 1}
    assert await jobs.fire_due(leads.db, now=start + 2 * H, tenant_id=tenant) == {
        FIRST_CONTACT_DUE: 1
    }
    assert not await jobs.fire_due(leads.db, now=start + 2 * H, tenant_id=tenant)
    assert await events(leads, "crm.leads.lead.sla_warning.v1", lead) == 1
    assert await events(leads, "crm.leads.lead.sla_breached.v1", lead) == 1
    envelope, breach = await wait_for_event(
        leads.settings.nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead.sla_breached.v1",
        events_pb2.LeadSlaBreached,
        lambda p: p.lead_id == lead,
    )
    assert envelope.org_path == t.units["d1"]["path"]
    assert breach.kind == events_pb2.LEAD_SLA_KIND_FIRST_CONTACT
    assert (breach.escalate_to_role, breach.escalate_to_org_id) == ("manager", str(unit(t, "d1")))

    # Follow-ups (as activities log them): protection grows, capped at 48h.
    lead_id = uuid.UUID(lead)
    for at, until in ((3, 24), (20, 32), (40, 48)):
        follow_up = FollowUp(lead_id, new_id(), "call", start + at * H)
        async with leads.db.unit_of_work() as conn:
            clock = await service.on_follow_up(conn, follow_up)
        assert clock is not None and clock.protect_until == start + until * H
    r = await client.get(f"/v1/leads/{lead}/sla", headers=t.auth("d1-rep"))
    body = r.json()
    assert body["clock"]["first_contact_time"] and body["clock"]["follow_up_due"]
    assert {x["kind"] for x in body["timers"]} == {FOLLOW_UP_DUE, REMINDER, RECLAIM}
    # The first reclaim timer (24h) was superseded: nothing happens at 47h.
    await jobs.fire_due(leads.db, now=start + 47 * H, tenant_id=tenant)
    assert (await client.get(f"/v1/leads/{lead}", headers=t.auth("d1-rep"))).status_code == 200
    fired = await jobs.fire_due(leads.db, now=start + 48 * H, tenant_id=tenant)
    assert fired[RECLAIM] == 1
    assert (await client.get(f"/v1/leads/{lead}", headers=t.auth("d1-rep"))).status_code == 404


async def test_reclaim_fires_exactly_once_with_two_replicas(
    client: httpx.AsyncClient,
    leads: Runtime,
    directory: Runtime,
    starter: ServiceStarter,
    t: Tenant,
) -> None:
    tenant = uuid.UUID(t.id)
    east, d1, d2 = unit(t, "east"), unit(t, "d1"), unit(t, "d2")
    r = await client.put("/v1/sla-policy", json={"protection_hours": 24}, headers=t.auth("admin"))
    assert r.status_code == 200, r.text
    ids = await accepted_at_d1(client, t, 6)
    # Held privately by a rep of d1.
    for lead in ids:
        r = await client.post(f"/v1/leads/{lead}:claim", headers=t.auth("d1-rep"))
        assert r.status_code == 200, r.text
    # Now east spreads over its dealers: a reclaimed lead can only go to d2.
    admin = t.auth("admin")
    for child in (d1, d2):
        r = await client.put(f"/v1/distribution-profiles/{child}", json={}, headers=admin)
        assert r.status_code == 200, r.text
    rules = {"rules": [{"name": "spread", "strategy": "weighted_round_robin"}]}
    r = await client.put(f"/v1/distribution-rules/{east}", json=rules, headers=admin)
    assert r.status_code == 200, r.text

    # A second replica of the service on the same database.
    replica = await starter.start(DEFINITION, directory=directory)
    try:
        later = max([await start_of_clock(leads, x) for x in ids]) + 24 * H
        results = await asyncio.gather(
            *(
                jobs.fire_due(rt.db, now=later, tenant_id=tenant, batch=2)
                for rt in (leads, replica, leads, replica)
            )
        )
    finally:
        await replica.stop()
        starter.running.remove(replica)
    assert sum(x[RECLAIM] for x in results) == len(ids)
    # However the two replicas' batches of 2 interleaved, each lead moved once.
    async with leads.db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(lead_owner_history).where(
                    lead_owner_history.c.lead_id.in_([uuid.UUID(x) for x in ids]),
                    lead_owner_history.c.reason == "reclaimed",
                )
            )
        ).all()
        now = {
            str(r.id): r
            for r in await conn.execute(
                sa.select(leads_table).where(leads_table.c.id.in_([uuid.UUID(x) for x in ids]))
            )
        }
    assert sorted(str(r.lead_id) for r in rows) == sorted(ids)
    assert {(r.from_org_id, r.to_org_id) for r in rows} == {(d1, east)}
    for lead in ids:
        assert await events(leads, "crm.leads.lead.reclaimed.v1", lead) == 1
        # Back to east, redistributed without d1: a different dealer, nobody holding it.
        assert now[lead].owner_org_id == d2 and now[lead].assignee_id is None
    assert not await jobs.fire_due(leads.db, now=later, tenant_id=tenant)
    _, payload = await wait_for_event(
        leads.settings.nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead.reclaimed.v1",
        events_pb2.LeadReclaimed,
        lambda p: p.lead_id == ids[0],
    )
    assert (payload.from_org_id, payload.to_org_id) == (str(d1), str(east))
    assert payload.previous_assignee_id
    r = await client.get(f"/v1/leads/{ids[0]}", headers=t.auth("d1-rep"))
    assert r.status_code == 404


async def test_assignment_starts_the_clock_of_a_lead_the_unit_collected(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    """No acceptance step for a dealer's own leads: the clock starts when a rep claims one
    or a manager assigns one; its reclaim returns it to the dealer's own pool (it stays
    with the unit that collected it), and the rep who lost it is in cool-down."""
    tenant, d1 = uuid.UUID(t.id), unit(t, "d1")
    r = await client.put("/v1/sla-policy", json={"protection_hours": 24}, headers=t.auth("admin"))
    assert r.status_code == 200, r.text
    own = []
    for _ in range(2):
        phone = "138" + "".join(random.choices("0123456789", k=8))
        body = {"full_name": "Li Lei", "phone": phone}
        r = await client.post("/v1/leads", json=body, headers=t.auth("d1-manager"))
        assert r.status_code == 201 and r.json()["owner_org_id"] == str(d1), r.text
        own.append(str(r.json()["id"]))
    claimed, assigned = own
    r = await client.get(f"/v1/leads/{claimed}/sla", headers=t.auth("d1-manager"))
    assert r.status_code == 200 and r.json()["clock"] is None, r.text

    r = await client.post(f"/v1/leads/{claimed}:claim", headers=t.auth("d1-rep"))
    assert r.status_code == 200, r.text
    rep = r.json()["assignee_id"]
    body = {"lead_ids": [assigned], "assignee_id": rep}
    r = await client.post("/v1/leads:assign", json=body, headers=t.auth("d1-manager"))
    assert r.status_code == 200, r.text
    for lead in own:
        r = await client.get(f"/v1/leads/{lead}/sla", headers=t.auth("d1-manager"))
        sla = r.json()
        assert sla["clock"] is not None, sla
        assert {x["kind"] for x in sla["timers"]} == {FIRST_CONTACT_DUE, REMINDER, RECLAIM}

    # A distributed lead still waiting for d1 to accept it gets no clock from an assignment.
    phone = "137" + "".join(random.choices("0123456789", k=8))
    r = await client.post(
        "/v1/leads", json={"full_name": "Wei", "phone": phone}, headers=t.auth("east-manager")
    )
    offered = str(r.json()["id"])
    body = {"lead_ids": [offered], "target_org_unit_id": str(d1)}
    r = await client.post("/v1/leads:distribute", json=body, headers=t.auth("east-manager"))
    assert r.status_code == 200, r.text
    body = {"lead_ids": [offered], "assignee_id": rep}
    r = await client.post("/v1/leads:assign", json=body, headers=t.auth("d1-manager"))
    assert r.status_code == 200, r.text
    r = await client.get(f"/v1/leads/{offered}/sla", headers=t.auth("d1-manager"))
    assert r.json()["clock"] is None, r.text

    later = max([await start_of_clock(leads, x) for x in own]) + 24 * H
    fired = await jobs.fire_due(leads.db, now=later, tenant_id=tenant)
    assert fired[RECLAIM] == 2
    for lead in own:
        r = await client.get(f"/v1/leads/{lead}", headers=t.auth("d1-manager"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["owner_org_id"], body.get("assignee_id") or "") == (str(d1), ""), body
        assert await events(leads, "crm.leads.lead.reclaimed.v1", lead) == 1
    _, payload = await wait_for_event(
        leads.settings.nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead.reclaimed.v1",
        events_pb2.LeadReclaimed,
        lambda p: p.lead_id == claimed,
    )
    assert (payload.from_org_id, payload.to_org_id, payload.previous_assignee_id) == (
        str(d1),
        str(d1),
        rep,
    )
    r = await client.post(f"/v1/leads/{claimed}:claim", headers=t.auth("d1-rep"))
    assert r.status_code == 409 and r.json()["reason"] == "COOLDOWN_ACTIVE", r.text
    assert not await jobs.fire_due(leads.db, now=later, tenant_id=tenant)
