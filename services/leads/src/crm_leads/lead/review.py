"""The review queue, reviewers' decisions and stale-lead closing. Like crm_leads.lead.service,
keyword-only functions taking the connection; they never commit (except ``close_stale``,
which runs its own transactions, one per batch)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2, lead_pb2
from crm_leads.lead.cleansing import INVALID, UNVERIFIED, VERIFIED
from crm_leads.lead.mapping import lead_to_proto
from crm_leads.lead.models import OPEN_STATUSES, leads
from crm_leads.lead.service import PRODUCER
from crm_leads.tenantsettings.models import lead_settings
from crm_platform import records
from crm_platform.auth import ROLE_ADMIN, ROLE_MANAGER, Principal, visible_to
from crm_platform.db import Database
from crm_platform.errors import AlreadyExists, FailedPrecondition
from crm_platform.outbox import add_event
from crm_platform.pagination import PageRequest

log = logging.getLogger(__name__)

REVIEWER_ROLES = frozenset({ROLE_ADMIN, ROLE_MANAGER})
DECISIONS = {"VERIFIED": VERIFIED, "INVALID": INVALID}
REVIEW_FILTER = "review"  # page tokens of the queue are not valid for the lead list
CLOSED = lead_pb2.LEAD_STATUS_CLOSED
STALE_BATCH = 500


async def review_page(
    *, conn: AsyncConnection, principal: Principal, page: PageRequest
) -> list[Any]:
    """UNVERIFIED open leads of the caller's subtree, oldest first, keyset-paged (size+1
    rows for ``page_of``)."""
    principal.require_any(REVIEWER_ROLES)
    stmt = (
        sa.select(leads)
        .where(
            visible_to(leads, principal),
            leads.c.verification == UNVERIFIED,
            leads.c.status != CLOSED,
        )
        .order_by(leads.c.id)
        .limit(page.size + 1)
    )
    if page.after is not None:
        stmt = stmt.where(leads.c.id > page.after)
    return list((await conn.execute(stmt)).all())


async def decide(
    *,
    conn: AsyncConnection,
    principal: Principal,
    lead_id: uuid.UUID,
    decision: int,
    note: str,
) -> Any:
    """Record a reviewer's decision on an UNVERIFIED lead; INVALID also closes it."""
    principal.require_any(REVIEWER_ROLES)
    visible = await records.get_visible(conn, leads, principal, lead_id, kind="lead")
    # Locked, so two reviewers deciding at once cannot both succeed.
    current = (
        await conn.execute(sa.select(leads).where(leads.c.id == visible.id).with_for_update())
    ).one()
    if current.verification != UNVERIFIED:
        raise AlreadyExists(
            f"lead {lead_id} was already reviewed",
            reason="LEAD_ALREADY_REVIEWED",
            metadata={"lead": str(lead_id)},
        )
    if current.status == CLOSED:
        raise FailedPrecondition(
            f"lead {lead_id} is closed", reason="LEAD_CLOSED", metadata={"lead": str(lead_id)}
        )
    closing = {"status": CLOSED, "closed_reason": "invalid"} if decision == INVALID else {}
    row = (
        await conn.execute(
            leads.update()
            .where(leads.c.id == current.id)
            .values(
                verification=decision,
                verification_note=note,
                version=leads.c.version + 1,
                update_time=sa.func.now(),
                **closing,
            )
            .returning(*leads.c)
        )
    ).one()
    lead = lead_to_proto(row)
    await _event(
        conn,
        row,
        "crm.leads.lead.verified.v1",
        events_pb2.LeadVerified(lead=lead, previous_verification=current.verification, note=note),
    )
    if closing:
        await _event(
            conn,
            row,
            "crm.leads.lead.closed.v1",
            events_pb2.LeadClosed(lead=lead, reason="invalid"),
        )
    return row


async def close_stale(db: Database, *, older_than_days: int, batch: int = STALE_BATCH) -> int:
    """Close NEW/QUALIFIED leads not updated for their tenant's ``stale_lead_days``
    (``older_than_days``, the service default, for a tenant without one); returns how many.

    Each batch claims its rows with FOR UPDATE SKIP LOCKED, so replicas running this at
    the same time take disjoint rows, and a row another replica closed meanwhile fails the
    status condition when re-checked: every lead is closed, with one event, exactly once.
    Each batch commits with its events; a crash loses nothing (the next run finds the rest)."""
    days = sa.func.coalesce(lead_settings.c.stale_lead_days, older_than_days)
    # The shortest period any tenant has, computed once per statement: a bound on
    # update_time alone, so the partial index of open leads still narrows the scan.
    shortest = sa.select(
        sa.func.least(older_than_days, sa.func.min(lead_settings.c.stale_lead_days))
    ).scalar_subquery()
    stale = (
        sa.select(leads.c.id)
        .select_from(leads.outerjoin(lead_settings, lead_settings.c.tenant_id == leads.c.tenant_id))
        .where(
            leads.c.status.in_(OPEN_STATUSES),
            leads.c.update_time < sa.func.now() - sa.func.make_interval(0, 0, 0, shortest),
            leads.c.update_time < sa.func.now() - sa.func.make_interval(0, 0, 0, days),
        )
        .limit(batch)
        # OF leads: the settings row is only read (and is the nullable side of the join).
        .with_for_update(of=leads, skip_locked=True)
    )
    closed = 0
    while True:
        async with db.unit_of_work() as conn:
            rows = (
                await conn.execute(
                    leads.update()
                    .where(leads.c.id.in_(stale), leads.c.status.in_(OPEN_STATUSES))
                    .values(
                        status=CLOSED,
                        closed_reason="stale",
                        version=leads.c.version + 1,
                        update_time=sa.func.now(),
                    )
                    .returning(*leads.c)
                )
            ).all()
            for row in rows:
                await _event(
                    conn,
                    row,
                    "crm.leads.lead.closed.v1",
                    events_pb2.LeadClosed(lead=lead_to_proto(row), reason="stale"),
                )
        closed += len(rows)
        if len(rows) < batch:
            if closed:
                log.info("closed %d stale leads", closed)
            return closed


async def _event(conn: AsyncConnection, row: Any, event_type: str, payload: Any) -> None:
    await add_event(
        conn,
        event_type=event_type,
        payload=payload,
        tenant_id=row.tenant_id,
        org_path=row.owner_org_path,
        producer=PRODUCER,
    )
