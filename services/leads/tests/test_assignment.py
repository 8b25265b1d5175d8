"""Assignment inside an org unit (manager → rep) and the pool rules, through REST against
real PostgreSQL and NATS: policies, round-robin / load-based / skill runs, manual
(re)assignment, the private-pool cap, the reclaim cool-down, and a deactivated rep's leads
going back to the pool."""

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
from crm_leads.poolrules.models import lead_releases
from crm_leads.users.models import users
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event


def mobile() -> str:
    return "138" + "".join(random.choices("0123456789", k=8))


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


async def replicated(leads: Runtime, *user_ids: str) -> None:
    """Wait until the leads service's users replica has every one of ``user_ids``."""
    ids = [uuid.UUID(u) for u in user_ids]
    for _ in range(200):
        async with leads.db.read() as conn:
            n = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(users).where(users.c.id.in_(ids))
                )
            ).scalar_one()
        if n == len(ids):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("users not replicated")


@pytest.fixture
async def t(leads: Runtime, directory: Runtime, dir_client: httpx.AsyncClient) -> Tenant:
    """A fresh tenant with reps r1, r2, r3 in d1 and a manager of d1."""
    tenant = await make_tenant(directory)
    ids = [await tenant.add_user(f"r{i}", "d1", ["rep"], username=f"u-r{i}") for i in (1, 2, 3)]
    ids.append(await tenant.add_user("d1-manager", "d1", ["manager"], username="u-d1-manager"))
    tenant.units["ids"] = dict(zip(("r1", "r2", "r3", "d1-manager"), ids, strict=True))
    await replicated(leads, *ids)
    return tenant


def uid(t: Tenant, who: str) -> str:
    return t.units["ids"][who]


async def capture(c: httpx.AsyncClient, t: Tenant, who: str = "d1-rep", **body: Any) -> str:
    fields = {"full_name": "Li Lei", "phone": mobile(), "city": "Hangzhou", **body}
    r = await c.post("/v1/leads", json=fields, headers=t.auth(who))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def put_policy(
    c: httpx.AsyncClient, t: Tenant, policy: dict[str, Any], who: str = "d1-manager"
) -> httpx.Response:
    return await c.put(
        f"/v1/assignment-policies/{t.units['d1']['id']}", json=policy, headers=t.auth(who)
    )


