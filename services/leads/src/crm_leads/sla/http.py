"""Public REST adapter for SLAs: the tenant's policy document, a lead's follow-up clock and
the SLA inbox (reminders and escalations)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Body, Depends, Query

from crm_leads.acceptance import service as acceptance
from crm_leads.lead.models import leads
from crm_leads.sla import alerts, service
from crm_leads.sla.alert_rules import ESCALATION_ROLE, AlertFilter, AlertKind, AlertState
from crm_leads.sla.models import lead_sla, lead_timers
from crm_leads.sla.rules import Clock, parse_policy, policy_json
from crm_platform import records
from crm_platform.auth import ROLE_ADMIN, Principal
from crm_platform.http import CurrentPrincipal
from crm_platform.ids import parse_id
from crm_platform.pagination import MAX_PAGE_SIZE, PageRequest, page_of, page_request
from crm_platform.protos import timestamp
from crm_platform.runtime import Runtime

Json = dict[str, Any]


def _time(value: datetime | None) -> str | None:
    return None if value is None else timestamp(value).ToJsonString()


def clock_json(clock: Clock) -> Json:
    return {
        "grade": clock.grade,
        "start_time": _time(clock.start),
        "first_contact_due": _time(clock.first_contact_due),
        "first_contact_time": _time(clock.first_contact_time),
        "follow_up_due": _time(clock.follow_up_due),
        "last_follow_up_time": _time(clock.last_follow_up_time),
        "protect_until": _time(clock.protect_until),
        "protect_max": _time(clock.protect_max),
    }


def policy_out(current: service.CurrentPolicy) -> Json:
    out: Json = {"version": current.version, "policy": policy_json(current.policy)}
    if current.create_time is not None:
        out["author"] = current.author
        out["create_time"] = _time(current.create_time)
    return out


def alert_json(row: Any) -> Json:
    to: Json = (
        {"user_id": str(row.recipient_id)}
        if row.recipient_id is not None
        else {"role": ESCALATION_ROLE, "org_unit_id": str(row.owner_org_id)}
    )
    return {
        "id": str(row.id),
        "lead_id": str(row.lead_id),
        "kind": row.kind,
        "target": row.target,
        "due_time": _time(row.due_time),
        "org_unit_id": str(row.owner_org_id),
        "recipient": to,
        "create_time": _time(row.create_time),
        "resolve_time": _time(row.resolve_time),
        "resolved_by_activity_id": (
            None if row.resolved_by_activity_id is None else str(row.resolved_by_activity_id)
        ),
    }


@dataclass(frozen=True)
class AlertQuery:
    filter: AlertFilter
    page: PageRequest


async def alert_query(
    kind: Annotated[AlertKind | None, Query(description="warning or breach; default both")] = None,
    state: Annotated[AlertState | None, Query(description="open or resolved; default both")] = None,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    page_token: str = "",
) -> AlertQuery:
    # The page token is bound to the filter (a token of another filter is a violation).
    flt = AlertFilter(kind=kind, state=state)
    return AlertQuery(flt, page_request(page_size, page_token, flt.key()))


async def _admin(principal: CurrentPrincipal) -> Principal:
    # A dependency, so a non-administrator gets 403 before the body is validated.
    principal.require_any([ROLE_ADMIN])
    return principal


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(tags=["sla"])

    @r.get("/v1/sla-policy")
    async def get_sla_policy(principal: CurrentPrincipal) -> Json:
        """The tenant's SLA policy: acceptance deadline, first-contact and follow-up targets
        by grade, reminder lead time, protection periods (version 0: the defaults)."""
        async with rt.db.read() as conn:
            return policy_out(await service.latest(conn=conn, tenant_id=principal.tenant_id))

    @r.put("/v1/sla-policy")
    async def put_sla_policy(
        body: Annotated[dict[str, Any], Body()], principal: Annotated[Principal, Depends(_admin)]
    ) -> Json:
        """Store the tenant's next policy version (administrators); omitted fields take their
        defaults. Timers armed from now on use it."""
        return policy_out(await service.store_policy(rt.db, principal, parse_policy(body)))

    @r.get("/v1/leads/{lead_id}/sla", tags=["leads"])
    async def get_lead_sla(lead_id: str, principal: CurrentPrincipal) -> Json:
        """A visible lead's pending acceptance, follow-up clock and unfired timers."""
        async with rt.db.read() as conn:
            lead = await records.get_visible(
                conn, leads, principal, parse_id(lead_id, "lead_id"), kind="lead"
            )
            offer = await acceptance.pending(conn, lead.id)
            row = (
                await conn.execute(sa.select(lead_sla).where(lead_sla.c.lead_id == lead.id))
            ).first()
            timers = (
                await conn.execute(
                    sa.select(lead_timers)
                    .where(lead_timers.c.lead_id == lead.id, lead_timers.c.fired_time.is_(None))
                    .order_by(lead_timers.c.due_time)
                )
            ).all()
        pending = offer is not None and offer.org_unit_id == lead.owner_org_id
        clock = row is not None and row.org_unit_id == lead.owner_org_id
        return {
            "lead_id": str(lead.id),
            "acceptance": {"org_unit_id": str(offer.org_unit_id), "due_time": _time(offer.due_time)}
            if pending
            else None,
            "clock": clock_json(service.clock_of(row)) if clock else None,
            "timers": [
                {"kind": t.kind, "due_time": _time(t.due_time)}
                for t in timers
                if t.payload.get("org_unit_id") == str(lead.owner_org_id)
            ],
        }

    @r.get("/v1/sla-alerts")
    async def list_sla_alerts(
        principal: CurrentPrincipal, query: Annotated[AlertQuery, Depends(alert_query)]
    ) -> Json:
        """The SLA inbox, newest first: for a manager or administrator every alert of their
        subtree; for anyone else the reminders addressed to them. A `warning` reminds the
        lead's holder (the unit's managers when nobody holds it) before a target; a `breach`
        escalates to the owner unit's managers at the target. The next follow-up logged on the
        lead resolves them."""
        async with rt.db.read() as conn:
            rows = await alerts.page(
                conn=conn, principal=principal, flt=query.filter, page=query.page
            )
        items, token = page_of(rows, query.page, query.filter.key())
        return {"alerts": [alert_json(x) for x in items], "next_page_token": token}

    return r
