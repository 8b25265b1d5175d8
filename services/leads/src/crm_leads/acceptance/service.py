"""Acceptance with I/O, the part distribution calls: offering moved leads to their new unit
(pending until the tenant's deadline, with a durable acceptance_deadline timer), the units a
lead must never be offered again, and accepting. Rejection and expiry, which redistribute,
are in crm_leads.acceptance.flows. Functions taking ``conn`` never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2
from crm_leads.acceptance.models import lead_acceptances
from crm_leads.acceptance.rules import DECIDER_ROLES, deadline, decides_for
from crm_leads.lead.models import OPEN_STATUSES, leads
from crm_leads.lead.service import PRODUCER
from crm_leads.sla import service as sla
from crm_leads.sla.rules import ACCEPTANCE_DEADLINE, Clock
from crm_platform import records
from crm_platform.auth import Principal
from crm_platform.errors import FailedPrecondition, PermissionDenied
from crm_platform.ids import new_id
from crm_platform.outbox import add_event
from crm_platform.protos import timestamp

_EXCLUSIONS = (
    "SELECT lead_id, array_agg(org_unit_id) AS units FROM lead_rejections "
    "WHERE lead_id = ANY($1::uuid[]) GROUP BY lead_id"
)
# A lead is offered to one unit at a time: a new offer replaces an old one.
_OFFER = (
    "INSERT INTO lead_acceptances (lead_id, tenant_id, org_unit_id, org_unit_path, offer_time, "
    "due_time) SELECT id, $1, unit, path, $5, $6 "
    "FROM unnest($2::uuid[], $3::uuid[], $4::text[]) AS o (id, unit, path) "
    "ON CONFLICT (lead_id) DO UPDATE SET org_unit_id = EXCLUDED.org_unit_id, "
    "org_unit_path = EXCLUDED.org_unit_path, offer_time = EXCLUDED.offer_time, "
    "due_time = EXCLUDED.due_time"
)
_ARM = (
    "INSERT INTO lead_timers (id, tenant_id, lead_id, kind, due_time, payload) "
    "SELECT t.id, $1, t.lead, $5, $6, jsonb_build_object('org_unit_id', t.unit::text) "
    "FROM unnest($2::uuid[], $3::uuid[], $4::uuid[]) AS t (id, lead, unit)"
)
# Moved on: whatever clock and timers the leads had at their previous unit are void. Timers
# being fired by another transaction are skipped (it re-checks the lead when it locks it).
_VOID_CLOCKS = "DELETE FROM lead_sla WHERE lead_id = ANY($1::uuid[])"
_VOID_TIMERS = (
    "DELETE FROM lead_timers WHERE id IN (SELECT id FROM lead_timers "
    "WHERE lead_id = ANY($1::uuid[]) AND fired_time IS NULL FOR UPDATE SKIP LOCKED)"
)


async def _raw(conn: AsyncConnection) -> asyncpg.Connection:
    raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
    return raw


async def exclusions(
    conn: AsyncConnection, lead_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, frozenset[str]]:
    """For each lead that has any, the units it must not be offered again (as engine ids)."""
    if not lead_ids:
        return {}
    rows = await (await _raw(conn)).fetch(_EXCLUSIONS, list(lead_ids))
    return {r["lead_id"]: frozenset(str(u) for u in r["units"]) for r in rows}


async def offer(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    offers: Sequence[tuple[uuid.UUID, uuid.UUID, str]],
    now: datetime,
) -> None:
    """Leads (lead id, new owner unit id, its path) just distributed: each waits for its new
    unit to accept it until the tenant's acceptance deadline. Set-based (distribution calls
    this per batch of thousands)."""
    if not offers:
        return
    rules = await sla.policy(conn, tenant_id)
    due = deadline(now, rules.acceptance_hours)
    ids = [lead for lead, _, _ in offers]
    raw = await _raw(conn)
    await raw.execute(_VOID_CLOCKS, ids)
    await raw.execute(_VOID_TIMERS, ids)
    units = [unit for _, unit, _ in offers]
    await raw.execute(_OFFER, tenant_id, ids, units, [p for _, _, p in offers], now, due)
    await raw.execute(
        _ARM, tenant_id, [new_id() for _ in offers], ids, units, ACCEPTANCE_DEADLINE, due
    )


async def pending(conn: AsyncConnection, lead_id: uuid.UUID, *, lock: bool = False) -> Any:
    stmt = sa.select(lead_acceptances).where(lead_acceptances.c.lead_id == lead_id)
    if lock:
        stmt = stmt.with_for_update()
    return (await conn.execute(stmt)).first()


async def decision_target(
    conn: AsyncConnection, principal: Principal, lead_id: uuid.UUID, now: datetime
) -> tuple[Any, Any]:
    """The visible lead and its pending offer, both locked, if the caller may decide on it:
    404 when the caller cannot see the lead (a sibling), 403 for reps and for managers of
    another unit, 409 when nothing is pending or the deadline has passed."""
    visible = await records.get_visible(conn, leads, principal, lead_id, kind="lead")
    principal.require_any(DECIDER_ROLES)
    lead = (
        await conn.execute(sa.select(leads).where(leads.c.id == visible.id).with_for_update())
    ).one()
    current = await pending(conn, lead.id, lock=True)
    meta = {"lead": str(lead_id)}
    if (
        current is None
        or current.org_unit_id != lead.owner_org_id
        or lead.status not in OPEN_STATUSES
    ):
        raise FailedPrecondition(
            f"lead {lead_id} is not waiting for acceptance",
            reason="LEAD_NOT_PENDING_ACCEPTANCE",
            metadata=meta,
        )
    if not decides_for(principal, current.org_unit_id):
        raise PermissionDenied(
            f"only the managers of {current.org_unit_path} decide on lead {lead_id}",
            reason="NOT_RECEIVING_UNIT",
        )
    if current.due_time <= now:
        # The deadline timer returns it (maybe a replica is doing so right now).
        raise FailedPrecondition(
            f"the acceptance deadline of lead {lead_id} has passed",
            reason="ACCEPTANCE_DEADLINE_PASSED",
            metadata=meta,
        )
    return lead, current


async def accept(
    *, conn: AsyncConnection, principal: Principal, lead_id: uuid.UUID, now: datetime
) -> tuple[Any, Clock]:
    """Accept a lead offered to the caller's unit: the offer and its deadline go, the
    follow-up clock starts (first contact due, reclaim at the end of protection)."""
    lead, current = await decision_target(conn, principal, lead_id, now)
    await conn.execute(lead_acceptances.delete().where(lead_acceptances.c.lead_id == lead.id))
    await sla.drop_timers(conn, [lead.id], [ACCEPTANCE_DEADLINE])
    clock = await sla.arm(
        conn,
        tenant_id=lead.tenant_id,
        lead_id=lead.id,
        unit_id=lead.owner_org_id,
        grade=lead.grade,
        at=now,
    )
    await add_event(
        conn,
        event_type="crm.leads.lead.accepted.v1",
        payload=events_pb2.LeadAccepted(
            lead_id=str(lead.id),
            org_unit_id=str(current.org_unit_id),
            org_unit_path=current.org_unit_path,
            by=principal.subject,
            offer_time=timestamp(current.offer_time),
            accept_time=timestamp(now),
        ),
        tenant_id=lead.tenant_id,
        org_path=current.org_unit_path,
        producer=PRODUCER,
    )
    return lead, clock
