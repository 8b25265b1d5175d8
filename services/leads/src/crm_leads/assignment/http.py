"""Public REST adapter for assignment: the units' assignment policies, automatic runs over a
unit's pool or a whole subtree's pools, and manual (re)assignment."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import Field

from crm_leads.assignment import service
from crm_leads.assignment.rules import document_json, parse_policy
from crm_leads.distribution.store import visible_unit
from crm_leads.lead.mapping import lead_to_proto
from crm_platform.auth import Principal
from crm_platform.http import ApiModel, CurrentPrincipal, IdText, proto_json
from crm_platform.ids import parse_id, parse_ids
from crm_platform.protos import timestamp
from crm_platform.runtime import Runtime

Json = dict[str, Any]
Document = Annotated[dict[str, Any], Body()]


class AssignIn(ApiModel):
    lead_ids: list[IdText] = Field(min_length=1, max_length=service.MAX_MANUAL)
    assignee_id: IdText


async def _manager(principal: CurrentPrincipal) -> Principal:
    # A dependency, so a rep gets 403 before the body is validated; which units a manager
    # may assign in is checked against the tree (and the leads' visibility).
    principal.require_any(service.EDITOR_ROLES)
    return principal


Manager = Annotated[Principal, Depends(_manager)]


def _time(value: datetime | None) -> str | None:
    return None if value is None else timestamp(value).ToJsonString()


def policy_out(unit_id: str, current: service.StoredPolicy) -> Json:
    out: Json = {
        "org_unit_id": unit_id,
        "version": current.version,
        "policy": document_json(current.policy),
    }
    if current.create_time is not None:
        out["author"] = current.author
        out["create_time"] = _time(current.create_time)
    return out


def _result_json(result: service.AssignResult) -> Json:
    if result.error is None:
        return {
            "index": result.index,
            "lead_id": result.lead_id,
            "outcome": "ASSIGNED",
            "lead": proto_json(lead_to_proto(result.lead)),
        }
    error = result.error
    return {
        "index": result.index,
        "lead_id": result.lead_id,
        "outcome": "FAILED",
        "error": {"code": error.http_status, "reason": error.reason, "message": error.message},
    }


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(tags=["assignment"])
    policies = "/v1/assignment-policies/{unit_id}"

    @r.get(policies)
    async def get_assignment_policy(unit_id: str, principal: CurrentPrincipal) -> Json:
        """The unit's current assignment policy (version 0, strategy manual: none stored)."""
        uid = parse_id(unit_id, "unit_id")
        async with rt.db.read() as conn:
            unit = await visible_unit(conn=conn, principal=principal, unit_id=uid)
            current = await service.get_policy(conn=conn, unit=unit)
        return policy_out(str(uid), current)

    @r.put(policies)
    async def put_assignment_policy(unit_id: str, body: Document, principal: Manager) -> Json:
        """Replace the unit's policy (administrators, managers of the unit): strategy
        `round_robin`, `load_based`, `skill` or `manual`, and its reps (active reps of the
        unit) with skills, product lines and weights. Stored as the next version."""
        uid = parse_id(unit_id, "unit_id")
        policy = parse_policy(body)
        async with rt.db.unit_of_work() as conn:
            unit = await visible_unit(conn=conn, principal=principal, unit_id=uid)
            current = await service.put_policy(
                conn=conn, principal=principal, unit=unit, policy=policy
            )
        return policy_out(str(uid), current)

    @r.post(policies + ":run")
    async def run_assignment(unit_id: str, principal: Manager) -> Json:
        """Assign the unit's pool (open leads it owns that nobody holds) by its policy, never
        past a rep's private pool cap. Counts of leads assigned, left (by reason) and given
        to each rep. A manual policy is 409 `ASSIGNMENT_POLICY_MANUAL`."""
        uid = parse_id(unit_id, "unit_id")
        return (await service.run(rt.db, principal=principal, unit_id=uid)).json()

    @r.post(policies + ":runSubtree")
    async def run_subtree_assignment(unit_id: str, principal: Manager) -> Json:
        """`:run` for every unit of the subtree rooted at the unit (itself included) that
        has an automatic policy, in one call and set-based across units (administrators,
        managers of the unit). Totals, then per unit (by path) the leads assigned and left
        by reason; `skipped_units` names each unit without an automatic policy
        (`ASSIGNMENT_POLICY_MISSING`, `ASSIGNMENT_POLICY_MANUAL`), whose leads are never
        touched."""
        uid = parse_id(unit_id, "unit_id")
        return (await service.run_subtree(rt.db, principal=principal, unit_id=uid)).json()

    @r.post("/v1/leads:assign", tags=["leads"])
    async def assign_leads(body: AssignIn, principal: Manager) -> Json:
        """Manual assignment or reassignment: up to 1,000 visible leads to one active rep of
        their owner unit. One result per lead, in order: `ASSIGNED` with the lead, or
        `FAILED` with the reason (`LEAD_NOT_FOUND`, `LEAD_NOT_OPEN`, `ASSIGNEE_NOT_IN_UNIT`,
        `PRIVATE_POOL_FULL`); a failed lead never blocks the others."""
        ids = parse_ids(body.lead_ids, "lead_ids")
        assignee = parse_id(body.assignee_id, "assignee_id")
        async with rt.db.unit_of_work() as conn:
            results = await service.assign_manually(
                conn=conn, principal=principal, lead_ids=ids, assignee_id=assignee
            )
        return {"results": [_result_json(x) for x in results]}

    return r
