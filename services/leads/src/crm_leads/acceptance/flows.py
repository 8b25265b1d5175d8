"""Leads going back up: a rejection, an expired acceptance deadline or a reclaim (公海回收)
returns the lead to the parent unit's pool and redistributes it there by the parent's
automatic rules, never to a unit that turned it down or lost it (lead_rejections, read by
distribution into LeadFacts.excluded). When nothing else fits, it stays in the parent's pool,
flagged unmatched, for manual distribution.

The move, the history row, the exclusion, the redistribution and the events are one
transaction: the caller's (``reject`` owns one; the timer job passes its own)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2
from crm_leads.acceptance import service
from crm_leads.acceptance.models import lead_acceptances, lead_rejections
from crm_leads.acceptance.rules import EXPIRED, EXPIRED_KIND, RECLAIMED, REJECTED
from crm_leads.distribution import service as distribution
from crm_leads.distribution.models import distribution_unmatched, lead_owner_history
from crm_leads.lead.models import OPEN_STATUSES, leads
from crm_leads.lead.service import PRODUCER
from crm_leads.orgtree import service as orgtree
from crm_leads.poolrules import service as poolrules
from crm_leads.sla import service as sla
from crm_platform import metrics
from crm_platform.auth import Principal
from crm_platform.db import Database
from crm_platform.ids import new_id
from crm_platform.outbox import add_event
from crm_platform.protos import timestamp

SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class Returned:
    lead: Any  # the row as it was at the unit it left (locked)
    unit: Any  # the unit it left
    parent: Any  # the unit whose pool it went back to
    placed_at: str | None  # where redistribution put it (None: stays in the parent's pool)


async def return_to_parent(
    conn: AsyncConnection,
    *,
    lead: Any,
    kind: str,
    actor: str,
    now: datetime,
    reason_code: str = "",
    note: str = "",
) -> Returned | None:
    """Move the locked, open ``lead`` from its owner unit to the parent's pool (clearing any
    holder), never to be offered to that unit again, and redistribute it. None: the owner is
    a root unit (nothing above to return to)."""
    unit = await orgtree.get(conn=conn, unit_id=lead.owner_org_id)
    parent = (
        None
        if unit is None or unit.parent_id is None
        else await orgtree.get(conn=conn, unit_id=unit.parent_id)
    )
    if unit is None or parent is None:
        return None
    exclusion = {
        "kind": kind,
        "reason_code": reason_code,
        "note": note,
        "actor": actor,
        "occur_time": now,
    }
    await conn.execute(
        pg_insert(lead_rejections)
        .values(
            lead_id=lead.id,
            org_unit_id=unit.id,
            tenant_id=lead.tenant_id,
            org_unit_path=unit.path,
            **exclusion,
        )
        .on_conflict_do_update(
            index_elements=[lead_rejections.c.lead_id, lead_rejections.c.org_unit_id],
            set_=exclusion,
        )
    )
    await conn.execute(
        leads.update()
        .where(leads.c.id == lead.id)
        .values(
            owner_org_id=parent.id,
            owner_org_path=parent.path,
            assignee_id=None,
            assigned_time=None,
            version=leads.c.version + 1,
            update_time=sa.func.now(),
        )
    )
    await conn.execute(
        lead_owner_history.insert().values(
            id=new_id(),
            tenant_id=lead.tenant_id,
            lead_id=lead.id,
            from_org_id=unit.id,
            from_org_path=unit.path,
            to_org_id=parent.id,
            to_org_path=parent.path,
            reason=kind,
            actor=actor,
            occur_time=now,
        )
    )
    await conn.execute(lead_acceptances.delete().where(lead_acceptances.c.lead_id == lead.id))
    await sla.clear(conn, [lead.id])
    placed = await _redistribute(conn, lead, parent, kind, now)
    return Returned(lead, unit, parent, placed)


async def _redistribute(
    conn: AsyncConnection, lead: Any, parent: Any, kind: str, now: datetime
) -> str | None:
    plan = await distribution.load_plan(conn=conn, tenant_id=lead.tenant_id, unit_id=parent.id)
    if plan.distributors.get(str(parent.id)):
        # Excludes every unit in lead_rejections, and flags the lead where it stops when no
        # other unit fits.
        result, _ = await distribution.distribute_batch(
            conn=conn, plan=plan, lead_ids=[lead.id], now=now
        )
        metrics.LEADS_DISTRIBUTED.inc(result.distributed)
        return next(iter(result.by_target), None)
    flag = {
        "org_unit_id": parent.id,
        "rule_name": "",
        "reason": f"returned ({kind}); the unit has no automatic rules",
        "decide_time": now,
    }
    await conn.execute(
        pg_insert(distribution_unmatched)
        .values(lead_id=lead.id, tenant_id=lead.tenant_id, **flag)
        .on_conflict_do_update(index_elements=[distribution_unmatched.c.lead_id], set_=flag)
    )
    return None


async def reject(
    db: Database,
    principal: Principal,
    lead_id: uuid.UUID,
    reason_code: str,
    note: str,
    now: datetime | None = None,
) -> Returned:
    """A manager (or administrator) of the receiving unit turns a pending lead down: back to
    the parent's pool and redistributed without this unit."""
    now = now or datetime.now(UTC)
    async with db.unit_of_work() as conn:
        lead, current = await service.decision_target(conn, principal, lead_id, now)
        returned = await return_to_parent(
            conn,
            lead=lead,
            kind=REJECTED,
            actor=principal.subject,
            now=now,
            reason_code=reason_code,
            note=note,
        )
        # Distribution never offers a lead to a root unit, so there is always a parent.
        assert returned is not None
        await _rejected_event(conn, returned, current, reason_code, note, principal.subject)
    return returned


