"""LeadRoutingService (gRPC) against real PostgreSQL and NATS: manual distribution and the
child's acceptance, a rejection back to the parent, a sibling dealer kept out (NOT_FOUND),
automatic runs, manual assignment with per-item errors, claim/release and the pool's
filtered pages, activities, owner history, and field violations for bad input. Setup goes
through REST with the REST tests' helpers; the calls under test go through gRPC."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conftest import Tenant, http_client, make_tenant
from crm.leads.v1 import events_pb2, routing_service_pb2_grpc
from crm.leads.v1 import routing_service_pb2 as pb
from crm_leads.orgtree import service as orgtree
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_handled
from crm_platform.testing.harness import eventually
from services.leads.tests.test_acceptance import capture, owner, spread_rules, unit
from services.leads.tests.test_assignment import put_policy, replicated


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


@pytest.fixture
async def stub(leads: Runtime) -> AsyncIterator[routing_service_pb2_grpc.LeadRoutingServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{leads.grpc_port}") as channel:
        yield routing_service_pb2_grpc.LeadRoutingServiceStub(channel)


@pytest.fixture
async def t(leads: Runtime, directory: Runtime) -> Tenant:
    """A fresh tenant (HQ → east → d1, d2) with managers at east, d1 and d2 and a rep r1 in
    d1, the org tree and the users replicated to leads."""
    tenant = await make_tenant(directory)
    for name, at in (("east-manager", "east"), ("d1-manager", "d1"), ("d2-manager", "d2")):
        await tenant.add_user(name, at, ["manager"])
    r1 = await tenant.add_user("r1", "d1", ["rep"], username="u-r1")
    tenant.units["ids"] = {"r1": r1}

    async def tree() -> None:
        async with leads.db.read() as conn:
            rows = await orgtree.subtree(conn=conn, unit_id=unit(tenant, "hq"))
        assert {r.code for r in rows} == {tenant.slug, "east", "d1", "d2"}

    await eventually(tree)
    await replicated(leads, r1)
    return tenant


def md(t: Tenant, who: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {t.tokens[who]}"),)


async def failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


def violations(err: grpc.aio.AioRpcError) -> list[str]:
    """The fields of the status's BadRequest detail."""
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    return [v.field for v in bad.field_violations]


def reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status.details)
    return info.reason


Stub = routing_service_pb2_grpc.LeadRoutingServiceStub


async def distribute(
    stub: Stub, t: Tenant, lead_ids: list[str], to: str
) -> pb.DistributeLeadsResponse:
    request = pb.DistributeLeadsRequest(lead_ids=lead_ids, target_org_unit_id=str(unit(t, to)))
    return await stub.DistributeLeads(request, metadata=md(t, "east-manager"))