async def run(c: httpx.AsyncClient, t: Tenant) -> dict[str, Any]:
    r = await c.post(
        f"/v1/assignment-policies/{t.units['d1']['id']}:run", headers=t.auth("d1-manager")
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def assign(
    c: httpx.AsyncClient, t: Tenant, lead_ids: list[str], to: str, who: str = "d1-manager"
) -> httpx.Response:
    return await c.post(
        "/v1/leads:assign", json={"lead_ids": lead_ids, "assignee_id": to}, headers=t.auth(who)
    )


async def holder(c: httpx.AsyncClient, t: Tenant, lead_id: str) -> str:
    r = await c.get(f"/v1/leads/{lead_id}", headers=t.auth("admin"))
    return str(r.json()["assignee_id"])


async def test_policy_is_validated_versioned_and_scoped(
    client: httpx.AsyncClient, t: Tenant
) -> None:
    r = await client.get(f"/v1/assignment-policies/{t.units['d1']['id']}", headers=t.auth("d1-rep"))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 0 and r.json()["policy"]["strategy"] == "manual"

    r = await put_policy(client, t, {"strategy": "fastest", "reps": [{"user_id": "x"}]})
    assert r.status_code == 422
    assert sorted(v["field"] for v in r.json()["violations"]) == ["reps.0.user_id", "strategy"]
    d2_rep = (await client.get("/v1/leads:mine", headers=t.auth("d2-rep"))).status_code
    assert d2_rep == 200
    r = await put_policy(
        client,
        t,
        {"strategy": "round_robin", "reps": [{"user_id": uid(t, "r1")}, {"user_id": uid(t, "r1")}]},
    )
    assert [v["field"] for v in r.json()["violations"]] == ["reps.1.user_id"]
    # A manager (not a rep) of the unit is not an assignee.
    r = await put_policy(
        client, t, {"strategy": "round_robin", "reps": [{"user_id": uid(t, "d1-manager")}]}
    )
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "reps.0.user_id"

    r = await put_policy(client, t, {"strategy": "round_robin", "reps": []}, who="r1")
    assert r.status_code == 403
    r = await client.get(f"/v1/assignment-policies/{t.units['d1']['id']}", headers=t.auth("d2-rep"))
    assert r.status_code == 404

    for version in (1, 2):
        r = await put_policy(client, t, {"strategy": "load_based", "reps": []})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == version
    r = await client.post(
        f"/v1/assignment-policies/{t.units['d1']['id']}:run", headers=t.auth("d1-manager")
    )
    assert r.status_code == 200
    r = await put_policy(client, t, {"strategy": "manual"})
    r = await client.post(
        f"/v1/assignment-policies/{t.units['d1']['id']}:run", headers=t.auth("d1-manager")
    )
    assert r.status_code == 409
    assert r.json()["reason"] == "ASSIGNMENT_POLICY_MANUAL"


async def test_round_robin_then_load_based_spread_the_pool(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    reps = [{"user_id": uid(t, f"r{i}")} for i in (1, 2, 3)]
    assert (await put_policy(client, t, {"strategy": "round_robin", "reps": reps})).is_success
    lead_ids = [await capture(client, t) for _ in range(6)]
    out = await run(client, t)
    assert out["assigned"] == 6
    assert out["by_assignee"] == {uid(t, f"r{i}"): 2 for i in (1, 2, 3)}
    # In turn, in lead order.
    assert [await holder(client, t, x) for x in lead_ids] == [
        uid(t, f"r{i}") for i in (1, 2, 3)
    ] * 2
    # A run publishes its assignments as one batch event per unit.
    envelope, batch = await wait_for_event(
        leads.settings.nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead_batch.assigned.v1",
        events_pb2.LeadBatchAssigned,
        lambda p: any(x.lead_id == lead_ids[0] for x in p.leads),
    )
    assert [x.lead_id for x in batch.leads] == lead_ids
    assert [x.assignee_id for x in batch.leads] == [uid(t, f"r{i}") for i in (1, 2, 3)] * 2
    assert (batch.strategy, batch.by) == ("round_robin", uid(t, "d1-manager"))
    assert batch.org_unit_id == t.units["d1"]["id"]
    assert envelope.org_path == batch.org_unit_path == t.units["d1"]["path"]

    # r1 gets two more by hand: 4, 2, 2 held; three new leads go to the least loaded.
    extra = [await capture(client, t) for _ in range(2)]
    r = await assign(client, t, extra, uid(t, "r1"))
    assert [x["outcome"] for x in r.json()["results"]] == ["ASSIGNED", "ASSIGNED"]
    assert (await put_policy(client, t, {"strategy": "load_based", "reps": reps})).is_success
    for _ in range(3):
        await capture(client, t)
    out = await run(client, t)
    assert out["by_assignee"] == {uid(t, "r2"): 2, uid(t, "r3"): 1}
    assert (await run(client, t))["assigned"] == 0  # the pool is empty


async def test_skill_matches_product_interest_then_load(
    client: httpx.AsyncClient, t: Tenant
) -> None:
    policy = {
        "strategy": "skill",
        "reps": [
            {"user_id": uid(t, "r1"), "product_lines": ["suv"]},
            {"user_id": uid(t, "r2"), "skills": ["sedan"]},
            {"user_id": uid(t, "r3")},  # a generalist
        ],
    }
    assert (await put_policy(client, t, policy)).is_success
    suv = [await capture(client, t, intent={"product_interest": "suv"}) for _ in range(2)]
    sedan = await capture(client, t, intent={"product_interest": "sedan"})
    truck = await capture(client, t, intent={"product_interest": "truck"})
    out = await run(client, t)
    assert out["assigned"] == 4
    assert [await holder(client, t, x) for x in suv] == [uid(t, "r1")] * 2
    assert await holder(client, t, sedan) == uid(t, "r2")
    assert await holder(client, t, truck) == uid(t, "r3")


async def test_private_pool_cap_is_respected_per_lead(
    client: httpx.AsyncClient, directory: Runtime, dir_client: httpx.AsyncClient, leads: Runtime
) -> None:
    t = await make_tenant(directory)
    ids = {n: await t.add_user(n, "d1", ["rep"], username=f"u-{n}") for n in ("r1", "r2")}
    ids["d1-manager"] = await t.add_user("d1-manager", "d1", ["manager"], username="u-d1-manager")
    t.units["ids"] = ids
    await replicated(leads, *ids.values())
    r = await client.put("/v1/lead-settings", json={"private_pool_cap": 2}, headers=t.auth("admin"))
    assert r.status_code == 200, r.text

    lead_ids = [await capture(client, t) for _ in range(4)]
    r = await assign(client, t, lead_ids[:3], ids["r1"])
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["outcome"] for x in results] == ["ASSIGNED", "ASSIGNED", "FAILED"]
    assert results[2]["error"]["reason"] == "PRIVATE_POOL_FULL"
    assert results[2]["error"]["code"] == 409

    r = await client.post(f"/v1/leads/{lead_ids[3]}:claim", headers=t.auth("r1"))
    assert r.status_code == 409
    assert r.json()["reason"] == "PRIVATE_POOL_FULL"

    # A run gives r2 two and leaves the rest: nobody can take more.
    policy = {"strategy": "round_robin", "reps": [{"user_id": ids["r1"]}, {"user_id": ids["r2"]}]}
    assert (await put_policy(client, t, policy)).is_success
    await capture(client, t)
    out = await run(client, t)
    assert out["by_assignee"] == {ids["r2"]: 2}
    assert out["left_in_pool"] == {"ALL_REPS_FULL": 1}


async def test_manual_assignment_rules_and_reassignment(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    mine = await capture(client, t)
    sibling = await capture(client, t, who="d2-rep")
    r = await assign(client, t, [mine], uid(t, "r1"), who="r2")
    assert r.status_code == 403
    r = await assign(client, t, [mine, sibling, mine], uid(t, "r1"))
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "lead_ids.2"

    r = await assign(client, t, [mine, sibling], uid(t, "d1-manager"))
    assert [x["error"]["reason"] for x in r.json()["results"]] == [
        "ASSIGNEE_NOT_IN_UNIT",
        "LEAD_NOT_FOUND",  # d2's lead: not visible to d1's manager
    ]
    r = await assign(client, t, [mine], uid(t, "r1"))
    assert r.json()["results"][0]["lead"]["assignee_id"] == uid(t, "r1")

    # Reassignment: r1 loses it to r2, and may not claim it back during the cool-down.
    r = await assign(client, t, [mine], uid(t, "r2"))
    assert r.json()["results"][0]["outcome"] == "ASSIGNED"
    assert await holder(client, t, mine) == uid(t, "r2")
    _, payload = await wait_for_event(
        leads.settings.nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead.assigned.v1",
        events_pb2.LeadAssigned,
        lambda p: p.lead.id == mine and p.assignee_id == uid(t, "r2"),
    )
    assert (payload.previous_assignee_id, payload.strategy) == (uid(t, "r1"), "manual")
    r = await client.post(f"/v1/leads/{mine}:release", headers=t.auth("d1-manager"))
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/leads/{mine}:claim", headers=t.auth("r1"))
    assert r.status_code == 409
    assert r.json()["reason"] == "COOLDOWN_ACTIVE"


async def test_cooldown_blocks_reclaim_until_it_ends(
    client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    lead_id = await capture(client, t)
    assert (await client.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("r1"))).is_success
    assert (await client.post(f"/v1/leads/{lead_id}:release", headers=t.auth("r1"))).is_success
    r = await client.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("r1"))
    assert r.status_code == 409
    assert r.json()["reason"] == "COOLDOWN_ACTIVE"
    assert "claimed again from" in r.json()["detail"]
    # Another rep is not cooling down.
    r = await client.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("r2"))
    assert r.status_code == 200, r.text
    assert (await client.post(f"/v1/leads/{lead_id}:release", headers=t.auth("r2"))).is_success

    async with leads.db.unit_of_work() as conn:
        await conn.execute(
            lead_releases.update()
            .where(lead_releases.c.lead_id == uuid.UUID(lead_id))
            .values(release_time=sa.func.now() - timedelta(hours=25))
        )
    r = await client.post(f"/v1/leads/{lead_id}:claim", headers=t.auth("r1"))
    assert r.status_code == 200, r.text


