"""Tenant de-duplication rules through REST against real PostgreSQL and NATS: validation and
versions, reject / overwrite / merge actions, window and scope, fuzzy company matching, the
field history, and the race-freedom of profile rules.

Tests that change rules use a fresh tenant (``other_tenant``): the session's ``tenant`` keeps
the default rules other tests rely on."""

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
from crm_leads.dedup.rules import DEFAULT_RULES, rules_json
from crm_leads.lead.models import lead_keys
from crm_leads.lead.models import leads as leads_table
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event

UPDATED = "crm.leads.lead.updated.v1"
SYSTEM_KEYS = {"name": "system-keys", "keys": ["phone", "email", "open_id"]}
FUZZY_COMPANY = {
    "name": "same-company",
    "keys": ["company", "city"],
    "match": "fuzzy",
    "fuzzy": {"field": "company", "threshold": 90, "same": ["city"]},
}


def mobile() -> str:
    return "136" + "".join(random.choices("0123456789", k=8))


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


async def put_rules(c: httpx.AsyncClient, t: Tenant, *rules: dict[str, Any]) -> dict[str, Any]:
    r = await c.put("/v1/dedup-rules", json={"rules": list(rules)}, headers=t.auth("admin"))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def capture(
    c: httpx.AsyncClient, t: Tenant, who: str = "d1-rep", **body: Any
) -> httpx.Response:
    return await c.post("/v1/leads", json={"full_name": "Dedup", **body}, headers=t.auth(who))


async def lead_count(rt: Runtime, t: Tenant) -> int:
    async with rt.db.read() as conn:
        query = sa.select(sa.func.count()).where(leads_table.c.tenant_id == uuid.UUID(t.id))
        return int((await conn.execute(query)).scalar_one())


async def key_count(rt: Runtime, t: Tenant) -> int:
    async with rt.db.read() as conn:
        query = sa.select(sa.func.count()).where(lead_keys.c.tenant_id == uuid.UUID(t.id))
        return int((await conn.execute(query)).scalar_one())


