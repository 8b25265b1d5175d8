"""Public REST adapter for follow-up activities."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import AwareDatetime, Field

from crm_leads.activities import rules, service
from crm_platform.http import ApiModel, CurrentPage, CurrentPrincipal, paged
from crm_platform.ids import parse_id
from crm_platform.protos import timestamp
from crm_platform.runtime import Runtime

Json = dict[str, Any]


class ActivityIn(ApiModel):
    kind: rules.Kind
    note: str = Field(default="", max_length=rules.MAX_NOTE)
    occur_time: AwareDatetime | None = Field(
        default=None, description="When it happened (RFC 3339 with offset); default: now."
    )


def activity_json(row: Any) -> Json:
    return {
        "id": str(row.id),
        "lead_id": str(row.lead_id),
        "kind": rules.KIND_NAMES[row.kind],
        "note": row.note,
        "occur_time": timestamp(row.occur_time).ToJsonString(),
        "actor": row.actor,
        "create_time": timestamp(row.create_time).ToJsonString(),
    }


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1/leads/{lead_id}/activities", tags=["activities"])

    @r.post("", status_code=201)
    async def log_activity(lead_id: str, body: ActivityIn, principal: CurrentPrincipal) -> Json:
        """Log a call, visit, message or note (the lead's holder, or a manager or
        administrator of its subtree); `occur_time` defaults to now and must not be in the
        future. Publishes `crm.leads.lead.followed_up.v1`."""
        async with rt.db.unit_of_work() as conn:
            row = await service.log(
                conn=conn,
                principal=principal,
                lead_id=parse_id(lead_id, "lead_id"),
                kind=body.kind,
                note=body.note,
                occur_time=body.occur_time,
            )
        return activity_json(row)

    @r.get("")
    async def list_activities(lead_id: str, principal: CurrentPrincipal, page: CurrentPage) -> Json:
        """The lead's activities, newest logged first."""
        async with rt.db.read() as conn:
            rows = await service.page(
                conn=conn, principal=principal, lead_id=parse_id(lead_id, "lead_id"), page=page
            )
        return paged("activities", rows, page, activity_json)

    return r
