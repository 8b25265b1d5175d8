"""Logging follow-up activities against a lead and reading them. Keyword-only functions
taking the connection; they never commit."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2
from crm_leads.activities import hooks, rules
from crm_leads.activities.models import lead_activities
from crm_leads.lead.models import leads
from crm_leads.lead.pools import TAKE_BACK_ROLES, user_id
from crm_leads.lead.service import PRODUCER
from crm_platform import records
from crm_platform.auth import Principal
from crm_platform.errors import PermissionDenied
from crm_platform.ids import new_id
from crm_platform.outbox import add_event
from crm_platform.pagination import PageRequest
from crm_platform.protos import timestamp


async def log(
    *,
    conn: AsyncConnection,
    principal: Principal,
    lead_id: uuid.UUID,
    kind: rules.Kind,
    note: str,
    occur_time: datetime | None,
) -> Any:
    """Record an activity by the lead's holder or a manager/administrator of its subtree
    (others who can see the lead: 403; others: 404), publish
    ``crm.leads.lead.followed_up.v1`` and run the follow-up hooks (SLA clock and alerts,
    scoring), all in the caller's transaction. The lead's update_time moves: a followed-up
    lead is not stale."""
    me = user_id(principal)
    lead = await records.get_visible(conn, leads, principal, lead_id, kind="lead")
    if lead.assignee_id != me and not principal.roles & TAKE_BACK_ROLES:
        raise PermissionDenied(
            f"only the holder of lead {lead_id} or a manager may log its activities",
            reason="ACTIVITY_NOT_ALLOWED",
        )
    now: datetime = (await conn.execute(sa.select(sa.func.now()))).scalar_one()
    at = rules.occur_time(occur_time, now)
    row = (
        await conn.execute(
            lead_activities.insert()
            .values(
                id=new_id(),
                tenant_id=lead.tenant_id,
                lead_id=lead.id,
                kind=rules.KINDS[kind],
                note=note,
                occur_time=at,
                actor=principal.subject,
            )
            .returning(*lead_activities.c)
        )
    ).one()
    await conn.execute(
        leads.update().where(leads.c.id == lead.id).values(update_time=sa.func.now())
    )
    await add_event(
        conn,
        event_type="crm.leads.lead.followed_up.v1",
        payload=events_pb2.LeadFollowedUp(
            lead_id=str(lead.id),
            activity_id=str(row.id),
            kind=row.kind,
            note=row.note,
            occur_time=timestamp(row.occur_time),
            actor=row.actor,
            assignee_id="" if lead.assignee_id is None else str(lead.assignee_id),
            owner_org_id=str(lead.owner_org_id),
        ),
        tenant_id=lead.tenant_id,
        org_path=lead.owner_org_path,
        producer=PRODUCER,
    )
    follow_up = hooks.FollowUp(lead_id=lead.id, activity_id=row.id, kind=kind, at=at)
    await hooks.followed_up(conn, follow_up)
    return row


async def page(
    *, conn: AsyncConnection, principal: Principal, lead_id: uuid.UUID, page: PageRequest
) -> list[Any]:
    """A visible lead's activities, newest logged first (keyset on the time-ordered id)."""
    lead = await records.get_visible(conn, leads, principal, lead_id, kind="lead")
    stmt = sa.select(lead_activities).where(lead_activities.c.lead_id == lead.id)
    if page.after is not None:
        stmt = stmt.where(lead_activities.c.id < page.after)
    stmt = stmt.order_by(lead_activities.c.id.desc()).limit(page.size + 1)
    return list((await conn.execute(stmt)).all())
