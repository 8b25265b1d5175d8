"""Public REST adapter for acceptance: the receiving unit accepts or rejects a lead."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from crm_leads.acceptance import flows, service
from crm_leads.acceptance.rules import RejectIn
from crm_leads.lead.mapping import lead_to_proto
from crm_leads.sla.http import clock_json
from crm_platform.http import CurrentPrincipal, proto_json
from crm_platform.ids import parse_id
from crm_platform.runtime import Runtime

Json = dict[str, Any]


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1/leads", tags=["acceptance"])

    @r.post("/{lead_id}:accept")
    async def accept_lead(lead_id: str, principal: CurrentPrincipal) -> Json:
        """Accept a lead distributed to the caller's unit before its deadline (managers of
        that unit, administrators): its follow-up SLA starts. Publishes
        `crm.leads.lead.accepted.v1`. 409 `LEAD_NOT_PENDING_ACCEPTANCE` or
        `ACCEPTANCE_DEADLINE_PASSED`; 403 for reps and other units' managers."""
        async with rt.db.unit_of_work() as conn:
            lead, clock = await service.accept(
                conn=conn,
                principal=principal,
                lead_id=parse_id(lead_id, "lead_id"),
                now=datetime.now(UTC),
            )
        return {"lead": proto_json(lead_to_proto(lead)), "sla": clock_json(clock)}

    @r.post("/{lead_id}:reject")
    async def reject_lead(lead_id: str, body: RejectIn, principal: CurrentPrincipal) -> Json:
        """Reject a lead distributed to the caller's unit, with a reason code: it goes back to
        the parent unit's pool and is redistributed there, never to this unit again.
        Publishes `crm.leads.lead.rejected.v1`. The answer does not say where the lead went
        (the caller's unit no longer sees it)."""
        returned = await flows.reject(
            rt.db, principal, parse_id(lead_id, "lead_id"), body.reason_code, body.note
        )
        return {
            "lead_id": str(returned.lead.id),
            "rejected_by_org_id": str(returned.unit.id),
            "returned_to_org_id": str(returned.parent.id),
            "reason_code": body.reason_code,
        }

    return r
