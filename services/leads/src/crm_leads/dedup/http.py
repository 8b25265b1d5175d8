"""Public REST adapter for de-duplication rules and lead field history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from crm_leads.dedup import flows, history, service
from crm_leads.dedup.rules import DedupRules, rules_json
from crm_platform.auth import Principal
from crm_platform.http import CurrentPage, CurrentPrincipal, paged
from crm_platform.ids import parse_id
from crm_platform.protos import timestamp
from crm_platform.runtime import Runtime

Json = dict[str, Any]


def rules_out(current: service.CurrentRules) -> Json:
    out: Json = {"version": current.version, "rules": rules_json(current.rules)}
    if current.create_time is not None:
        out["author"] = current.author
        out["create_time"] = timestamp(current.create_time).ToJsonString()
    return out


async def _editor(principal: CurrentPrincipal) -> Principal:
    # A dependency, so a caller without the role gets 403 before the body is validated.
    principal.require_any(service.EDITOR_ROLES)
    return principal


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(tags=["de-duplication"])

    @r.get("/v1/dedup-rules")
    async def get_dedup_rules(principal: CurrentPrincipal) -> Json:
        """The tenant's current de-duplication rules, or the built-in default (same phone,
        email or open_id: merge) as version 0."""
        async with rt.db.read() as conn:
            current = await service.latest(conn=conn, tenant_id=principal.tenant_id)
        return rules_out(current)

    @r.put("/v1/dedup-rules")
    async def put_dedup_rules(
        body: DedupRules, principal: Annotated[Principal, Depends(_editor)]
    ) -> Json:
        """Replace the tenant's de-duplication rules (administrators and managers): stored as
        the next version, used by captures from now on (other replicas within seconds)."""
        return rules_out(await flows.store_rules(rt.db, principal, body))

    @r.get("/v1/dedup-rules/versions/{number}")
    async def get_dedup_rules_version(
        number: Annotated[int, Path(ge=0, le=2**31 - 1)], principal: CurrentPrincipal
    ) -> Json:
        """One stored version (0: the built-in default); 404 if there is no such version."""
        async with rt.db.read() as conn:
            current = await service.version(conn=conn, tenant_id=principal.tenant_id, number=number)
        return rules_out(current)

    @r.get("/v1/leads/{lead_id}/history", tags=["leads"])
    async def lead_history(lead_id: str, principal: CurrentPrincipal, page: CurrentPage) -> Json:
        """Field changes duplicate captures made to a visible lead (a merge filling a blank
        field, an overwrite replacing one), newest first: old and new value, the rule, the
        enquiry (intent) and the request that brought it."""
        async with rt.db.read() as conn:
            rows = await history.page_of_lead(
                conn=conn, principal=principal, lead_id=parse_id(lead_id, "lead_id"), page=page
            )
        return paged("changes", rows, page, history.change_json)

    return r