async def test_deactivated_rep_leads_go_back_to_the_pool(
    client: httpx.AsyncClient, dir_client: httpx.AsyncClient, leads: Runtime, t: Tenant
) -> None:
    held = [await capture(client, t) for _ in range(2)]
    r = await assign(client, t, held, uid(t, "r3"))
    assert [x["outcome"] for x in r.json()["results"]] == ["ASSIGNED", "ASSIGNED"]
    r = await dir_client.post(f"/v1/users/{uid(t, 'r3')}:deactivate", headers=t.auth("admin"))
    assert r.status_code == 200, r.text

    for _ in range(200):
        if [await holder(client, t, x) for x in held] == ["", ""]:
            break
        await asyncio.sleep(0.05)
    assert [await holder(client, t, x) for x in held] == ["", ""]
    _, payload = await wait_for_event(
        leads.settings.nats_url,
        leads.settings.nats_namespace,
        "crm.leads.lead.released.v1",
        events_pb2.LeadReleased,
        lambda p: p.lead.id == held[0],
    )
    assert payload.previous_assignee_id == uid(t, "r3")
    # An inactive rep is no assignee any more.
    r = await assign(client, t, held[:1], uid(t, "r3"))
    assert r.json()["results"][0]["error"]["reason"] == "ASSIGNEE_NOT_IN_UNIT"
