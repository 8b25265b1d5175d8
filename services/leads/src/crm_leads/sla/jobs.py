"""The timer job: every replica runs it every few seconds (``SLA_TIMER_POLL_SECONDS``).

Each batch claims due, unfired timers with FOR UPDATE SKIP LOCKED, marks them fired and
fires each one (its effect, its event and, for a reminder or a breach, its alert in the SLA
inbox) in the same transaction, so with any number of replicas a timer fires exactly once,
and a crash before the commit leaves it to fire again.
A timer only acts if the lead's state still calls for it (checked under the lead's lock):
one superseded by a follow-up, an acceptance or a move does nothing. A timer whose effect
fails is retried later (its own savepoint rolls back; the batch goes on), up to
``MAX_ATTEMPTS`` times."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2
from crm_leads.acceptance import flows as acceptance
from crm_leads.lead.service import PRODUCER
from crm_leads.sla import alerts, service
from crm_leads.sla.alert_rules import BREACH, ESCALATION_ROLE, WARNING, AlertKind
from crm_leads.sla.models import lead_timers
from crm_leads.sla.rules import (
    ACCEPTANCE_DEADLINE,
    FIRST_CONTACT_DUE,
    FOLLOW_UP_DUE,
    RECLAIM,
    REMINDER,
    target_due,
)
from crm_platform.db import Database
from crm_platform.outbox import add_event
from crm_platform.protos import timestamp

log = logging.getLogger(__name__)

BATCH = 50  # timers per transaction: small, so a batch's locks are short
MAX_ATTEMPTS = 5
RETRY_AFTER = timedelta(minutes=1)
SLA_KINDS = {
    FIRST_CONTACT_DUE: events_pb2.LEAD_SLA_KIND_FIRST_CONTACT,
    FOLLOW_UP_DUE: events_pb2.LEAD_SLA_KIND_FOLLOW_UP,
}


async def fire_due(
    db: Database,
    *,
    now: datetime | None = None,
    batch: int = BATCH,
    tenant_id: uuid.UUID | None = None,
) -> Counter[str]:
    """Fire every timer due at ``now`` (default: the clock); returns how many of each kind
    had an effect. ``tenant_id`` limits it to one tenant (tests, manual runs)."""
    effects: Counter[str] = Counter()
    while True:
        at = now or datetime.now(UTC)
        claim = (
            sa.select(lead_timers)
            .where(lead_timers.c.fired_time.is_(None), lead_timers.c.due_time <= at)
            .order_by(lead_timers.c.due_time)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        if tenant_id is not None:
            claim = claim.where(lead_timers.c.tenant_id == tenant_id)
        async with db.unit_of_work() as conn:
            timers = (await conn.execute(claim)).all()
            if timers:
                # Marked first: whatever the effects delete of the lead's unfired timers
                # never includes the ones being fired.
                await conn.execute(
                    lead_timers.update()
                    .where(lead_timers.c.id.in_([t.id for t in timers]))
                    .values(fired_time=at)
                )
            for timer in timers:
                try:
                    async with conn.begin_nested():
                        if await fire(conn, timer, at):
                            effects[timer.kind] += 1
                except Exception as exc:
                    log.exception("timer %s (%s) failed", timer.id, timer.kind)
                    await _failed(conn, timer, at, exc)
        if len(timers) < batch:
            if effects:
                log.info("fired timers: %s", dict(effects))
            return effects


async def _failed(conn: AsyncConnection, timer: Any, at: datetime, exc: Exception) -> None:
    attempts = timer.attempts + 1
    retry = attempts < MAX_ATTEMPTS
    await conn.execute(
        lead_timers.update()
        .where(lead_timers.c.id == timer.id)
        .values(
            attempts=attempts,
            last_error=repr(exc)[:500],
            # Given up after MAX_ATTEMPTS: it stays marked fired, with its error.
            fired_time=None if retry else at,
            due_time=at + RETRY_AFTER * attempts if retry else timer.due_time,
        )
    )


async def fire(conn: AsyncConnection, timer: Any, now: datetime) -> bool:
    """One timer's effect and event; False when the lead's state no longer calls for it."""
    unit_id = uuid.UUID(timer.payload["org_unit_id"])
    if timer.kind == ACCEPTANCE_DEADLINE:
        return await acceptance.expire(conn, lead_id=timer.lead_id, unit_id=unit_id, now=now)
    current = await service.locked(conn, timer.lead_id)
    if current is None or current[0].owner_org_id != unit_id:
        return False
    lead, row = current
    clock = service.clock_of(row)
    if timer.kind == RECLAIM:
        if clock.protect_until is None or clock.protect_until > now:
            return False  # extended by a follow-up: a later reclaim timer is armed
        return await acceptance.reclaim(conn, lead=lead, protect_until=clock.protect_until, now=now)
    if timer.kind == REMINDER:
        target = timer.payload["target"]
        due = datetime.fromisoformat(timer.payload["due"])
        if target_due(clock, target) != due:
            return False
        await _raise_alert(conn, lead, WARNING, target, due, now)
        return True
    if timer.kind in SLA_KINDS:
        breach = target_due(clock, timer.kind)
        if breach is None or breach != timer.due_time:
            return False
        await _raise_alert(conn, lead, BREACH, timer.kind, breach, now)
        return True
    log.warning("timer %s has an unknown kind %r", timer.id, timer.kind)
    return False


async def _raise_alert(
    conn: AsyncConnection, lead: Any, alert: AlertKind, kind: str, due: datetime, now: datetime
) -> None:
    """The warning or breach of the lead's ``kind`` target: its event, and the alert in the
    SLA inbox for whoever it is addressed to (``alert_rules``)."""
    common: dict[str, Any] = {
        "lead_id": str(lead.id),
        "org_unit_id": str(lead.owner_org_id),
        "org_unit_path": lead.owner_org_path,
        "kind": SLA_KINDS[kind],
        "due_time": timestamp(due),
        "assignee_id": "" if lead.assignee_id is None else str(lead.assignee_id),
    }
    payload: events_pb2.LeadSlaWarning | events_pb2.LeadSlaBreached
    if alert == BREACH:
        # Escalation: the managers of the lead's owner unit.
        event_type = "crm.leads.lead.sla_breached.v1"
        payload = events_pb2.LeadSlaBreached(
            **common, escalate_to_role=ESCALATION_ROLE, escalate_to_org_id=str(lead.owner_org_id)
        )
    else:
        event_type = "crm.leads.lead.sla_warning.v1"
        payload = events_pb2.LeadSlaWarning(**common)
    await alerts.record(conn, lead=lead, kind=alert, target=kind, due=due, at=now)
    await add_event(
        conn,
        event_type=event_type,
        payload=payload,
        tenant_id=lead.tenant_id,
        org_path=lead.owner_org_path,
        producer=PRODUCER,
    )
