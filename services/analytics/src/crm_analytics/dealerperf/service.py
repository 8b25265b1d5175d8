"""Projection updates (from lead events) and report queries. Never commit: each handler runs
in the consumer's transaction together with its inbox row, so an event applies once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2
from crm_analytics.dealerperf import rules
from crm_analytics.dealerperf.models import COUNTERS
from crm_analytics.dealerperf.models import dealer_performance_daily as t
from crm_analytics.dealerperf.models import lead_received as lr
from crm_analytics.dealerperf.rules import Delta, Unit
from crm_platform.auth import Principal, visible_to
from crm_platform.events import ReceivedEvent


def _occurred(event: ReceivedEvent) -> datetime:
    return event.envelope.occurred_at.ToDatetime(tzinfo=UTC)


def _unit(event: ReceivedEvent, org_id: str, org_path: str) -> Unit:
    return Unit(tenant_id=event.tenant_id, org_id=uuid.UUID(org_id), org_path=org_path)


async def on_lead_distributed(conn: AsyncConnection, event: ReceivedEvent) -> None:
    """A manual distribution: the receiving unit got one lead."""
    assert isinstance(event.payload, events_pb2.LeadDistributed)
    p = event.payload
    await _received(conn, [(p.lead_id, _unit(event, p.to_org_id, p.to_org_path))], event)


async def on_lead_batch_distributed(conn: AsyncConnection, event: ReceivedEvent) -> None:
    """Up to 1,000 leads automatic rules landed at their (final) units."""
    assert isinstance(event.payload, events_pb2.LeadBatchDistributed)
    landed = [(x.lead_id, _unit(event, x.to_org_id, x.to_org_path)) for x in event.payload.leads]
    await _received(conn, landed, event)


async def on_lead_accepted(conn: AsyncConnection, event: ReceivedEvent) -> None:
    assert isinstance(event.payload, events_pb2.LeadAccepted)
    p = event.payload
    at = p.accept_time.ToDatetime(tzinfo=UTC) if p.HasField("accept_time") else None
    unit = _unit(event, p.org_unit_id, p.org_unit_path)
    await _apply(conn, [rules.delta(unit, at or _occurred(event), "accepted")])


async def on_lead_rejected(conn: AsyncConnection, event: ReceivedEvent) -> None:
    """Counted at the unit that turned the lead down (the payload's unit, not the parent the
    envelope names), as an expiry when its deadline passed."""
    assert isinstance(event.payload, events_pb2.LeadRejected)
    p = event.payload
    counter = "expired" if p.expired else "rejected"
    unit = _unit(event, p.org_unit_id, p.org_unit_path)
    await _apply(conn, [rules.delta(unit, _occurred(event), counter)])


async def on_lead_reclaimed(conn: AsyncConnection, event: ReceivedEvent) -> None:
    """Counted at the unit that lost the lead (``from``), not the parent pool it went to."""
    assert isinstance(event.payload, events_pb2.LeadReclaimed)
    p = event.payload
    unit = _unit(event, p.from_org_id, p.from_org_path)
    await _apply(conn, [rules.delta(unit, _occurred(event), "reclaimed")])


async def on_lead_sla_warning(conn: AsyncConnection, event: ReceivedEvent) -> None:
    """A reminder before a first-contact or follow-up target, at the unit owning the lead."""
    assert isinstance(event.payload, events_pb2.LeadSlaWarning)
    p = event.payload
    unit = _unit(event, p.org_unit_id, p.org_unit_path)
    await _apply(conn, [rules.delta(unit, _occurred(event), "sla_warnings")])


async def on_lead_sla_breached(conn: AsyncConnection, event: ReceivedEvent) -> None:
    assert isinstance(event.payload, events_pb2.LeadSlaBreached)
    p = event.payload
    unit = _unit(event, p.org_unit_id, p.org_unit_path)
    await _apply(conn, [rules.delta(unit, _occurred(event), "sla_breaches")])


async def on_lead_assigned(conn: AsyncConnection, event: ReceivedEvent) -> None:
    """A lead handed to a rep of its owner unit (assignments and reassignments)."""
    assert isinstance(event.payload, events_pb2.LeadAssigned)
    lead = event.payload.lead
    unit = _unit(event, lead.owner_org_id, lead.owner_org_path)
    await _apply(conn, [rules.delta(unit, _occurred(event), "assigned")])


async def on_lead_batch_assigned(conn: AsyncConnection, event: ReceivedEvent) -> None:
    """An assignment run's leads at one unit: one ``assigned`` delta for all of them."""
    assert isinstance(event.payload, events_pb2.LeadBatchAssigned)
    p = event.payload
    unit = _unit(event, p.org_unit_id, p.org_unit_path)
    await _apply(conn, [rules.delta(unit, _occurred(event), "assigned", len(p.leads))])