async def test_default_rules_and_versions(client: httpx.AsyncClient, other_tenant: Tenant) -> None:
    t = other_tenant
    got = await client.get("/v1/dedup-rules", headers=t.auth("d1-rep"))
    assert got.status_code == 200
    assert got.json() == {"version": 0, "rules": rules_json(DEFAULT_RULES)}

    first = await put_rules(client, t, {"name": "phones", "keys": ["phone"]})
    assert first["version"] == 1 and first["author"]
    second = await put_rules(client, t, {"name": "mails", "keys": ["email"], "action": "reject"})
    assert second["version"] == 2
    latest = (await client.get("/v1/dedup-rules", headers=t.auth("d1-rep"))).json()
    assert latest["version"] == 2
    assert latest["rules"]["rules"][0] == {
        "name": "mails",
        "keys": ["email"],
        "match": "exact",
        "scope": "any",
        "action": "reject",
    }
    v1 = (await client.get("/v1/dedup-rules/versions/1", headers=t.auth("d1-rep"))).json()
    assert v1["rules"]["rules"][0]["name"] == "phones"
    v0 = (await client.get("/v1/dedup-rules/versions/0", headers=t.auth("d1-rep"))).json()
    assert v0 == {"version": 0, "rules": rules_json(DEFAULT_RULES)}
    missing = await client.get("/v1/dedup-rules/versions/3", headers=t.auth("d1-rep"))
    assert missing.status_code == 404
    assert missing.json()["reason"] == "DEDUP_RULES_NOT_FOUND"
    # Managers may change the rules too; reps may not.
    by_manager = await client.put(
        "/v1/dedup-rules", json={"rules": []}, headers=t.auth("hq-manager")
    )
    assert by_manager.status_code == 200 and by_manager.json()["version"] == 3
    by_rep = await client.put("/v1/dedup-rules", json={"rules": []}, headers=t.auth("d1-rep"))
    assert by_rep.status_code == 403


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"name": "r", "keys": []}, "rules.0.keys"),
        ({"name": "r", "keys": ["fax"]}, "rules.0.keys.0"),
        ({"name": "r", "keys": ["phone"], "bogus": True}, "rules.0.bogus"),
        (FUZZY_COMPANY | {"fuzzy": None}, "rules.0.fuzzy"),
        (FUZZY_COMPANY | {"fuzzy": {"field": "company", "threshold": 120, "same": ["city"]}},
         "rules.0.fuzzy.threshold"),
        ({"name": "r", "keys": ["phone"], "overwrite_fields": ["city"]},
         "rules.0.overwrite_fields"),
    ],
)  # fmt: skip
async def test_bad_documents_are_422_naming_the_field(
    client: httpx.AsyncClient, tenant: Tenant, rule: dict[str, Any], field: str
) -> None:
    r = await client.put("/v1/dedup-rules", json={"rules": [rule]}, headers=tenant.auth("admin"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in [v["field"] for v in r.json()["violations"]]


async def test_duplicate_rule_names_are_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    rules = [{"name": "a", "keys": ["phone"]}, {"name": "a", "keys": ["email"]}]
    r = await client.put("/v1/dedup-rules", json={"rules": rules}, headers=tenant.auth("admin"))
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "rules"
    current = await client.get("/v1/dedup-rules", headers=tenant.auth("admin"))
    assert current.json()["version"] == 0  # nothing stored


async def test_reject_answers_409_and_writes_nothing(
    client: httpx.AsyncClient, other_tenant: Tenant, leads: Runtime
) -> None:
    t = other_tenant
    await put_rules(client, t, {"name": "no-repeats", "keys": ["phone"], "action": "reject"})
    phone = mobile()
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"full_name": "Dedup", "phone": phone}
    first = await client.post("/v1/leads", json=body, headers=t.auth("d1-rep") | key)
    assert first.status_code == 201
    # A retry of the capture that created the lead is answered as the first time.
    retry = await client.post("/v1/leads", json=body, headers=t.auth("d1-rep") | key)
    assert (retry.status_code, retry.json()["id"]) == (201, first.json()["id"])
    before = (await lead_count(leads, t), await key_count(leads, t))

    again = await capture(client, t, phone=phone, email="new@example.com")
    assert again.status_code == 409, again.text
    problem = again.json()
    assert problem["reason"] == "LEAD_DUPLICATE_REJECTED"
    assert first.json()["id"] in problem["detail"]
    assert problem["violations"][0]["field"] == "phone"
    # A sibling dealer is refused without learning which lead it is.
    hidden = await capture(client, t, "d2-rep", phone=phone)
    assert hidden.status_code == 409
    assert first.json()["id"] not in hidden.text
    # Nothing written: no lead, no intent, and the new email was not claimed.
    assert (await lead_count(leads, t), await key_count(leads, t)) == before
    got = await client.get(f"/v1/leads/{first.json()['id']}", headers=t.auth("d1-rep"))
    assert got.json()["intent_count"] == 1
    by_email = await capture(client, t, email="new@example.com")
    assert by_email.status_code == 201

    batch = await client.post(
        "/v1/leads:batchCreate",
        json={"leads": [{"full_name": "B", "phone": phone}, {"full_name": "C", "phone": mobile()}]},
        headers=t.auth("d1-rep"),
    )
    results = batch.json()["results"]
    assert [x["outcome"] for x in results] == ["REJECTED", "CREATED"]
    assert results[0]["violations"][0]["field"] == "phone"


async def test_overwrite_replaces_fields_records_history_and_publishes(
    client: httpx.AsyncClient, other_tenant: Tenant, leads: Runtime, nats_url: str
) -> None:
    t = other_tenant
    await put_rules(client, t, {"name": "latest-wins", "keys": ["phone"], "action": "overwrite"})
    phone = mobile()
    first = await capture(client, t, phone=phone, company="Old Co", city="Wuxi", province="JS")
    lead_id = first.json()["id"]
    request_id = str(uuid.uuid4())
    again = await client.post(
        "/v1/leads",
        json={"full_name": "Renamed", "phone": phone, "company": "New Co", "city": "Wuxi"},
        headers={**t.auth("d1-rep"), "Idempotency-Key": request_id},
    )
    assert again.status_code == 200, again.text
    lead = again.json()
    assert lead["id"] == lead_id
    assert (lead["full_name"], lead["company"], lead["city"], lead["province"]) == (
        "Renamed",
        "New Co",
        "Wuxi",  # unchanged: same value
        "JS",  # kept: the capture supplied none
    )
    history = await client.get(f"/v1/leads/{lead_id}/history", headers=t.auth("d1-rep"))
    assert history.status_code == 200
    changes = history.json()["changes"]
    assert sorted((c["field"], c["old_value"], c["new_value"]) for c in changes) == [
        ("company", "Old Co", "New Co"),
        ("full_name", "Dedup", "Renamed"),
    ]
    assert {(c["action"], c["rule"], c["request_id"]) for c in changes} == {
        ("overwrite", "latest-wins", request_id)
    }
    assert all(c["intent_id"] == lead["intents"][0]["id"] for c in changes)
    _, event = await wait_for_event(
        nats_url,
        leads.settings.nats_namespace,
        UPDATED,
        events_pb2.LeadUpdated,
        lambda e: e.lead.id == lead_id,
    )
    assert list(event.changed_fields) == ["company", "full_name"]
    assert (event.rule, event.lead.company) == ("latest-wins", "New Co")

    # A field policy limits what a newer capture replaces.
    await put_rules(
        client,
        t,
        {
            "name": "company-only",
            "keys": ["phone"],
            "action": "overwrite",
            "overwrite_fields": ["company"],
        },
    )
    third = await capture(client, t, phone=phone, full_name="Ignored", company="Third Co")
    assert (third.json()["full_name"], third.json()["company"]) == ("Renamed", "Third Co")
    page = await client.get(
        f"/v1/leads/{lead_id}/history", params={"page_size": 1}, headers=t.auth("d1-rep")
    )
    assert [c["new_value"] for c in page.json()["changes"]] == ["Third Co"]
    assert page.json()["next_page_token"]
    # Not visible to a sibling dealer: 404, as for the lead itself.
    hidden = await client.get(f"/v1/leads/{lead_id}/history", headers=t.auth("d2-rep"))
    assert hidden.status_code == 404


async def test_default_merge_records_filled_fields_in_history(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    phone = mobile()
    first = await capture(client, tenant, phone=phone)
    again = await capture(client, tenant, phone=phone, full_name="Other", company="Filled Co")
    assert again.status_code == 200
    assert (again.json()["full_name"], again.json()["company"]) == ("Dedup", "Filled Co")
    history = await client.get(
        f"/v1/leads/{first.json()['id']}/history", headers=tenant.auth("d1-rep")
    )
    assert [(c["field"], c["old_value"], c["new_value"], c["action"]) for c in
            history.json()["changes"]] == [("company", "", "Filled Co", "merge")]  # fmt: skip


async def test_window_lead_older_than_the_window_is_not_a_duplicate(
    client: httpx.AsyncClient, other_tenant: Tenant, leads: Runtime
) -> None:
    t = other_tenant
    await put_rules(client, t, {"name": "recent", "keys": ["phone"], "window_days": 30})
    phone = mobile()
    old = (await capture(client, t, phone=phone)).json()["id"]
    recent = await capture(client, t, phone=phone)
    assert recent.status_code == 200 and recent.json()["id"] == old

    await age(leads, old, days=40)
    outside = await capture(client, t, phone=phone)
    assert outside.status_code == 201, outside.text
    assert outside.json()["id"] != old
    # The key stays with the older lead (a key has one owner): the next capture is compared
    # with it again, so it too is outside the window and makes a new lead.
    assert (await capture(client, t, phone=phone)).status_code == 201
    assert await lead_count(leads, t) == 3


async def age(rt: Runtime, lead_id: str, *, days: int) -> None:
    """Move a lead's create and update time ``days`` into the past."""
    back = sa.func.now() - sa.func.make_interval(0, 0, 0, days)
    async with rt.db.unit_of_work() as conn:
        await conn.execute(
            leads_table.update()
            .where(leads_table.c.id == uuid.UUID(lead_id))
            .values(create_time=back, update_time=back)
        )


async def test_scope_channel_a_different_source_makes_a_new_lead(
    client: httpx.AsyncClient, other_tenant: Tenant
) -> None:
    t = other_tenant
    await put_rules(client, t, {"name": "per-channel", "keys": ["phone"], "scope": "channel"})
    phone = mobile()
    web = (await capture(client, t, phone=phone, source="web")).json()["id"]
    same = await capture(client, t, phone=phone, source="web")
    assert same.status_code == 200 and same.json()["id"] == web
    other = await capture(client, t, phone=phone, source="wechat")
    assert other.status_code == 201 and other.json()["id"] != web


async def test_fuzzy_company_in_the_same_city_merges(
    client: httpx.AsyncClient, other_tenant: Tenant
) -> None:
    t = other_tenant
    # A stored document replaces the default: keep the identity rule, add the fuzzy one.
    await put_rules(client, t, SYSTEM_KEYS, FUZZY_COMPANY)
    ali = await capture(
        client, t, phone=mobile(), company="杭州阿里巴巴网络技术有限公司", city="杭州"
    )
    assert ali.status_code == 201
    same = await capture(
        client, t, phone=mobile(), company="阿里巴巴（杭州）网络技术有限公司", city="杭州"
    )
    assert same.status_code == 200, same.text
    assert same.json()["id"] == ali.json()["id"]
    assert same.json()["intent_count"] == 2

    acme = await capture(
        client, t, email="a@acme.test", company="Acme Trading Co., Ltd", city="Shanghai"
    )
    assert acme.status_code == 201
    acme2 = await capture(
        client, t, email="b@acme.test", company="ACME Trading Company Limited", city="Shanghai"
    )
    assert acme2.status_code == 200 and acme2.json()["id"] == acme.json()["id"]
    # The email this capture brought is now a key of the merged lead.
    by_key = await capture(client, t, email="b@acme.test")
    assert by_key.json()["id"] == acme.json()["id"]
    elsewhere = await capture(
        client, t, email="c@acme.test", company="ACME Trading Company Limited", city="Beijing"
    )
    assert elsewhere.status_code == 201 and elsewhere.json()["id"] != acme.json()["id"]
    other = await capture(client, t, email="d@x.test", company="Acme Logistics", city="Shanghai")
    assert other.status_code == 201


async def test_fuzzy_rule_respects_its_window(
    client: httpx.AsyncClient, other_tenant: Tenant, leads: Runtime
) -> None:
    t = other_tenant
    await put_rules(client, t, FUZZY_COMPANY | {"window_days": 7})
    old = (await capture(client, t, phone=mobile(), company="Acme Ltd", city="Wuxi")).json()["id"]
    await age(leads, old, days=8)
    new = await capture(client, t, phone=mobile(), company="ACME Limited", city="Wuxi")
    assert new.status_code == 201 and new.json()["id"] != old


async def test_concurrent_fuzzy_duplicates_make_one_lead(
    client: httpx.AsyncClient, other_tenant: Tenant, leads: Runtime
) -> None:
    t = other_tenant
    await put_rules(client, t, FUZZY_COMPANY)
    names = ["Acme Trading Co., Ltd", "ACME Trading Company Limited", "Acme Trading Ltd."]
    answers = await asyncio.gather(
        *(
            capture(client, t, phone=mobile(), company=names[i % 3], city="Suzhou")
            for i in range(10)
        )
    )
    assert sorted(r.status_code for r in answers) == [200] * 9 + [201], [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert await lead_count(leads, t) == 1
    got = await client.get(f"/v1/leads/{answers[0].json()['id']}", headers=t.auth("d1-rep"))
    assert got.json()["intent_count"] == 10
