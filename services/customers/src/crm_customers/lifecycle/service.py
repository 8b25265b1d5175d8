"""Lifecycle use cases: record an order or an activity an event reported, move inactive
customers on (the periodic job), read a customer's lifecycle. Keyword-only functions taking
the connection; they never commit.

The current stage is on the ``customers`` row; the facts (won orders, last order, last
activity) are in ``customer_lifecycle``. Every change writes a ``lifecycle_changes`` row
and stages crm.customers.customer.lifecycle_changed.v1 in the same transaction. An event
handler locks the customer row first, the job claims rows with SKIP LOCKED, so the two
never wait on each other and never both move the same customer."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.customers.v1 import events_pb2
from crm_customers.customer.mapping import lifecycle_stage
from crm_customers.customer.models import customers
from crm_customers.lifecycle import rules
from crm_customers.lifecycle.models import customer_lifecycle, lifecycle_changes
from crm_platform import records
from crm_platform.auth import Principal
from crm_platform.db import Database
from crm_platform.ids import new_id
from crm_platform.outbox import NewEvent, add_events
from crm_platform.pagination import PageRequest

PRODUCER = "customers"
CHANGED = "crm.customers.customer.lifecycle_changed.v1"


@dataclass(frozen=True)
class Cause:
    """The event that reported the order or activity: replies carry its correlation."""

    tenant_id: uuid.UUID
    correlation_id: str
    causation_id: str


@dataclass(frozen=True)
class Change:
    customer_id: uuid.UUID
    tenant_id: uuid.UUID
    org_path: str
    from_stage: str
    to_stage: str
    reason: str


@dataclass(frozen=True)
class Lifecycle:
    customer: Any
    facts: Any | None  # no row: nothing reported yet
    changes: list[Any]


async def _write_changes(
    conn: AsyncConnection, changes: Sequence[Change], *, now: datetime, cause: Cause | None
) -> None:
    """History rows and events of changes already applied to ``customers``."""
    if not changes:
        return
    await conn.execute(
        sa.insert(lifecycle_changes),
        [
            {
                "id": new_id(),
                "tenant_id": ch.tenant_id,
                "customer_id": ch.customer_id,
                "from_stage": ch.from_stage,
                "to_stage": ch.to_stage,
                "reason": ch.reason,
                "change_time": now,
            }
            for ch in changes
        ],
    )
    await add_events(
        conn,
        [
            NewEvent(
                event_type=CHANGED,
                payload=events_pb2.CustomerLifecycleChanged(
                    customer_id=str(ch.customer_id),
                    from_stage=lifecycle_stage(ch.from_stage),
                    to_stage=lifecycle_stage(ch.to_stage),
                    reason=ch.reason,
                ),
                tenant_id=ch.tenant_id,
                org_path=ch.org_path,
                correlation_id=cause.correlation_id if cause else "",
                causation_id=cause.causation_id if cause else "",
            )
            for ch in changes
        ],
        producer=PRODUCER,
    )


async def record(
    *,
    conn: AsyncConnection,
    cause: Cause,
    customer_id: str,
    won_order: bool,
    occurred_at: datetime,
    now: datetime,
    thresholds: rules.Thresholds,
) -> Change | None:
    """Count an activity (and a won order) of a customer of the event's tenant and move
    its stage if the facts now say so. Unknown customers (another tenant's, deleted, or
    none named) are ignored. Redeliveries never reach here (the consumer's inbox)."""
    try:
        cid = uuid.UUID(customer_id)
    except ValueError:
        return None
    customer = (
        await conn.execute(
            sa.select(customers.c.id, customers.c.owner_org_path, customers.c.lifecycle_stage)
            .where(customers.c.id == cid, customers.c.tenant_id == cause.tenant_id)
            .with_for_update()
        )
    ).first()
    if customer is None:
        return None
    table = customer_lifecycle
    stmt = insert(table).values(
        customer_id=cid,
        tenant_id=cause.tenant_id,
        won_orders=1 if won_order else 0,
        last_order_time=occurred_at if won_order else None,
        last_activity_time=occurred_at,
    )
    facts = (
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c.customer_id],
                set_={
                    "won_orders": table.c.won_orders + stmt.excluded.won_orders,
                    # GREATEST ignores NULLs: a late, older event never moves times back.
                    "last_order_time": sa.func.greatest(
                        table.c.last_order_time, stmt.excluded.last_order_time
                    ),
                    "last_activity_time": sa.func.greatest(
                        table.c.last_activity_time, stmt.excluded.last_activity_time
                    ),
                    "update_time": sa.func.now(),
                },
            ).returning(table.c.won_orders, table.c.last_activity_time)
        )
    ).one()
    target = rules.stage(
        rules.Facts(facts.won_orders, facts.last_activity_time), now=now, thresholds=thresholds
    )
    if target == customer.lifecycle_stage:
        return None
    await conn.execute(
        customers.update()
        .where(customers.c.id == cid)
        .values(lifecycle_stage=target, lifecycle_stage_time=now)
    )
    reason = (
        rules.REASON_INACTIVITY
        if target in rules.INACTIVE_STAGES
        else rules.reason(won_order=won_order)
    )
    change = Change(
        cid, cause.tenant_id, customer.owner_org_path, customer.lifecycle_stage, target, reason
    )
    await _write_changes(conn, [change], now=now, cause=cause)
    return change


