"""Projection updates (from events) and report queries. Never commit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2
from crm_analytics.leadcounts.models import lead_counts_daily as t
from crm_platform.auth import Principal, visible_to
from crm_platform.events import ReceivedEvent


async def on_leads_created(conn: AsyncConnection, events: Sequence[ReceivedEvent]) -> None:
    """+1 per lead for its owning org unit on the day it was created, for a whole fetch of
    ``lead.created`` events (a batch consumer): one upsert per (unit, day), in the
    consumer's transaction with the inbox rows, so each lead counts exactly once."""
    counts: Counter[tuple[str, str, str, date]] = Counter()
    for event in events:
        assert isinstance(event.payload, events_pb2.LeadCreated)
        lead = event.payload.lead
        day = lead.create_time.ToDatetime().date()
        counts[(lead.tenant_id, lead.owner_org_id, lead.owner_org_path, day)] += 1
    # Sorted: concurrent consumers' upserts then lock the counter rows in one order.
    for (tenant_id, org_id, org_path, day), count in sorted(counts.items()):
        await _add(
            conn, tenant_id=tenant_id, org_id=org_id, org_path=org_path, day=day, count=count
        )


async def on_lead_batch_created(conn: AsyncConnection, event: ReceivedEvent) -> None:
    """+N for a bulk import's batch event (up to 1,000 new leads of one org unit)."""
    assert isinstance(event.payload, events_pb2.LeadBatchCreated)
    batch = event.payload
    await _add(
        conn,
        tenant_id=batch.tenant_id,
        org_id=batch.owner_org_id,
        org_path=batch.owner_org_path,
        day=event.envelope.occurred_at.ToDatetime().date(),
        count=len(batch.leads),
    )


async def _add(
    conn: AsyncConnection, *, tenant_id: str, org_id: str, org_path: str, day: date, count: int
) -> None:
    stmt = insert(t).values(
        tenant_id=tenant_id,
        owner_org_id=org_id,
        day=day,
        owner_org_path=org_path,
        lead_count=count,
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.c.tenant_id, t.c.owner_org_id, t.c.day],
            set_={
                "lead_count": t.c.lead_count + stmt.excluded.lead_count,
                "owner_org_path": stmt.excluded.owner_org_path,
            },
        )
    )


async def lead_counts(
    *, conn: AsyncConnection, principal: Principal, start: date | None, end: date | None
) -> list[Any]:
    stmt = sa.select(t).where(visible_to(t, principal)).order_by(t.c.day, t.c.owner_org_path)
    if start:
        stmt = stmt.where(t.c.day >= start)
    if end:
        stmt = stmt.where(t.c.day <= end)
    return list((await conn.execute(stmt)).all())