async def test_distribution_to_a_child_then_the_child_accepts(
    client: httpx.AsyncClient, leads: Runtime, stub: Stub, t: Tenant
) -> None:
    lead = await capture(client, t, "east-manager")
    # Reps do not distribute: refused before the request is looked at.
    err = await failure(
        stub.DistributeLeads(
            pb.DistributeLeadsRequest(lead_ids=[lead], target_org_unit_id="x"),
            metadata=md(t, "d1-rep"),
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED

    missing = str(uuid.uuid4())
    out = await distribute(stub, t, [lead, missing], "d1")
    done, failed = out.results
    assert (done.index, done.lead_id, done.outcome) == (0, lead, pb.DISTRIBUTE_OUTCOME_DISTRIBUTED)
    assert done.lead.owner_org_id == str(unit(t, "d1"))
    assert (failed.index, failed.outcome) == (1, pb.DISTRIBUTE_OUTCOME_FAILED)
    assert not failed.HasField("lead")
    assert (failed.error.status, failed.error.reason) == (404, "LEAD_NOT_FOUND")

    # A sibling dealer cannot see it: NOT_FOUND, not PERMISSION_DENIED.
    for who in ("d2-manager", "d2-rep"):
        err = await failure(
            stub.AcceptLead(pb.AcceptLeadRequest(lead_id=lead), metadata=md(t, who))
        )
        assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await failure(
        stub.AcceptLead(pb.AcceptLeadRequest(lead_id=lead), metadata=md(t, "d1-rep"))
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED

    accepted = await stub.AcceptLead(
        pb.AcceptLeadRequest(lead_id=lead), metadata=md(t, "d1-manager")
    )
    assert accepted.lead.id == lead and accepted.lead.owner_org_id == str(unit(t, "d1"))
    assert accepted.sla.grade and accepted.sla.HasField("first_contact_due")
    err = await failure(
        stub.AcceptLead(pb.AcceptLeadRequest(lead_id=lead), metadata=md(t, "d1-manager"))
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(err) == "LEAD_NOT_PENDING_ACCEPTANCE"

    history = await stub.GetLeadOwnerHistory(
        pb.GetLeadOwnerHistoryRequest(lead_id=lead), metadata=md(t, "d1-manager")
    )
    assert [(m.reason, m.from_org_id, m.to_org_id) for m in history.moves] == [
        ("manual", str(unit(t, "east")), str(unit(t, "d1")))
    ]
    assert history.moves[0].actor and history.moves[0].HasField("occur_time")
    err = await failure(
        stub.GetLeadOwnerHistory(
            pb.GetLeadOwnerHistoryRequest(lead_id=lead), metadata=md(t, "d2-rep")
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_rejection_returns_the_lead_to_the_parent(
    client: httpx.AsyncClient, leads: Runtime, stub: Stub, t: Tenant
) -> None:
    lead = await capture(client, t, "east-manager")
    await distribute(stub, t, [lead], "d1")
    reject = pb.RejectLeadRequest(lead_id=lead, reason_code="OUT_OF_TERRITORY", note="Suzhou")

    err = await failure(stub.RejectLead(reject, metadata=md(t, "d2-manager")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await failure(
        stub.RejectLead(pb.RejectLeadRequest(lead_id=lead), metadata=md(t, "d1-manager"))
    )
    assert violations(err) == ["reason_code"]

    out = await stub.RejectLead(reject, metadata=md(t, "d1-manager"))
    assert (out.lead_id, out.reason_code) == (lead, "OUT_OF_TERRITORY")
    assert out.rejected_by_org_id == str(unit(t, "d1"))
    assert out.returned_to_org_id == str(unit(t, "east"))
    assert await owner(leads, lead) == unit(t, "east")
    # The rejecting unit no longer sees it.
    err = await failure(
        stub.GetLeadOwnerHistory(
            pb.GetLeadOwnerHistoryRequest(lead_id=lead), metadata=md(t, "d1-manager")
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_run_distribution_counts_per_target(
    client: httpx.AsyncClient, leads: Runtime, stub: Stub, t: Tenant
) -> None:
    ids = [await capture(client, t, "east-manager") for _ in range(4)]
    # The automatic distribution of new leads has seen them (no rules then): rules put in
    # place while their events are still in flight would distribute some of them first.
    await wait_handled(leads, leads, [("leads-distribute-created", "crm.leads.lead.created.v1")])
    run = pb.RunDistributionRequest(org_unit_id=str(unit(t, "east")))
    err = await failure(stub.RunDistribution(run, metadata=md(t, "east-manager")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # no rules yet
    await spread_rules(client, t)
    out = await stub.RunDistribution(run, metadata=md(t, "east-manager"))
    assert (out.distributed, out.unmatched) == (4, 0)
    assert set(out.by_target) <= {str(unit(t, "d1")), str(unit(t, "d2"))}
    assert sum(out.by_target.values()) == 4
    assert {await owner(leads, x) for x in ids} <= {unit(t, "d1"), unit(t, "d2")}


async def test_manual_assignment_reports_each_lead(
    client: httpx.AsyncClient, stub: Stub, t: Tenant
) -> None:
    r1 = t.units["ids"]["r1"]
    mine = await capture(client, t, "d1-rep")
    other = await capture(client, t, "d2-rep")
    # The d2 lead is invisible to d1's manager: LEAD_NOT_FOUND, the d1 lead still assigned.
    out = await stub.AssignLeads(
        pb.AssignLeadsRequest(lead_ids=[mine, other], assignee_id=r1), metadata=md(t, "d1-manager")
    )
    first, second = out.results
    assert (first.outcome, first.lead.assignee_id) == (pb.ASSIGN_OUTCOME_ASSIGNED, r1)
    assert (second.index, second.lead_id, second.outcome) == (1, other, pb.ASSIGN_OUTCOME_FAILED)
    assert second.error.reason == "LEAD_NOT_FOUND" and not second.HasField("lead")
    # An administrator sees the d2 lead, but r1 is not a rep of its unit.
    out = await stub.AssignLeads(
        pb.AssignLeadsRequest(lead_ids=[other], assignee_id=r1), metadata=md(t, "admin")
    )
    assert out.results[0].error.reason == "ASSIGNEE_NOT_IN_UNIT"
    assert out.results[0].error.status == 409

    err = await failure(
        stub.AssignLeads(
            pb.AssignLeadsRequest(lead_ids=[mine, "x", mine], assignee_id=r1),
            metadata=md(t, "d1-manager"),
        )
    )
    assert violations(err) == ["lead_ids.1", "lead_ids.2"]
    err = await failure(
        stub.AssignLeads(pb.AssignLeadsRequest(assignee_id=r1), metadata=md(t, "d1-manager"))
    )
    assert violations(err) == ["lead_ids"]
    err = await failure(
        stub.AssignLeads(
            pb.AssignLeadsRequest(lead_ids=[mine], assignee_id=r1), metadata=md(t, "r1")
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED

    # An automatic run by the unit's policy.
    pooled = await capture(client, t, "d1-rep")
    run = pb.RunAssignmentRequest(org_unit_id=str(unit(t, "d1")))
    err = await failure(stub.RunAssignment(run, metadata=md(t, "d1-manager")))
    assert reason(err) == "ASSIGNMENT_POLICY_MANUAL"
    r = await put_policy(client, t, {"strategy": "round_robin", "reps": [{"user_id": r1}]})
    assert r.status_code == 200, r.text
    out_run = await stub.RunAssignment(run, metadata=md(t, "d1-manager"))
    assert out_run.assigned == 1 and dict(out_run.by_assignee) == {r1: 1}
    r = await client.get(f"/v1/leads/{pooled}", headers=t.auth("admin"))
    assert r.json()["assignee_id"] == r1


async def test_claim_release_and_the_filtered_pool(
    client: httpx.AsyncClient, stub: Stub, t: Tenant
) -> None:
    web = [await capture(client, t, "d1-rep", source="web") for _ in range(3)]
    await capture(client, t, "d1-rep", source="expo")
    rep = md(t, "d1-rep")

    first = await stub.ListPoolLeads(
        pb.ListPoolLeadsRequest(source="web", page_size=2), metadata=rep
    )
    assert len(first.leads) == 2 and first.next_page_token
    second = await stub.ListPoolLeads(
        pb.ListPoolLeadsRequest(source="web", page_size=2, page_token=first.next_page_token),
        metadata=rep,
    )
    assert len(second.leads) == 1 and not second.next_page_token
    # Newest first, every web lead exactly once, the expo lead filtered out.
    assert [x.id for x in (*first.leads, *second.leads)] == web[::-1]
    # A token is bound to its filter.
    err = await failure(
        stub.ListPoolLeads(
            pb.ListPoolLeadsRequest(source="expo", page_token=first.next_page_token), metadata=rep
        )
    )
    assert violations(err) == ["page_token"]

    claimed = await stub.ClaimLead(pb.ClaimLeadRequest(lead_id=web[0]), metadata=rep)
    assert claimed.id == web[0] and claimed.assignee_id
    err = await failure(stub.ClaimLead(pb.ClaimLeadRequest(lead_id=web[0]), metadata=md(t, "r1")))
    assert reason(err) == "LEAD_NOT_IN_POOL"
    mine = await stub.ListMyLeads(pb.ListMyLeadsRequest(), metadata=rep)
    assert [x.id for x in mine.leads] == [web[0]]
    pool = await stub.ListPoolLeads(pb.ListPoolLeadsRequest(source=" web "), metadata=rep)
    assert web[0] not in [x.id for x in pool.leads] and len(pool.leads) == 2

    released = await stub.ReleaseLead(pb.ReleaseLeadRequest(lead_id=web[0]), metadata=rep)
    assert released.id == web[0] and not released.assignee_id
    assert not (await stub.ListMyLeads(pb.ListMyLeadsRequest(), metadata=rep)).leads
    err = await failure(stub.ReleaseLead(pb.ReleaseLeadRequest(lead_id=web[0]), metadata=rep))
    assert reason(err) == "LEAD_NOT_CLAIMED"
    # A sibling dealer's rep cannot touch it.
    err = await failure(
        stub.ClaimLead(pb.ClaimLeadRequest(lead_id=web[0]), metadata=md(t, "d2-rep"))
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_activities_are_logged_and_listed(
    client: httpx.AsyncClient, stub: Stub, t: Tenant
) -> None:
    lead = await capture(client, t, "d1-rep")
    rep = md(t, "d1-rep")
    await stub.ClaimLead(pb.ClaimLeadRequest(lead_id=lead), metadata=rep)
    call = pb.LeadActivity(kind=events_pb2.LEAD_ACTIVITY_KIND_CALL, note="no answer")
    first = await stub.CreateLeadActivity(
        pb.CreateLeadActivityRequest(lead_id=lead, activity=call), metadata=rep
    )
    assert (first.lead_id, first.kind, first.note) == (lead, call.kind, "no answer")
    assert first.id and first.actor and first.HasField("occur_time")
    note = pb.LeadActivity(kind=events_pb2.LEAD_ACTIVITY_KIND_NOTE, note="escalate")
    second = await stub.CreateLeadActivity(
        pb.CreateLeadActivityRequest(lead_id=lead, activity=note), metadata=rep
    )

    page = await stub.ListLeadActivities(
        pb.ListLeadActivitiesRequest(lead_id=lead, page_size=1), metadata=rep
    )
    assert [x.id for x in page.activities] == [second.id] and page.next_page_token
    rest = await stub.ListLeadActivities(
        pb.ListLeadActivitiesRequest(lead_id=lead, page_size=1, page_token=page.next_page_token),
        metadata=rep,
    )
    assert [x.id for x in rest.activities] == [first.id] and not rest.next_page_token

    # Another unit's rep: not found; a missing kind or a future time: field violations.
    err = await failure(
        stub.CreateLeadActivity(
            pb.CreateLeadActivityRequest(lead_id=lead, activity=call), metadata=md(t, "d2-rep")
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await failure(
        stub.CreateLeadActivity(
            pb.CreateLeadActivityRequest(lead_id=lead, activity=pb.LeadActivity(note="?")),
            metadata=rep,
        )
    )
    assert violations(err) == ["kind"]
    future = pb.LeadActivity(kind=events_pb2.LEAD_ACTIVITY_KIND_CALL)
    future.occur_time.GetCurrentTime()
    future.occur_time.seconds += 3600
    err = await failure(
        stub.CreateLeadActivity(
            pb.CreateLeadActivityRequest(lead_id=lead, activity=future), metadata=rep
        )
    )
    assert violations(err) == ["occur_time"]


async def test_bad_input_is_invalid_argument_with_field_violations(stub: Stub, t: Tenant) -> None:
    mgr = md(t, "d1-manager")
    err = await failure(stub.AcceptLead(pb.AcceptLeadRequest(lead_id="not-a-uuid"), metadata=mgr))
    assert violations(err) == ["lead_id"]
    err = await failure(
        stub.RejectLead(
            pb.RejectLeadRequest(lead_id=str(uuid.uuid4()), reason_code="BORED"), metadata=mgr
        )
    )
    assert violations(err) == ["reason_code"]
    err = await failure(
        stub.DistributeLeads(
            pb.DistributeLeadsRequest(lead_ids=["x"], target_org_unit_id=str(unit(t, "d1"))),
            metadata=md(t, "east-manager"),
        )
    )
    assert violations(err) == ["lead_ids.0"]
    err = await failure(
        stub.ListPoolLeads(
            pb.ListPoolLeadsRequest(grades=["a", "Z"], min_age_days=-1), metadata=mgr
        )
    )
    assert violations(err) == ["min_age_days"]
    err = await failure(
        stub.ListPoolLeads(pb.ListPoolLeadsRequest(grades=["a", "Z"]), metadata=mgr)
    )
    assert violations(err) == ["grades"]
    err = await failure(stub.ListMyLeads(pb.ListMyLeadsRequest(page_token="junk"), metadata=mgr))
    assert violations(err) == ["page_token"]
    err = await failure(stub.RunAssignment(pb.RunAssignmentRequest(org_unit_id="d1"), metadata=mgr))
    assert violations(err) == ["org_unit_id"]
    # Without credentials nothing is looked at.
    err = await failure(stub.ListMyLeads(pb.ListMyLeadsRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
