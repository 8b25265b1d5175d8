"""Subtree assignment runs (``:runSubtree``, gRPC ``RunSubtreeAssignment``) against real
PostgreSQL and NATS: the pools of several dealers under a region in one call, each by its own
policy and under the private-pool cap, with the same outcome as per-unit ``:run`` calls;
units without an automatic policy skipped and reported; the caller's subtree as the limit;
concurrent subtree and single-unit runs never giving a lead twice; the SLA clock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa

from conftest import Tenant, http_client, make_tenant
from crm.leads.v1 import events_pb2, routing_service_pb2_grpc
from crm.leads.v1 import routing_service_pb2 as pb
from crm_leads.lead.models import leads as leads_table
from crm_leads.orgtree import service as orgtree
from crm_leads.sla.models import lead_sla
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event
from crm_platform.testing.harness import eventually
from services.leads.tests.test_assignment import capture, replicated
from services.leads.tests.test_routing_grpc import failure, md, violations

CAP = 3
USERS = (
    ("r1", "d1", "rep"),
    ("r2", "d1", "rep"),
    ("s1", "d2", "rep"),
    ("s2", "d2", "rep"),
    ("east-manager", "east", "manager"),
    ("d1-manager", "d1", "manager"),
)


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


def unit(t: Tenant, name: str) -> str:
    return t.units[name]["id"]


def uid(t: Tenant, who: str) -> str:
    return t.units["ids"][who]


async def world(leads: Runtime, directory: Runtime, c: httpx.AsyncClient) -> Tenant:
    """A tenant (HQ → east → d1, d2) with reps r1, r2 in d1 and s1, s2 in d2, managers of
    east and d1, a private-pool cap of 3, the tree and users replicated."""
    t = await make_tenant(directory)
    ids = {n: await t.add_user(n, at, [role], username=f"u-{n}") for n, at, role in USERS}
    t.units["ids"] = ids

    async def tree() -> None:
        async with leads.db.read() as conn:
            rows = await orgtree.subtree(conn=conn, unit_id=uuid.UUID(unit(t, "hq")))
        assert {r.code for r in rows} == {t.slug, "east", "d1", "d2"}

    await eventually(tree)
    await replicated(leads, *ids.values())
    r = await c.put("/v1/lead-settings", json={"private_pool_cap": CAP}, headers=t.auth("admin"))
    assert r.status_code == 200, r.text
    return t


async def put_policy(c: httpx.AsyncClient, t: Tenant, at: str, policy: dict[str, Any]) -> None:
    r = await c.put(f"/v1/assignment-policies/{unit(t, at)}", json=policy, headers=t.auth("admin"))
    assert r.status_code == 200, r.text


async def policies(c: httpx.AsyncClient, t: Tenant) -> None:
    """d1: weighted round robin; d2: skill, no generalist (a truck lead matches nobody)."""
    await put_policy(
        c,
        t,
        "d1",
        {
            "strategy": "round_robin",
            "reps": [{"user_id": uid(t, "r1"), "weight": 2}, {"user_id": uid(t, "r2")}],
        },
    )
    await put_policy(
        c,
        t,
        "d2",
        {
            "strategy": "skill",
            "reps": [
                {"user_id": uid(t, "s1"), "product_lines": ["suv"]},
                {"user_id": uid(t, "s2"), "skills": ["sedan"]},
            ],
        },
    )


async def pools(c: httpx.AsyncClient, t: Tenant) -> dict[str, list[str]]:
    """Leads each unit collected itself (so each is in that unit's pool), in capture order."""
    d2 = ["suv"] * 4 + ["sedan"] * 2 + ["truck"]
    return {
        "d1": [await capture(c, t, "d1-rep") for _ in range(8)],
        "d2": [await capture(c, t, "d2-rep", intent={"product_interest": p}) for p in d2],
        "east": [await capture(c, t, "east-manager")],
        "hq": [await capture(c, t, "hq-manager")],
    }


async def holders(leads: Runtime, t: Tenant, lead_ids: list[str]) -> list[str]:
    """Who holds each lead, by name ("" for nobody)."""
    names = {v: k for k, v in t.units["ids"].items()}
    async with leads.db.read() as conn:
        rows = await conn.execute(
            sa.select(leads_table.c.id, leads_table.c.assignee_id).where(
                leads_table.c.id.in_([uuid.UUID(x) for x in lead_ids])
            )
        )
        held = {str(r.id): "" if r.assignee_id is None else str(r.assignee_id) for r in rows}
    return [names.get(held[x], held[x]) for x in lead_ids]


async def run_subtree(
    c: httpx.AsyncClient, t: Tenant, at: str, who: str = "east-manager"
) -> httpx.Response:
    return await c.post(f"/v1/assignment-policies/{unit(t, at)}:runSubtree", headers=t.auth(who))


async def test_subtree_run_equals_per_unit_runs(
    client: httpx.AsyncClient, leads: Runtime, directory: Runtime
) -> None:
    # Two identical tenants: per-unit runs in one, a subtree run in the other.
    a = await world(leads, directory, client)
    b = await world(leads, directory, client)
    for t in (a, b):
        await policies(client, t)
    lead_a, lead_b = await pools(client, a), await pools(client, b)

    singles = {}
    for at in ("d1", "d2"):
        r = await client.post(
            f"/v1/assignment-policies/{unit(a, at)}:run", headers=a.auth("east-manager")
        )
        assert r.status_code == 200, r.text
        singles[at] = r.json()
    r = await run_subtree(client, b, "east")
    assert r.status_code == 200, r.text
    out = r.json()

    # Each dealer by its own policy, under the cap, exactly as its own run decided.
    assert out["units"] == [
        {
            "org_unit_id": unit(b, at),
            "assigned": singles[at]["assigned"],
            "left_in_pool": singles[at]["left_in_pool"],
        }
        for at in ("d1", "d2")
    ]
    assert out["skipped_units"] == [
        {"org_unit_id": unit(b, "east"), "reason": "ASSIGNMENT_POLICY_MISSING"}
    ]
    assert out["assigned"] == 6 + 5
    assert out["left_in_pool"] == {"ALL_REPS_FULL": 2 + 1, "NO_MATCHING_REP": 1}
    for at in ("d1", "d2", "east", "hq"):
        assert await holders(leads, b, lead_b[at]) == await holders(leads, a, lead_a[at]), at
    assert await holders(leads, b, lead_b["d2"]) == ["s1"] * 3 + ["", "s2", "s2", ""]
    assert await holders(leads, b, lead_b["east"] + lead_b["hq"]) == ["", ""]

    # One batch event per unit, each with the unit's own strategy and path (no sibling
    # sees another's); the clocks start as with :run.
    for at, strategy in (("d1", "round_robin"), ("d2", "skill")):
        envelope, batch = await wait_for_event(
            leads.settings.nats_url,
            leads.settings.nats_namespace,
            "crm.leads.lead_batch.assigned.v1",
            events_pb2.LeadBatchAssigned,
            lambda p, at=at: p.org_unit_id == unit(b, at),
        )
        assert (batch.strategy, batch.by) == (strategy, b.units["ids"]["east-manager"])
        assert envelope.org_path == batch.org_unit_path == b.units[at]["path"]
        held = await holders(leads, b, lead_b[at])
        assert {x.lead_id: x.assignee_id for x in batch.leads} == {
            lead: b.units["ids"][who] for lead, who in zip(lead_b[at], held, strict=True) if who
        }
    given = [x for at in ("d1", "d2") for x in lead_b[at]]
    async with leads.db.read() as conn:
        clocks = {
            str(r.lead_id): str(r.org_unit_id)
            for r in await conn.execute(
                sa.select(lead_sla.c.lead_id, lead_sla.c.org_unit_id).where(
                    lead_sla.c.lead_id.in_([uuid.UUID(x) for x in given])
                )
            )
        }
    expected = {
        x: unit(b, at)
        for at in ("d1", "d2")
        for x, who in zip(lead_b[at], await holders(leads, b, lead_b[at]), strict=True)
        if who
    }
    assert clocks == expected

    # Nothing left that anyone can take: a second run assigns nothing.
    again = (await run_subtree(client, b, "east")).json()
    assert again["assigned"] == 0


async def test_units_without_an_automatic_policy_are_skipped_and_untouched(
    client: httpx.AsyncClient, leads: Runtime, directory: Runtime
) -> None:
    t = await world(leads, directory, client)
    await policies(client, t)
    await put_policy(client, t, "d2", {"strategy": "manual"})
    lead_ids = await pools(client, t)
    r = await run_subtree(client, t, "east")
    assert r.status_code == 200, r.text
    out = r.json()
    assert [u["org_unit_id"] for u in out["units"]] == [unit(t, "d1")]
    assert out["skipped_units"] == [
        {"org_unit_id": unit(t, "east"), "reason": "ASSIGNMENT_POLICY_MISSING"},
        {"org_unit_id": unit(t, "d2"), "reason": "ASSIGNMENT_POLICY_MANUAL"},
    ]
    assert out["assigned"] == 6
    assert await holders(leads, t, lead_ids["d2"] + lead_ids["east"]) == [""] * 8

    # A subtree with no automatic policy at all: nothing to do, everything reported.
    r = await run_subtree(client, t, "d2")
    assert r.json() == {
        "assigned": 0,
        "left_in_pool": {},
        "units": [],
        "skipped_units": [{"org_unit_id": unit(t, "d2"), "reason": "ASSIGNMENT_POLICY_MANUAL"}],
    }


async def test_only_managers_of_the_root_run_it_and_siblings_are_untouched(
    client: httpx.AsyncClient, leads: Runtime, directory: Runtime
) -> None:
    t = await world(leads, directory, client)
    await policies(client, t)
    lead_ids = await pools(client, t)
    # As :run: a unit outside the caller's subtree does not exist for them (404, nothing
    # leaks); a rep is no manager (403, before anything is read).
    r = await run_subtree(client, t, "east", who="d1-manager")
    assert r.status_code == 404
    assert r.json()["reason"] == "ORG_UNIT_NOT_FOUND"
    r = await run_subtree(client, t, "d1", who="r1")
    assert r.status_code == 403
    r = await client.post(
        "/v1/assignment-policies/not-a-uuid:runSubtree", headers=t.auth("east-manager")
    )
    assert r.status_code == 422
    assert await holders(leads, t, [x for v in lead_ids.values() for x in v]) == [""] * 17

    r = await run_subtree(client, t, "d1", who="d1-manager")
    assert r.status_code == 200, r.text
    assert [u["org_unit_id"] for u in r.json()["units"]] == [unit(t, "d1")]
    assert r.json()["assigned"] == 6
    # The sibling dealer's and the parent's pools: not touched.
    assert await holders(leads, t, lead_ids["d2"] + lead_ids["east"]) == [""] * 8


async def test_concurrent_subtree_and_unit_runs_never_give_a_lead_twice(
    client: httpx.AsyncClient, leads: Runtime, directory: Runtime
) -> None:
    t = await world(leads, directory, client)
    await policies(client, t)
    lead_ids = await pools(client, t)
    d1 = f"/v1/assignment-policies/{unit(t, 'd1')}:run"
    runs = [
        run_subtree(client, t, "east"),
        client.post(d1, headers=t.auth("d1-manager")),
        run_subtree(client, t, "hq", who="hq-manager"),
        client.post(d1, headers=t.auth("east-manager")),
        run_subtree(client, t, "d1", who="d1-manager"),
    ]
    # Reps claiming their unit's leads meanwhile: they take the same holder and lead locks.
    claims = [
        client.post(f"/v1/leads/{lead}:claim", headers=t.auth(rep))
        for lead, rep in zip(lead_ids["d1"][-4:], ("r1", "r2", "r2", "r1"), strict=True)
    ]
    answers = await asyncio.gather(*runs, *claims)
    ran, claimed = answers[: len(runs)], answers[len(runs) :]
    assert all(r.status_code == 200 for r in ran), [r.text for r in ran]
    # A claim loses to a run (already held) or finds its rep full; never a deadlock or 500.
    assert {r.status_code for r in claimed} <= {200, 409}, [r.text for r in claimed]
    reported = sum(int(r.json()["assigned"]) for r in ran)
    reported += sum(1 for r in claimed if r.status_code == 200)

    async with leads.db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    leads_table.c.assignee_id, leads_table.c.version, leads_table.c.owner_org_id
                ).where(leads_table.c.id.in_([uuid.UUID(x) for v in lead_ids.values() for x in v]))
            )
        ).all()
    held = [r for r in rows if r.assignee_id is not None]
    # Every assignment reported is one lead given once (one UPDATE: version 1 → 2).
    assert reported == len(held) == 6 + 5
    assert {r.version for r in held} == {2}
    per_rep: dict[uuid.UUID, int] = {}
    for r in held:
        per_rep[r.assignee_id] = per_rep.get(r.assignee_id, 0) + 1
    assert max(per_rep.values()) <= CAP
    reps_of = {"d1": ("r1", "r2"), "d2": ("s1", "s2")}
    for r in held:
        at = "d1" if str(r.owner_org_id) == unit(t, "d1") else "d2"
        assert str(r.assignee_id) in {uid(t, n) for n in reps_of[at]}


