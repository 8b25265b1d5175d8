"""SLA policies and leads' follow-up clocks with I/O: storing the tenant's policy, arming a
lead's timers when it is accepted or assigned, and ``on_follow_up`` (a follow-up hook:
activities call it when one is logged against a lead). Functions taking ``conn`` never commit.

Lock order, shared with the timer job (crm_leads.sla.jobs) so they never deadlock: the lead
row, then its lead_sla row; superseded timers are deleted with SKIP LOCKED (one the job is
firing right now is left to it, and it re-checks the clock after waiting for our lock)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.acceptance.models import lead_acceptances
from crm_leads.activities.hooks import FollowUp
from crm_leads.lead.models import OPEN_STATUSES, leads
from crm_leads.sla.models import lead_sla, lead_timers, sla_alerts, sla_policies
from crm_leads.sla.rules import (
    CLOCK_KINDS,
    DEFAULT_POLICY,
    Clock,
    SlaPolicy,
    follow_up,
    policy_json,
    start_clock,
    timers,
)
from crm_platform.auth import ROLE_ADMIN, Principal
from crm_platform.db import Database
from crm_platform.ids import new_id
from crm_platform.tenant_cache import TenantCache
from crm_platform.versioned import append_version

CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class CurrentPolicy:
    version: int  # 0: never stored (the defaults)
    policy: SlaPolicy
    author: str = ""
    create_time: datetime | None = None


DEFAULT = CurrentPolicy(0, DEFAULT_POLICY)


async def _read(conn: AsyncConnection, tenant_id: uuid.UUID) -> Any:
    stmt = (
        sa.select(sla_policies)
        .where(sla_policies.c.tenant_id == tenant_id)
        .order_by(sla_policies.c.version.desc())
        .limit(1)
    )
    return (await conn.execute(stmt)).first()


def _stored(row: Any) -> CurrentPolicy:
    return CurrentPolicy(
        row.version, SlaPolicy.model_validate(row.document), row.created_by, row.create_time
    )


# Read on every distribution batch and timer: per process, other replicas see a change
# within CACHE_SECONDS (as lead settings).
CACHE = TenantCache(read=_read, parse=_stored, default=DEFAULT, ttl_seconds=CACHE_SECONDS)


async def policy(conn: AsyncConnection, tenant_id: uuid.UUID) -> SlaPolicy:
    return (await CACHE.current(conn, tenant_id)).policy


async def latest(*, conn: AsyncConnection, tenant_id: uuid.UUID) -> CurrentPolicy:
    return await CACHE.latest(conn, tenant_id)


async def store_policy(db: Database, principal: Principal, document: SlaPolicy) -> CurrentPolicy:
    """Store the tenant's next policy version (administrators). Applies to timers armed from
    now on; armed timers keep their times."""
    principal.require_any([ROLE_ADMIN])
    async with db.unit_of_work() as conn:
        row = await append_version(
            conn,
            sla_policies,
            key={"tenant_id": principal.tenant_id},
            values={"document": policy_json(document), "created_by": principal.subject},
            conflict="the SLA policy is being changed concurrently; retry",
            reason="SLA_POLICY_CONFLICT",
        )
    current = CurrentPolicy(row.version, document, principal.subject, row.create_time)
    CACHE.remember(principal.tenant_id, current)
    return current


# Clocks


def clock_of(row: Any) -> Clock:
    return Clock(
        grade=row.grade,
        start=row.start_time,
        first_contact_due=row.first_contact_due,
        first_contact_time=row.first_contact_time,
        follow_up_due=row.follow_up_due,
        last_follow_up_time=row.last_follow_up_time,
        protect_until=row.protect_until,
        protect_max=row.protect_max,
    )


def _clock_values(clock: Clock) -> dict[str, Any]:
    return {
        "grade": clock.grade,
        "start_time": clock.start,
        "first_contact_due": clock.first_contact_due,
        "first_contact_time": clock.first_contact_time,
        "follow_up_due": clock.follow_up_due,
        "last_follow_up_time": clock.last_follow_up_time,
        "protect_until": clock.protect_until,
        "protect_max": clock.protect_max,
    }


async def drop_timers(
    conn: AsyncConnection, lead_ids: Sequence[uuid.UUID], kinds: Sequence[str] | None = None
) -> None:
    """Delete the leads' unfired timers (of ``kinds``); one another transaction is firing
    right now is skipped: it re-checks the lead's state when it gets the lead's lock."""
    pending = sa.select(lead_timers.c.id).where(
        lead_timers.c.lead_id.in_(lead_ids), lead_timers.c.fired_time.is_(None)
    )
    if kinds is not None:
        pending = pending.where(lead_timers.c.kind.in_(kinds))
    pending = pending.with_for_update(skip_locked=True)
    await conn.execute(lead_timers.delete().where(lead_timers.c.id.in_(pending)))


@dataclass(frozen=True)
class _Entry:
    tenant_id: uuid.UUID
    lead_id: uuid.UUID
    unit_id: uuid.UUID
    rules: SlaPolicy
    clock: Clock


async def _store(conn: AsyncConnection, entries: Sequence[_Entry]) -> None:
    """Upsert the leads' clocks and re-arm their clock timers: one statement each for any
    number of leads (assignment runs arm thousands, a follow-up one)."""
    stmt = pg_insert(lead_sla)
    columns = ("org_unit_id", *_clock_values(entries[0].clock))
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[lead_sla.c.lead_id],
            set_={k: stmt.excluded[k] for k in columns},
        ),
        [
            {
                "lead_id": e.lead_id,
                "tenant_id": e.tenant_id,
                "org_unit_id": e.unit_id,
                **_clock_values(e.clock),
            }
            for e in entries
        ],
    )
    await drop_timers(conn, [e.lead_id for e in entries], CLOCK_KINDS)
    armed = [
        {
            "id": new_id(),
            "tenant_id": e.tenant_id,
            "lead_id": e.lead_id,
            "kind": t.kind,
            "due_time": t.due,
            "payload": t.payload,
        }
        for e in entries
        for t in timers(e.rules, e.clock, str(e.unit_id))
    ]
    if armed:
        await conn.execute(lead_timers.insert(), armed)


async def _save(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    lead_id: uuid.UUID,
    unit_id: uuid.UUID,
    rules: SlaPolicy,
    clock: Clock,
) -> None:
    await _store(conn, [_Entry(tenant_id, lead_id, unit_id, rules, clock)])


async def arm(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    lead_id: uuid.UUID,
    unit_id: uuid.UUID,
    grade: str,
    at: datetime,
) -> Clock:
    """Start the lead's clock at its unit (accepted or assigned at ``at``): first contact
    due, its reminder, and the reclaim at the end of the protection period."""
    rules = await policy(conn, tenant_id)
    clock = start_clock(rules, grade, at)
    await _save(conn, tenant_id, lead_id, unit_id, rules, clock)
    return clock


async def clear(conn: AsyncConnection, lead_ids: Sequence[uuid.UUID]) -> None:
    """The leads left their unit: their clocks and pending timers go, and their open SLA
    alerts (about a clock that no longer runs) are resolved, with no activity named."""
    await conn.execute(lead_sla.delete().where(lead_sla.c.lead_id.in_(lead_ids)))
    await drop_timers(conn, lead_ids)
    await conn.execute(
        sla_alerts.update()
        .where(sla_alerts.c.lead_id.in_(lead_ids), sla_alerts.c.resolve_time.is_(None))
        .values(resolve_time=sa.func.now())
    )


async def locked(conn: AsyncConnection, lead_id: uuid.UUID) -> tuple[Any, Any] | None:
    """The open lead and its clock at its current owner, both locked (lead first); None when
    it has no clock there (not accepted, moved on, or closed)."""
    lead = (
        await conn.execute(sa.select(leads).where(leads.c.id == lead_id).with_for_update())
    ).first()
    if lead is None or lead.status not in OPEN_STATUSES:
        return None
    clock = (
        await conn.execute(
            sa.select(lead_sla).where(lead_sla.c.lead_id == lead_id).with_for_update()
        )
    ).first()
    if clock is None or clock.org_unit_id != lead.owner_org_id:
        return None
    return lead, clock


async def on_follow_up(conn: AsyncConnection, activity: FollowUp) -> Clock | None:
    """A follow-up was logged against the lead (a follow-up hook: activities call it in the
    same transaction as the activity): whatever its kind, the first meets first contact;
    each makes the next one due by the lead's grade, extends the protection period (never
    past the maximum) and re-arms the timers. None: the lead has no clock (not accepted at
    its unit, or closed)."""
    current = await locked(conn, activity.lead_id)
    if current is None:
        return None
    lead, row = current
    rules = await policy(conn, lead.tenant_id)
    clock = follow_up(rules, clock_of(row), activity.at)
    await _save(conn, lead.tenant_id, lead.id, lead.owner_org_id, rules, clock)
    return clock


async def on_assigned(conn: AsyncConnection, rows: Sequence[Any]) -> int:
    """Leads just given to a rep (claim, assignment; ``crm_leads.lead.hooks``): each gets a
    clock at its unit unless it has one there already (an accepted lead's started at
    acceptance) or still waits for its unit to accept it. A lead its unit collected itself
    is supervised from here on. Set-based: an assignment run gives thousands at once.
    Returns how many clocks started."""
    # One array parameter, not thousands of IN parameters to render for each batch.
    ids = sa.cast([r.id for r in rows], ARRAY(UUID(as_uuid=True)))
    waiting = set(
        (
            await conn.execute(
                sa.select(lead_acceptances.c.lead_id).where(
                    lead_acceptances.c.lead_id == sa.any_(ids)
                )
            )
        ).scalars()
    )
    clocked = {
        r.lead_id: r.org_unit_id
        for r in await conn.execute(
            sa.select(lead_sla.c.lead_id, lead_sla.c.org_unit_id).where(
                lead_sla.c.lead_id == sa.any_(ids)
            )
        )
    }
    fresh = [
        r
        for r in rows
        if r.status in OPEN_STATUSES and r.id not in waiting and clocked.get(r.id) != r.owner_org_id
    ]
    if not fresh:
        return 0
    by_tenant: dict[uuid.UUID, SlaPolicy] = {}
    entries: list[_Entry] = []
    for r in fresh:
        if r.tenant_id not in by_tenant:
            by_tenant[r.tenant_id] = await policy(conn, r.tenant_id)
        rules = by_tenant[r.tenant_id]
        clock = start_clock(rules, r.grade, r.assigned_time)
        entries.append(_Entry(r.tenant_id, r.id, r.owner_org_id, rules, clock))
    await _store(conn, entries)
    return len(fresh)