async def expire(
    conn: AsyncConnection, *, lead_id: uuid.UUID, unit_id: uuid.UUID, now: datetime
) -> bool:
    """The acceptance deadline timer of ``lead_id`` at ``unit_id`` fired: if the offer is still
    pending there and due, the lead goes back as if rejected. False: nothing to do (accepted,
    rejected or moved meanwhile)."""
    lead = (
        await conn.execute(sa.select(leads).where(leads.c.id == lead_id).with_for_update())
    ).first()
    current = await service.pending(conn, lead_id, lock=True)
    if (
        lead is None
        or current is None
        or current.org_unit_id != unit_id
        or lead.owner_org_id != unit_id
        or lead.status not in OPEN_STATUSES
        or current.due_time > now
    ):
        return False
    returned = await return_to_parent(
        conn, lead=lead, kind=EXPIRED_KIND, actor=SYSTEM_ACTOR, now=now, reason_code=EXPIRED
    )
    if returned is None:
        return False
    await _rejected_event(conn, returned, current, EXPIRED, "", SYSTEM_ACTOR)
    return True


async def reclaim(
    conn: AsyncConnection, *, lead: Any, protect_until: datetime, now: datetime
) -> bool:
    """The protection period of the locked ``lead`` ended (the timer job checked its clock):
    reclaimed to the parent's pool, its holder losing it. A lead its unit collected itself
    stays with the unit (only passing it up moves it): it goes back to the unit's own pool."""
    if not await _arrived_from_above(conn, lead):
        return await _reclaim_to_own_pool(conn, lead=lead, protect_until=protect_until)
    returned = await return_to_parent(conn, lead=lead, kind=RECLAIMED, actor=SYSTEM_ACTOR, now=now)
    if returned is None:
        return False
    await add_event(
        conn,
        event_type="crm.leads.lead.reclaimed.v1",
        payload=events_pb2.LeadReclaimed(
            lead_id=str(lead.id),
            from_org_id=str(returned.unit.id),
            from_org_path=returned.unit.path,
            to_org_id=str(returned.parent.id),
            to_org_path=returned.parent.path,
            previous_assignee_id="" if lead.assignee_id is None else str(lead.assignee_id),
            protect_until=timestamp(protect_until),
        ),
        tenant_id=lead.tenant_id,
        # The parent's path: the unit that lost the lead no longer sees it.
        org_path=returned.parent.path,
        producer=PRODUCER,
    )
    return True


async def _arrived_from_above(conn: AsyncConnection, lead: Any) -> bool:
    """Whether distribution (or a return) brought the lead to its current unit, rather than
    the unit capturing it."""
    moved_here = sa.select(lead_owner_history.c.id).where(
        lead_owner_history.c.lead_id == lead.id,
        lead_owner_history.c.to_org_id == lead.owner_org_id,
    )
    return bool(await conn.scalar(sa.select(moved_here.exists())))


async def _reclaim_to_own_pool(
    conn: AsyncConnection, *, lead: Any, protect_until: datetime
) -> bool:
    await sla.clear(conn, [lead.id])
    if lead.assignee_id is None:
        return False  # already in the pool: the clock just ends
    await conn.execute(
        leads.update()
        .where(leads.c.id == lead.id)
        .values(
            assignee_id=None,
            assigned_time=None,
            version=leads.c.version + 1,
            update_time=sa.func.now(),
        )
    )
    # The holder lost it: the cool-down keeps them from claiming it straight back.
    await poolrules.record_releases(
        conn=conn, tenant_id=lead.tenant_id, pairs=[(lead.id, lead.assignee_id)], reason=RECLAIMED
    )
    await add_event(
        conn,
        event_type="crm.leads.lead.reclaimed.v1",
        payload=events_pb2.LeadReclaimed(
            lead_id=str(lead.id),
            from_org_id=str(lead.owner_org_id),
            from_org_path=lead.owner_org_path,
            to_org_id=str(lead.owner_org_id),
            to_org_path=lead.owner_org_path,
            previous_assignee_id=str(lead.assignee_id),
            protect_until=timestamp(protect_until),
        ),
        tenant_id=lead.tenant_id,
        org_path=lead.owner_org_path,
        producer=PRODUCER,
    )
    return True


async def _rejected_event(
    conn: AsyncConnection, returned: Returned, offer: Any, reason_code: str, note: str, by: str
) -> None:
    await add_event(
        conn,
        event_type="crm.leads.lead.rejected.v1",
        payload=events_pb2.LeadRejected(
            lead_id=str(returned.lead.id),
            org_unit_id=str(returned.unit.id),
            org_unit_path=returned.unit.path,
            reason_code=reason_code,
            note=note,
            by=by,
            expired=reason_code == EXPIRED,
            returned_to_org_id=str(returned.parent.id),
            returned_to_org_path=returned.parent.path,
            offer_time=timestamp(offer.offer_time),
        ),
        tenant_id=returned.lead.tenant_id,
        org_path=returned.parent.path,
        producer=PRODUCER,
    )