async def mark_inactive(
    *, conn: AsyncConnection, now: datetime, thresholds: rules.Thresholds, batch_size: int
) -> list[Change]:
    """Move customers who ordered and have been idle past the thresholds to AT_RISK or LOST:
    one UPDATE ... RETURNING over at most ``batch_size`` rows (the longest idle first),
    claimed with SKIP LOCKED so replicas running it at once split the work, and idempotent
    (a customer already in its stage is not selected)."""
    c, f = customers, customer_lifecycle
    target = sa.case(
        (f.c.last_activity_time <= now - thresholds.lost, rules.LOST), else_=rules.AT_RISK
    )
    due = (
        sa.select(c.c.id, c.c.lifecycle_stage.label("from_stage"), target.label("to_stage"))
        .select_from(c.join(f, f.c.customer_id == c.c.id))
        .where(
            f.c.won_orders > 0,
            f.c.last_activity_time <= now - thresholds.at_risk,
            c.c.lifecycle_stage != target,
        )
        .order_by(f.c.last_activity_time)
        .limit(batch_size)
        .with_for_update(of=[c, f], skip_locked=True)
        .cte("due")
    )
    moved = await conn.execute(
        c.update()
        .where(c.c.id == due.c.id)
        .values(lifecycle_stage=due.c.to_stage, lifecycle_stage_time=now)
        .returning(c.c.id, c.c.tenant_id, c.c.owner_org_path, due.c.from_stage, due.c.to_stage)
    )
    changes = [
        Change(
            r.id, r.tenant_id, r.owner_org_path, r.from_stage, r.to_stage, rules.REASON_INACTIVITY
        )
        for r in moved
    ]
    await _write_changes(conn, changes, now=now, cause=None)
    return changes


async def get(
    *, conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID, page: PageRequest
) -> Lifecycle:
    """A customer the caller can see (else NotFound), its facts and a page of its stage
    history, newest first."""
    customer = await records.get_visible(conn, customers, principal, customer_id, kind="customer")
    facts = (
        await conn.execute(
            sa.select(customer_lifecycle).where(customer_lifecycle.c.customer_id == customer.id)
        )
    ).first()
    stmt = (
        sa.select(lifecycle_changes)
        .where(lifecycle_changes.c.customer_id == customer.id)
        .order_by(lifecycle_changes.c.id.desc())
        .limit(page.size + 1)
    )
    if page.after is not None:
        stmt = stmt.where(lifecycle_changes.c.id < page.after)
    return Lifecycle(customer, facts, list((await conn.execute(stmt)).all()))


async def run_inactivity_job(
    db: Database,
    *,
    thresholds: rules.Thresholds,
    batch_size: int,
    now: datetime | None = None,
) -> int:
    """One run of the periodic job (its own transaction): how many customers moved."""
    async with db.unit_of_work() as conn:
        changes = await mark_inactive(
            conn=conn, now=now or datetime.now(UTC), thresholds=thresholds, batch_size=batch_size
        )
    return len(changes)
