"""Distribution through REST against real PostgreSQL and NATS: rules and profile documents
(validation, roles), manual distribution one level down with visibility, owner history and
its event, automatic distribution of captured leads by territory within capacity, and
concurrent runs over one pool never giving a lead two owners."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conftest import Tenant, http_client, make_tenant
from crm.leads.v1 import events_pb2
from crm_leads.distribution import loads
from crm_leads.distribution.models import distribution_load, lead_owner_history
from crm_leads.lead.models import leads as leads_table
from crm_leads.orgtree import service as orgtree
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event
from crm_platform.testing.harness import eventually


def mobile() -> str:
    return "139" + "".join(random.choices("0123456789", k=8))


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


@pytest.fixture
async def t(leads: Runtime, directory: Runtime, dir_client: httpx.AsyncClient) -> Tenant:
    """A fresh tenant (HQ → east → d1, d2) with a manager at east, replicated to leads."""
    tenant = await make_tenant(directory)
    await tenant.add_user("east-manager", "east", ["manager"])

    async def replicated() -> None:
        async with leads.db.read() as conn:
            rows = await orgtree.subtree(conn=conn, unit_id=unit(tenant, "hq"))
        assert {r.code for r in rows} == {tenant.slug, "east", "d1", "d2"}

    await eventually(replicated)
    return tenant


def unit(t: Tenant, name: str) -> uuid.UUID:
    return uuid.UUID(t.units[name]["id"])


def path(t: Tenant, name: str) -> str:
    return str(t.units[name]["path"])


async def capture(c: httpx.AsyncClient, t: Tenant, who: str, **body: Any) -> str:
    fields = {"full_name": "Li Lei", "phone": mobile(), **body}
    r = await c.post("/v1/leads", json=fields, headers=t.auth(who))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def owners(rt: Runtime, ids: list[str]) -> dict[str, uuid.UUID]:
    async with rt.db.read() as conn:
        rows = await conn.execute(
            sa.select(leads_table.c.id, leads_table.c.owner_org_id).where(
                leads_table.c.id.in_([uuid.UUID(x) for x in ids])
            )
        )
        return {str(r.id): r.owner_org_id for r in rows}


def fields(r: httpx.Response) -> set[str]:
    assert r.status_code == 422, r.text
    return {v["field"] for v in r.json()["violations"]}


async def test_rules_and_profiles_are_validated_versioned_and_guarded(
    client: httpx.AsyncClient, t: Tenant
) -> None:
    east, d1 = unit(t, "east"), unit(t, "d1")
    rules_url = f"/v1/distribution-rules/{east}"
    r = await client.get(rules_url, headers=t.auth("east-manager"))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 0 and r.json()["rules"]["rules"] == []

    good = {"rules": [{"name": "spread", "strategy": "weighted_round_robin"}]}
    assert (await client.put(rules_url, json=good, headers=t.auth("d1-rep"))).status_code == 403
    # A sibling's manager cannot reach east: not in its subtree.
    assert (await client.get(rules_url, headers=t.auth("d1-rep"))).status_code == 404

    bad = {"rules": [{"name": "x", "strategy": "territory", "match": {"score_min": "high"}}]}
    r = await client.put(rules_url, json=bad, headers=t.auth("east-manager"))
    assert fields(r) == {"rules.0.match.score_min"}
    r = await client.put(rules_url, json={"rulez": []}, headers=t.auth("east-manager"))
    assert fields(r) == {"rulez"}
    stranger = {
        "rules": [
            {
                "name": "pick",
                "strategy": "priority",
                "targets": [{"unit_id": str(d1)}, {"unit_id": str(unit(t, "hq"))}],
            }
        ]
    }
    r = await client.put(rules_url, json=stranger, headers=t.auth("east-manager"))
    assert fields(r) == {"rules.0.targets.1.unit_id"}

    r = await client.put(rules_url, json=good, headers=t.auth("east-manager"))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    r = await client.put(rules_url, json=good, headers=t.auth("hq-manager"))
    assert r.json()["version"] == 2
    r = await client.get(rules_url, headers=t.auth("admin"))
    body = r.json()
    assert body["version"] == 2 and body["rules"]["rules"][0]["name"] == "spread"
    assert body["author"] and body["create_time"]

    profile_url = f"/v1/distribution-profiles/{d1}"
    r = await client.get(profile_url, headers=t.auth("d1-rep"))
    assert r.json() == {"org_unit_id": str(d1), "version": 0, "profile": None}
    bad_profile = {
        "daily_capacity": -1,
        "active_hours": {"mon": [{"start": "25:00", "end": "18:00"}]},
    }
    r = await client.put(profile_url, json=bad_profile, headers=t.auth("east-manager"))
    assert fields(r) == {"daily_capacity", "active_hours.mon.0.start"}
    profile = {"territories": ["Zhejiang"], "daily_capacity": 5, "weight": 2}
    r = await client.put(profile_url, json=profile, headers=t.auth("east-manager"))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["profile"]["daily_capacity"] == 5
    r = await client.put(profile_url, json=profile, headers=t.auth("d1-rep"))
    assert r.status_code == 403
    # east's profile is kept by HQ: east's own manager may not set it.
    r = await client.put(
        f"/v1/distribution-profiles/{east}", json=profile, headers=t.auth("east-manager")
    )
    assert r.status_code == 403, r.text
    r = await client.put(
        f"/v1/distribution-profiles/{unit(t, 'hq')}", json={}, headers=t.auth("admin")
    )
    assert r.status_code == 409 and r.json()["reason"] == "ORG_UNIT_IS_ROOT"


async def test_manual_distribution_moves_one_level_down_with_history_and_event(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    lead = await capture(client, t, "east-manager")
    at_hq = await capture(client, t, "hq-manager")
    unknown = str(uuid.uuid4())
    body = {"lead_ids": [lead], "target_org_unit_id": str(unit(t, "d1"))}
    r = await client.post("/v1/leads:distribute", json=body, headers=t.auth("d1-rep"))
    assert r.status_code == 403, r.text

    body["lead_ids"] = [lead, at_hq, unknown]
    r = await client.post("/v1/leads:distribute", json=body, headers=t.auth("east-manager"))
    assert r.status_code == 200, r.text
    moved, skipped, missing = r.json()["results"]
    assert moved["outcome"] == "DISTRIBUTED"
    assert moved["lead"]["owner_org_path"] == path(t, "d1")
    # The HQ lead is not visible to east's manager; as an admin it is the wrong level.
    assert (skipped["outcome"], skipped["error"]["reason"]) == ("FAILED", "LEAD_NOT_FOUND")
    assert missing["error"]["reason"] == "LEAD_NOT_FOUND"
    body["lead_ids"] = [at_hq]
    r = await client.post("/v1/leads:distribute", json=body, headers=t.auth("admin"))
    assert r.json()["results"][0]["error"]["reason"] == "LEAD_NOT_IN_PARENT_POOL"
    assert (await owners(leads, [at_hq]))[at_hq] == unit(t, "hq")

    assert (await client.get(f"/v1/leads/{lead}", headers=t.auth("d1-rep"))).status_code == 200
    assert (await client.get(f"/v1/leads/{lead}", headers=t.auth("d2-rep"))).status_code == 404
    r = await client.get(f"/v1/leads/{lead}/owner-history", headers=t.auth("d2-rep"))
    assert r.status_code == 404
    r = await client.get(f"/v1/leads/{lead}/owner-history", headers=t.auth("d1-rep"))
    assert r.status_code == 200, r.text
    (move,) = r.json()["moves"]
    assert move["from_org_path"] == path(t, "east") and move["to_org_path"] == path(t, "d1")
    assert move["reason"] == "manual" and move["rule_name"] == ""

    # Now owned by d1: it cannot go to d2 (d2's parent east no longer owns it).
    body = {"lead_ids": [lead], "target_org_unit_id": str(unit(t, "d2"))}
    r = await client.post("/v1/leads:distribute", json=body, headers=t.auth("east-manager"))
    assert r.json()["results"][0]["error"]["reason"] == "LEAD_NOT_IN_PARENT_POOL"

    envelope, payload = await wait_for_event(
        leads.settings.nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead.distributed.v1",
        events_pb2.LeadDistributed,
        lambda p: p.lead_id == lead,
    )
    assert envelope.org_path == path(t, "d1")
    assert (payload.from_org_id, payload.to_org_id) == (str(unit(t, "east")), str(unit(t, "d1")))
    assert payload.manual and payload.actor


async def test_captured_leads_are_distributed_by_territory_within_capacity(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    east, d1, d2 = unit(t, "east"), unit(t, "d1"), unit(t, "d2")
    admin = t.auth("admin")
    for child, profile in (
        (d1, {"territories": ["Zhejiang"], "daily_capacity": 2}),
        (d2, {"territories": ["Jiangsu"]}),
    ):
        r = await client.put(f"/v1/distribution-profiles/{child}", json=profile, headers=admin)
        assert r.status_code == 200, r.text
    rules = {"rules": [{"name": "by-territory", "strategy": "territory"}]}
    r = await client.put(f"/v1/distribution-rules/{east}", json=rules, headers=admin)
    assert r.status_code == 200, r.text

    zj = [await capture(client, t, "east-manager", province="Zhejiang") for _ in range(3)]
    js = await capture(client, t, "east-manager", province="Jiangsu")
    nowhere = await capture(client, t, "east-manager", province="Yunnan")

    async def settled() -> tuple[str, dict[str, Any]]:
        now = await owners(leads, [*zj, js, nowhere])
        assert Counter(now[x] for x in zj) == {d1: 2, east: 1}, now
        assert now[js] == d2 and now[nowhere] == east
        # The last capture is only known to be decided once it is flagged.
        r = await client.get(
            f"/v1/distribution-rules/{east}/unmatched-leads", headers=t.auth("east-manager")
        )
        assert r.status_code == 200, r.text
        flagged = {x["lead_id"]: x for x in r.json()["leads"]}
        stuck = next(x for x in zj if now[x] == east)
        assert set(flagged) == {stuck, nowhere}
        return stuck, flagged

    _, flagged = await eventually(settled)
    # The rule matches every lead; no territory covers Yunnan, and d1 is full.
    assert {x["rule_name"] for x in flagged.values()} == {"by-territory"}
    assert all("no target available" in x["reason"] for x in flagged.values())
    # d1's capacity holds on a manual re-run too.
    r = await client.post(f"/v1/distribution-rules/{east}:run", headers=t.auth("east-manager"))
    assert r.json() == {"distributed": 0, "unmatched": 2, "by_target": {}}

    r = await client.get(f"/v1/leads/{js}", headers=t.auth("d2-rep"))
    assert r.status_code == 200
    assert (await client.get(f"/v1/leads/{js}", headers=t.auth("d1-rep"))).status_code == 404
    envelope, payload = await wait_for_event(
        leads.settings.nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead_batch.distributed.v1",
        events_pb2.LeadBatchDistributed,
        lambda p: any(x.lead_id == js for x in p.leads),
    )
    assert envelope.org_path == path(t, "d2")
    assert payload.deciding_org_id == str(east)
    assert [(x.to_org_id, x.rule_name) for x in payload.leads] == [(str(d2), "by-territory")]


async def test_imported_leads_are_distributed_by_the_units_rules(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    """An import's ``lead_batch.created`` event goes through the same automatic rules as
    single captures; an importing unit without rules keeps its leads."""
    from services.leads.tests.test_imports import csv_bytes, finished, upload

    east, d1 = unit(t, "east"), unit(t, "d1")
    admin = t.auth("admin")
    r = await client.put(
        f"/v1/distribution-profiles/{d1}", json={"territories": ["Zhejiang"]}, headers=admin
    )
    assert r.status_code == 200, r.text
    rules = {"rules": [{"name": "by-territory", "strategy": "territory"}]}
    r = await client.put(f"/v1/distribution-rules/{east}", json=rules, headers=admin)
    assert r.status_code == 200, r.text
    header = ["full_name", "phone", "province"]
    for who in ("east-manager", "d1-rep"):  # d1 has no rules: its import stays at d1
        rows = [[f"Imported {who} {i}", mobile(), "Zhejiang"] for i in range(5)]
        r = await upload(client, t, csv_bytes(rows, header=header), who=who)
        assert r.status_code == 202, r.text
        job = await finished(client, t, r.json()["id"], who=who)
        assert job["state"] == "SUCCEEDED", job

    async def settled() -> None:
        async with leads.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(leads_table.c.full_name, leads_table.c.owner_org_id).where(
                        leads_table.c.full_name.like("Imported %"),
                        leads_table.c.tenant_id == uuid.UUID(t.id),
                    )
                )
            ).all()
        assert len(rows) == 10
        assert {row.owner_org_id for row in rows} == {d1}, rows

    await eventually(settled)


async def test_concurrent_runs_over_one_pool_move_each_lead_once(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    hq, east, d1, d2 = (unit(t, n) for n in ("hq", "east", "d1", "d2"))
    admin = t.auth("admin")
    ids = [await capture(client, t, "hq-manager", province="Zhejiang") for _ in range(40)]
    r = await client.post(f"/v1/distribution-rules/{hq}:run", headers=admin)
    assert r.status_code == 409 and r.json()["reason"] == "DISTRIBUTION_RULES_MISSING"
    for child in (east, d1, d2):
        r = await client.put(f"/v1/distribution-profiles/{child}", json={}, headers=admin)
        assert r.status_code == 200, r.text
    # A cascade: HQ passes everything to east, east spreads it over d1 and d2.
    for at in (east, hq):
        rules = {"rules": [{"name": "spread", "strategy": "weighted_round_robin"}]}
        r = await client.put(f"/v1/distribution-rules/{at}", json=rules, headers=admin)
        assert r.status_code == 200, r.text
    r = await client.post(f"/v1/distribution-rules/{hq}:run", headers=t.auth("d1-rep"))
    assert r.status_code == 403

    first, second = await asyncio.gather(
        client.post(f"/v1/distribution-rules/{hq}:run", headers=admin),
        client.post(f"/v1/distribution-rules/{hq}:run", headers=t.auth("hq-manager")),
    )
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    runs = first.json()["distributed"] + second.json()["distributed"]
    # The capture consumer may have moved some first: together, never more than the pool.
    assert runs <= len(ids)

    now = await owners(leads, ids)
    assert set(now.values()) <= {d1, d2}
    spread = Counter(now.values())
    assert abs(spread[d1] - spread[d2]) <= 1, spread
    async with leads.db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(lead_owner_history).where(
                    lead_owner_history.c.lead_id.in_([uuid.UUID(x) for x in ids])
                )
            )
        ).all()
    hops = Counter(r.lead_id for r in rows)
    # Exactly one move per lead: HQ → east, east → its dealer.
    assert set(hops.values()) == {2} and len(hops) == len(ids)
    assert all(r.rule_name == "spread" and r.reason == "distributed" for r in rows)


async def test_least_loaded_balances_on_recounted_open_leads(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    """Leads leaving a dealer (here: rejected back up) stop counting toward its load once
    the ``distribution-loads`` job recounts, and least-loaded then sends new leads there."""
    east, d1, d2 = unit(t, "east"), unit(t, "d1"), unit(t, "d2")
    await t.add_user("d1-manager", "d1", ["manager"])
    admin = t.auth("admin")
    for child in (d1, d2):
        r = await client.put(f"/v1/distribution-profiles/{child}", json={}, headers=admin)
        assert r.status_code == 200, r.text
    rules = {"rules": [{"name": "balance", "strategy": "least_loaded"}]}
    r = await client.put(f"/v1/distribution-rules/{east}", json=rules, headers=admin)
    assert r.status_code == 200, r.text

    first = [await capture(client, t, "east-manager") for _ in range(6)]

    async def spread() -> dict[str, uuid.UUID]:
        now = await owners(leads, first)
        assert Counter(now.values()) == {d1: 3, d2: 3}, now
        return now

    now = await eventually(spread)
    # d1 turns its three down: they go back to east and on to d2 (never back to d1).
    for lead in (x for x in first if now[x] == d1):
        r = await client.post(
            f"/v1/leads/{lead}:reject",
            json={"reason_code": "OTHER"},
            headers=t.auth("d1-manager"),
        )
        assert r.status_code == 200, r.text
    assert set((await owners(leads, first)).values()) == {d2}

    async def open_loads() -> dict[uuid.UUID, int]:
        async with leads.db.read() as conn:
            rows = await conn.execute(
                sa.select(distribution_load.c.org_unit_id, distribution_load.c.open_load).where(
                    distribution_load.c.tenant_id == uuid.UUID(t.id)
                )
            )
            return {r.org_unit_id: r.open_load for r in rows}

    # The counters only ever went up: d1 still looks as loaded as it was (d2's is right:
    # redistribution counted the three it got).
    assert await open_loads() == {d1: 3, d2: 6}
    assert await loads.refresh_tenant(leads.db, uuid.UUID(t.id)) == 1
    assert await open_loads() == {d1: 0, d2: 6}
    assert await loads.refresh_tenant(leads.db, uuid.UUID(t.id)) == 0  # nothing changed

    second = [await capture(client, t, "east-manager") for _ in range(4)]

    async def to_d1() -> None:
        assert set((await owners(leads, second)).values()) == {d1}

    await eventually(to_d1)
    assert await open_loads() == {d1: 4, d2: 6}


def test_subtree_counts_roll_up_to_every_ancestor() -> None:
    per_path = {"/t/": 1, "/t/r1/": 2, "/t/r1/d1/": 3, "/t/r2/d9/": 4}
    assert loads.subtree_counts(per_path) == {
        "/t/": 10,
        "/t/r1/": 5,
        "/t/r1/d1/": 3,
        "/t/r2/": 4,
        "/t/r2/d9/": 4,
    }


async def test_rules_match_the_leads_territory_and_custom_attributes(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    east, d1, d2 = unit(t, "east"), unit(t, "d1"), unit(t, "d2")
    admin = t.auth("admin")
    for child, profile in ((d1, {"territories": ["east-zj-01"]}), (d2, {"territories": ["x"]})):
        r = await client.put(f"/v1/distribution-profiles/{child}", json=profile, headers=admin)
        assert r.status_code == 200, r.text
    rules = {
        "rules": [
            {
                "name": "fleet",
                "strategy": "priority",
                "match": {"custom": {"segment": {"equals": "fleet"}}},
                "targets": [{"unit_id": str(d2)}],
            },
            {"name": "by-territory", "strategy": "territory"},
        ]
    }
    r = await client.put(f"/v1/distribution-rules/{east}", json=rules, headers=admin)
    assert r.status_code == 200, r.text

    fleet = await capture(
        client, t, "east-manager", territory="east-zj-01", custom_fields={"segment": "fleet"}
    )
    zone = await capture(client, t, "east-manager", territory="east-zj-01")
    other = await capture(
        client, t, "east-manager", territory="east-js-09", custom_fields={"segment": "retail"}
    )

    async def settled() -> None:
        assert await owners(leads, [fleet, zone, other]) == {fleet: d2, zone: d1, other: east}

    await eventually(settled)
    r = await client.get(f"/v1/leads/{fleet}", headers=t.auth("d2-rep"))
    assert (r.json()["territory"], r.json()["custom_fields"]) == (
        "east-zj-01",
        {"segment": "fleet"},
    )


async def test_territory_and_custom_attributes_are_validated(
    client: httpx.AsyncClient, t: Tenant
) -> None:
    body = {"full_name": "Li", "phone": mobile(), "territory": "east zj"}
    r = await client.post("/v1/leads", json=body, headers=t.auth("d1-rep"))
    assert fields(r) == {"territory"}
    body = {"full_name": "Li", "phone": mobile(), "custom_fields": {"9lives": "x", "ok": "y"}}
    r = await client.post("/v1/leads", json=body, headers=t.auth("d1-rep"))
    assert fields(r) == {"custom_fields.9lives"}
    lead = await capture(client, t, "d1-rep", territory="t-1", custom_fields={"tier": " gold "})
    r = await client.patch(f"/v1/leads/{lead}", json={"territory": "t-2"}, headers=t.auth("d1-rep"))
    assert r.status_code == 200, r.text
    assert (r.json()["territory"], r.json()["custom_fields"]) == ("t-2", {"tier": "gold"})


async def test_a_unit_passes_its_leads_up_and_is_not_offered_them_again(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    east, d1, d2 = unit(t, "east"), unit(t, "d1"), unit(t, "d2")
    await t.add_user("d1-manager", "d1", ["manager"])
    mine = [await capture(client, t, "d1-rep") for _ in range(2)]
    held = await capture(client, t, "d1-rep")
    r = await client.post(f"/v1/leads/{held}:claim", headers=t.auth("d1-rep"))
    assert r.status_code == 200, r.text
    at_hq = await capture(client, t, "admin")

    body = {"lead_ids": [*mine, held, at_hq], "note": "outside our territory"}
    r = await client.post("/v1/leads:passUp", json=body, headers=t.auth("d1-rep"))
    assert r.status_code == 403  # reps do not give their unit's leads away
    r = await client.post("/v1/leads:passUp", json=body, headers=t.auth("d1-manager"))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["outcome"] for x in results] == ["DISTRIBUTED", "DISTRIBUTED", "FAILED", "FAILED"]
    assert [x["error"]["reason"] for x in results[2:]] == ["LEAD_HELD", "LEAD_NOT_FOUND"]
    assert results[0]["lead"]["owner_org_path"] == path(t, "east")
    assert await owners(leads, mine) == {x: east for x in mine}
    # d1 no longer sees them; east does, with the move in the owner history.
    assert (await client.get(f"/v1/leads/{mine[0]}", headers=t.auth("d1-rep"))).status_code == 404
    r = await client.get(f"/v1/leads/{mine[0]}/owner-history", headers=t.auth("east-manager"))
    assert [(m["reason"], m["to_org_id"]) for m in r.json()["moves"]] == [("passed_up", str(east))]
    envelope, payload = await wait_for_event(
        leads.settings.nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead.passed_up.v1",
        events_pb2.LeadPassedUp,
        lambda p: p.lead_id == mine[0],
    )
    assert envelope.org_path == path(t, "east")
    assert (payload.from_org_id, payload.note) == (str(d1), "outside our territory")

    # Redistribution by east's rules skips d1, even with d1 first in line.
    for child in (d1, d2):
        r = await client.put(f"/v1/distribution-profiles/{child}", json={}, headers=t.auth("admin"))
        assert r.status_code == 200, r.text
    rules = {
        "rules": [
            {
                "name": "d1-first",
                "strategy": "priority",
                "targets": [{"unit_id": str(d1)}, {"unit_id": str(d2)}],
            }
        ]
    }
    r = await client.put(f"/v1/distribution-rules/{east}", json=rules, headers=t.auth("admin"))
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/distribution-rules/{east}:run", headers=t.auth("east-manager"))
    assert r.status_code == 200, r.text
    assert await owners(leads, mine) == {x: d2 for x in mine}