@pytest.fixture
async def stub(leads: Runtime) -> AsyncIterator[routing_service_pb2_grpc.LeadRoutingServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{leads.grpc_port}") as channel:
        yield routing_service_pb2_grpc.LeadRoutingServiceStub(channel)


async def test_grpc_run_subtree_assignment(
    client: httpx.AsyncClient,
    leads: Runtime,
    directory: Runtime,
    stub: routing_service_pb2_grpc.LeadRoutingServiceStub,
) -> None:
    t = await world(leads, directory, client)
    await policies(client, t)
    lead_ids = await pools(client, t)

    err = await failure(
        stub.RunSubtreeAssignment(
            pb.RunSubtreeAssignmentRequest(org_unit_id="nope"), metadata=md(t, "east-manager")
        )
    )
    assert violations(err) == ["org_unit_id"]
    east = pb.RunSubtreeAssignmentRequest(org_unit_id=unit(t, "east"))
    err = await failure(stub.RunSubtreeAssignment(east, metadata=md(t, "d1-manager")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await failure(stub.RunSubtreeAssignment(east, metadata=md(t, "r1")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED

    out = await stub.RunSubtreeAssignment(east, metadata=md(t, "east-manager"))
    assert out.assigned == 11
    assert dict(out.left_in_pool) == {"ALL_REPS_FULL": 3, "NO_MATCHING_REP": 1}
    assert [(u.org_unit_id, u.assigned) for u in out.units] == [
        (unit(t, "d1"), 6),
        (unit(t, "d2"), 5),
    ]
    assert dict(out.units[1].left_in_pool) == {"ALL_REPS_FULL": 1, "NO_MATCHING_REP": 1}
    assert [(s.org_unit_id, s.reason) for s in out.skipped_units] == [
        (unit(t, "east"), "ASSIGNMENT_POLICY_MISSING")
    ]
    assert await holders(leads, t, lead_ids["d2"]) == ["s1"] * 3 + ["", "s2", "s2", ""]
