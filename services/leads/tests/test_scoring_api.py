"""Lead scoring and grading through REST against real PostgreSQL and NATS: default and
tenant rules, scoring on capture and merge, lead.scored events, rescore.

The session's ``tenant`` is shared with tests capturing under the default rules, so tests
that change rules use a fresh tenant (``other_tenant``)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conftest import Tenant, http_client
from crm.leads.v1 import events_pb2
from crm_leads.scoring.rules import DEFAULT_RULES, rules_json
from crm_platform.events import parse_event
from crm_platform.outbox import outbox
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event

SCORED = "crm.leads.lead.scored.v1"
RULES = {
    "completeness": {"phone": 10, "company": 20},
    "key_fields": [{"field": "province", "points": 30, "any_of": ["Zhejiang"]}],
    "behaviours": {"intent_count": [{"at_least": 2, "points": 25}]},
    "grades": {"A": 50, "B": 30, "C": 20},
}


def mobile() -> str:
    return "137" + "".join(random.choices("0123456789", k=8))


def rich() -> dict[str, Any]:
    """Every profile field, a campaign and a product; unique keys (no merge with others)."""
    key = uuid.uuid4().hex
    return {
        "full_name": "Wang Wu",
        "email": f"{key}@example.com",
        "company": "Acme",
        "province": "Shanghai",
        "city": "Shanghai",
        "open_id": f"o{key}",
        "intent": {"campaign": "spring-expo", "product_interest": "SUV"},
    }


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


async def capture(
    c: httpx.AsyncClient, tenant: Tenant, who: str = "d1-rep", **body: Any
) -> dict[str, Any]:
    r = await c.post("/v1/leads", json={"full_name": "Scored", **body}, headers=tenant.auth(who))
    assert r.status_code in (200, 201), r.text
    lead: dict[str, Any] = r.json()
    return lead


async def scored_events(leads: Runtime, lead_id: str) -> list[events_pb2.LeadScored]:
    """lead.scored events staged for a lead, oldest first (from the outbox, so a test can
    also see that none was written)."""
    async with leads.db.read() as conn:
        rows = await conn.execute(
            sa.select(outbox.c.data).where(outbox.c.event_type == SCORED).order_by(outbox.c.seq)
        )
        payloads = [parse_event(row.data).payload for row in rows]
    return [p for p in payloads if isinstance(p, events_pb2.LeadScored) and p.lead_id == lead_id]


async def test_default_rules_grade_a_sparse_lead_d_and_a_rich_lead_higher(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    current = await client.get("/v1/scoring-rules", headers=tenant.auth("d1-rep"))
    assert current.status_code == 200
    assert current.json() == {"version": 0, "rules": rules_json(DEFAULT_RULES)}

    sparse = await capture(client, tenant, phone=mobile())
    assert (sparse["score"], sparse["grade"]) == (15, "D")
    full = await capture(client, tenant, phone=mobile(), **rich())
    assert (full["score"], full["grade"]) == (75, "B")
    got = await client.get(f"/v1/leads/{full['id']}", headers=tenant.auth("d1-rep"))
    assert (got.json()["score"], got.json()["grade"]) == (75, "B")


async def test_repeat_enquiry_raises_the_score_and_publishes_lead_scored(
    client: httpx.AsyncClient, tenant: Tenant, leads: Runtime, nats_url: str
) -> None:
    phone = mobile()
    first = await capture(client, tenant, phone=phone, **rich())
    assert (first["score"], first["grade"]) == (75, "B")

    again = await capture(client, tenant, phone=phone)
    assert again["id"] == first["id"]
    assert (again["intent_count"], again["score"], again["grade"]) == (2, 85, "A")
    _, event = await wait_for_event(
        nats_url,
        leads.settings.nats_namespace,
        SCORED,
        events_pb2.LeadScored,
        lambda e: e.lead_id == first["id"],
    )
    assert (event.score, event.grade, event.previous_score, event.previous_grade) == (
        85,
        "A",
        75,
        "B",
    )
    assert "behaviours.intent_count >= 2 +10" in event.reasons
    assert event.rules_version == 0

    # A third enquiry reaches the next intent tier; a fourth changes nothing, so no event.
    third = await capture(client, tenant, phone=phone)
    assert (third["score"], third["grade"]) == (95, "A")
    fourth = await capture(client, tenant, phone=phone)
    assert (fourth["intent_count"], fourth["score"]) == (4, 95)
    events = await scored_events(leads, first["id"])
    assert [(e.previous_score, e.score) for e in events] == [(75, 85), (85, 95)]


async def test_merge_counts_campaign_responses_over_all_intents(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    phone = mobile()
    first = await capture(client, tenant, phone=phone, intent={"campaign": "a"})
    # name, phone; campaign_responses >= 1
    assert first["score"] == 25
    await capture(client, tenant, phone=phone, intent={"campaign": "b"})
    third = await capture(client, tenant, phone=phone, intent={"campaign": "c"})
    # intent_count >= 3 (+20) and campaign_responses >= 3 (+15)
    assert third["score"] == 5 + 10 + 20 + 15


async def test_concurrent_enquiries_score_every_committed_intent(
    client: httpx.AsyncClient, other_tenant: Tenant
) -> None:
    # One point per campaign response up to 20: a merge that missed a concurrent intent
    # would leave the final score short.
    tiers = [{"at_least": n, "points": n} for n in range(1, 21)]
    rules = {"behaviours": {"campaign_responses": tiers}, "grades": {"A": 90, "B": 80, "C": 70}}
    put = await client.put("/v1/scoring-rules", json=rules, headers=other_tenant.auth("admin"))
    assert put.status_code == 200, put.text
    phone = mobile()
    answers = await asyncio.gather(
        *(
            capture(client, other_tenant, phone=phone, intent={"campaign": f"c{i}"})
            for i in range(12)
        )
    )
    # The last merge to commit set the score; it must have counted all twelve.
    got = await client.get(f"/v1/leads/{answers[0]['id']}", headers=other_tenant.auth("d1-rep"))
    assert (got.json()["intent_count"], got.json()["score"]) == (12, 12)


async def test_admin_puts_rules_and_new_captures_use_them(
    client: httpx.AsyncClient, other_tenant: Tenant
) -> None:
    admin = other_tenant.auth("admin")
    put = await client.put("/v1/scoring-rules", json=RULES, headers=admin)
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 1
    assert put.json()["rules"]["grades"] == RULES["grades"]
    got = await client.get("/v1/scoring-rules", headers=other_tenant.auth("d1-rep"))
    assert got.json() == put.json()

    lead = await capture(client, other_tenant, phone=mobile(), company="Acme", province="zhejiang")
    assert (lead["score"], lead["grade"]) == (60, "A")
    plain = await capture(client, other_tenant, phone=mobile())
    assert (plain["score"], plain["grade"]) == (10, "D")

    second = await client.put(
        "/v1/scoring-rules", json={**RULES, "grades": {"A": 90, "B": 70, "C": 5}}, headers=admin
    )
    assert second.json()["version"] == 2
    again = await capture(client, other_tenant, phone=mobile())
    assert (again["score"], again["grade"]) == (10, "C")


INVALID = [
    ({"grades": {"A": 50, "B": 50, "C": 20}}, {"grades"}),
    ({"bonus": 5}, {"bonus"}),
    ({"completeness": {"phone": -10}}, {"completeness.phone"}),
    ({"key_fields": [{"field": "salary", "points": 5}]}, {"key_fields.0.field"}),
    (
        {"behaviours": {"intent_count": [{"at_least": 3, "points": 5}, {"at_least": 2}]}},
        {"behaviours.intent_count.1.points"},
    ),
    (
        {"behaviours": {"campaign_responses": [{"at_least": 3, "points": 5}] * 2}},
        {"behaviours.campaign_responses"},
    ),
    (
        {"behaviours": {"visits": {"points": 10, "max_points": 5}}},
        {"behaviours.visits.max_points"},
    ),
]


async def test_invalid_rules_are_rejected_naming_the_path(
    client: httpx.AsyncClient, other_tenant: Tenant
) -> None:
    admin = other_tenant.auth("admin")
    for change, fields in INVALID:
        r = await client.put("/v1/scoring-rules", json={**RULES, **change}, headers=admin)
        assert r.status_code == 422, r.text
        assert {v["field"] for v in r.json()["violations"]} == fields, change
    current = await client.get("/v1/scoring-rules", headers=admin)
    assert current.json()["version"] == 0  # nothing stored


async def test_only_a_tenant_admin_may_change_rules(
    client: httpx.AsyncClient, other_tenant: Tenant
) -> None:
    for who in ("hq-manager", "d1-rep"):
        r = await client.put("/v1/scoring-rules", json=RULES, headers=other_tenant.auth(who))
        assert r.status_code == 403, r.text
        assert r.json()["reason"] == "ROLE_REQUIRED"
    # Refused before the body is looked at.
    bad = await client.put(
        "/v1/scoring-rules", json={"bonus": 1}, headers=other_tenant.auth("d1-rep")
    )
    assert bad.status_code == 403
    assert (await client.put("/v1/scoring-rules", json=RULES)).status_code == 401


async def test_rescore_applies_the_current_rules(
    client: httpx.AsyncClient, other_tenant: Tenant, leads: Runtime
) -> None:
    lead = await capture(client, other_tenant, phone=mobile(), company="Acme")
    assert (lead["score"], lead["grade"]) == (30, "D")  # default: name, phone, company x2
    put = await client.put("/v1/scoring-rules", json=RULES, headers=other_tenant.auth("admin"))
    assert put.status_code == 200

    r = await client.post(f"/v1/leads/{lead['id']}:rescore", headers=other_tenant.auth("d1-rep"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["lead"]["score"], body["lead"]["grade"]) == (30, "B")
    assert body["reasons"] == ["completeness.phone +10", "completeness.company +20"]
    assert body["rules_version"] == 1
    assert body["lead"]["etag"] != lead["etag"]
    # Same score, different grade: still a change.
    assert [
        (e.previous_grade, e.grade, e.rules_version) for e in await scored_events(leads, lead["id"])
    ] == [("D", "B", 1)]

    unchanged = await client.post(
        f"/v1/leads/{lead['id']}:rescore", headers=other_tenant.auth("hq-manager")
    )
    assert unchanged.json()["lead"]["etag"] == body["lead"]["etag"]
    assert len(await scored_events(leads, lead["id"])) == 1


async def test_rescore_of_an_invisible_lead_is_not_found(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = await capture(client, tenant, "d2-rep", phone=mobile())
    for who, t in (("d1-rep", tenant), ("admin", other_tenant)):
        r = await client.post(f"/v1/leads/{theirs['id']}:rescore", headers=t.auth(who))
        assert r.status_code == 404, r.text
        assert r.json()["reason"] == "LEAD_NOT_FOUND"
    missing = await client.post(f"/v1/leads/{uuid.uuid4()}:rescore", headers=tenant.auth("d1-rep"))
    assert missing.status_code == 404
    malformed = await client.post("/v1/leads/nope:rescore", headers=tenant.auth("d1-rep"))
    assert malformed.status_code == 422


async def test_a_logged_visit_rescores_the_lead_and_publishes_lead_scored(
    client: httpx.AsyncClient, other_tenant: Tenant, leads: Runtime, nats_url: str
) -> None:
    t = other_tenant
    rules = {
        "completeness": {"phone": 10},
        "behaviours": {"visits": {"points": 15, "max_points": 30}},
        "grades": {"A": 60, "B": 40, "C": 20},
    }
    put = await client.put("/v1/scoring-rules", json=rules, headers=t.auth("admin"))
    assert put.status_code == 200, put.text
    assert put.json()["rules"]["behaviours"]["visits"] == {"points": 15, "max_points": 30}
    lead = await capture(client, t, phone=mobile())
    assert (lead["score"], lead["grade"]) == (10, "D")
    url = f"/v1/leads/{lead['id']}"
    assert (await client.post(f"{url}:claim", headers=t.auth("d1-rep"))).status_code == 200

    async def log(kind: str) -> dict[str, Any]:
        r = await client.post(f"{url}/activities", json={"kind": kind}, headers=t.auth("d1-rep"))
        assert r.status_code == 201, r.text
        got = await client.get(url, headers=t.auth("d1-rep"))
        body: dict[str, Any] = got.json()
        return body

    # A call is no behaviour scoring counts: nothing changes.
    called = await log("call")
    assert (called["score"], called["grade"]) == (10, "D")
    visited = await log("visit")
    assert (visited["score"], visited["grade"]) == (25, "C")
    assert visited["etag"] != called["etag"]
    _, event = await wait_for_event(
        nats_url,
        leads.settings.nats_namespace,
        SCORED,
        events_pb2.LeadScored,
        lambda e: e.lead_id == lead["id"],
    )
    assert (event.previous_score, event.previous_grade, event.score, event.grade) == (
        10,
        "D",
        25,
        "C",
    )
    assert sorted(event.reasons) == ["behaviours.visits 1 x 15 +15", "completeness.phone +10"]
    assert event.rules_version == 1
    # The second visit reaches the cap; the third earns nothing more, so no event.
    assert (await log("visit"))["grade"] == "B"
    third = await log("visit")
    assert (third["score"], third["grade"]) == (40, "B")
    events = await scored_events(leads, lead["id"])
    assert [(e.previous_score, e.score) for e in events] == [(10, 25), (25, 40)]
    assert "behaviours.visits 2 x 15 +30" in events[-1].reasons
