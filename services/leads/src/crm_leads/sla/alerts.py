"""The SLA inbox with I/O: recording the alert a timer raises (in the timer job's
transaction), resolving a lead's open alerts when a follow-up is logged (a follow-up hook),
and the page a caller reads. Functions taking ``conn`` never commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.activities.hooks import FollowUp
from crm_leads.sla.alert_rules import (
    AlertFilter,
    AlertKind,
    addressee,
    reads_subtree,
    recipient,
)
from crm_leads.sla.models import sla_alerts
from crm_platform.auth import Principal, visible_to
from crm_platform.ids import new_id
from crm_platform.pagination import PageRequest

_FIRED = [
    sla_alerts.c.lead_id,
    sla_alerts.c.kind,
    sla_alerts.c.target,
    sla_alerts.c.due_time,
]


async def record(
    conn: AsyncConnection,
    *,
    lead: Any,
    kind: AlertKind,
    target: str,
    due: datetime,
    at: datetime,
) -> None:
    """The alert for ``lead``'s ``target`` due at ``due``, raised at ``at`` and addressed by
    ``alert_rules.recipient``; the same one raised again adds nothing."""
    await conn.execute(
        pg_insert(sla_alerts)
        .values(
            id=new_id(),
            tenant_id=lead.tenant_id,
            owner_org_id=lead.owner_org_id,
            owner_org_path=lead.owner_org_path,
            lead_id=lead.id,
            kind=kind,
            target=target,
            due_time=due,
            recipient_id=recipient(kind, lead.assignee_id),
            create_time=at,
        )
        .on_conflict_do_nothing(index_elements=_FIRED)
    )


async def on_follow_up(conn: AsyncConnection, activity: FollowUp) -> int:
    """A follow-up hook: the activity resolves every open alert of its lead (one statement).
    Returns how many it resolved."""
    result = await conn.execute(
        sla_alerts.update()
        .where(sla_alerts.c.lead_id == activity.lead_id, sla_alerts.c.resolve_time.is_(None))
        .values(resolve_time=sa.func.now(), resolved_by_activity_id=activity.activity_id)
    )
    return result.rowcount


async def page(
    *, conn: AsyncConnection, principal: Principal, flt: AlertFilter, page: PageRequest
) -> list[Any]:
    """The alerts the caller reads (``alert_rules``), newest first, LIMIT size+1."""
    stmt = sa.select(sla_alerts).where(visible_to(sla_alerts, principal))
    if not reads_subtree(principal):
        me = addressee(principal)
        if me is None:
            return []
        stmt = stmt.where(sla_alerts.c.recipient_id == me)
    if flt.kind is not None:
        stmt = stmt.where(sla_alerts.c.kind == flt.kind)
    if flt.state == "open":
        stmt = stmt.where(sla_alerts.c.resolve_time.is_(None))
    elif flt.state == "resolved":
        stmt = stmt.where(sla_alerts.c.resolve_time.is_not(None))
    if page.after is not None:
        stmt = stmt.where(sla_alerts.c.id < page.after)
    stmt = stmt.order_by(sla_alerts.c.id.desc()).limit(page.size + 1)
    return list((await conn.execute(stmt)).all())