async def on_lead_followed_up(conn: AsyncConnection, event: ReceivedEvent) -> None:
    """The earliest activity logged while the receiving unit owns the lead is its first
    contact; time to first contact counts from the lead's arrival there. Leads a unit
    captured itself were never received, so they have no row and are not counted."""
    assert isinstance(event.payload, events_pb2.LeadFollowedUp)
    p = event.payload
    contact = p.occur_time.ToDatetime(tzinfo=UTC)
    row = (
        await conn.execute(
            sa.select(lr).where(lr.c.lead_id == uuid.UUID(p.lead_id)).with_for_update()
        )
    ).one_or_none()
    # The payload has the owner's id only; an activity after the lead left the unit (e.g.
    # logged at the parent after a rejection) is not the receiving unit's contact.
    if row is None or str(row.owner_org_id) != p.owner_org_id:
        return
    previous = row.first_contact_time
    if not rules.is_new_first_contact(
        received=row.received_time, previous=previous, contact=contact
    ):
        return
    await conn.execute(
        lr.update().where(lr.c.lead_id == row.lead_id).values(first_contact_time=contact)
    )
    unit = Unit(tenant_id=row.tenant_id, org_id=row.owner_org_id, org_path=row.owner_org_path)
    await _apply(conn, rules.first_contact_deltas(unit, row.received_time, previous, contact))


async def _received(
    conn: AsyncConnection, landed: Sequence[tuple[str, Unit]], event: ReceivedEvent
) -> None:
    at = _occurred(event)
    latest = {lead_id: unit for lead_id, unit in landed}  # one row per lead per statement
    if not latest:
        return
    stmt = insert(lr).values(
        [
            {
                "lead_id": uuid.UUID(lead_id),
                "tenant_id": unit.tenant_id,
                "owner_org_id": unit.org_id,
                "owner_org_path": unit.org_path,
                "received_time": at,
                "first_contact_time": None,
            }
            for lead_id, unit in latest.items()
        ]
    )
    # A redistribution starts the clock again at the new unit; an older distribution
    # consumed late (redelivery) must not overwrite a newer one.
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[lr.c.lead_id],
            set_={
                "tenant_id": stmt.excluded.tenant_id,
                "owner_org_id": stmt.excluded.owner_org_id,
                "owner_org_path": stmt.excluded.owner_org_path,
                "received_time": stmt.excluded.received_time,
                "first_contact_time": None,
            },
            where=lr.c.received_time < stmt.excluded.received_time,
        )
    )
    await _apply(conn, [rules.delta(unit, at, "received") for _, unit in landed])


async def _apply(conn: AsyncConnection, deltas: Sequence[Delta]) -> None:
    """Add deltas to the daily rows: one set-based upsert for all of them."""
    merged = rules.merge(deltas)
    if not merged:
        return
    stmt = insert(t).values(
        [
            {
                "tenant_id": d.unit.tenant_id,
                "owner_org_id": d.unit.org_id,
                "day": d.day,
                "owner_org_path": d.unit.org_path,
                "first_contact_seconds": d.first_contact_seconds,
                **{name: d.counts.get(name, 0) for name in COUNTERS},
            }
            for d in merged
        ]
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.c.tenant_id, t.c.owner_org_id, t.c.day],
            set_={
                # The latest path wins: a unit moved in the tree shows under its new parent.
                "owner_org_path": stmt.excluded.owner_org_path,
                **{
                    name: t.c[name] + stmt.excluded[name]
                    for name in (*COUNTERS, "first_contact_seconds")
                },
            },
        )
    )


async def report_rows(
    *, conn: AsyncConnection, principal: Principal, start: date | None, end: date | None
) -> list[Any]:
    stmt = sa.select(t).where(visible_to(t, principal)).order_by(t.c.day, t.c.owner_org_path)
    if start:
        stmt = stmt.where(t.c.day >= start)
    if end:
        stmt = stmt.where(t.c.day <= end)
    return list((await conn.execute(stmt)).all())
