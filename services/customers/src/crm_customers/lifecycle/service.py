"""Lifecycle use cases: record an order or an activity an event reported, move inactive
customers on (the periodic job), read a customer's lifecycle. Keyword-only functions taking
the connection; they never commit.

The current stage is on the ``customers`` row; the facts (won orders, last order, last
activity) are in ``customer_lifecycle``. Every change writes a ``lifecycle_changes`` row,
stages crm.customers.customer.lifecycle_changed.v1 and swaps the customer's stage system
tag (``tagging.stage_tag``: the new stage's attached, the old one's detached) in the same
transaction. An event handler locks the customer row first, the job claims rows with SKIP
LOCKED, so the two never wait on each other and never both move the same customer."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.customers.v1 import events_pb2
from crm_customers.customer import segments, tagging
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
ACTOR = "system:lifecycle"  # tagged_by of the stage tags


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
    conn: AsyncConnection,
    changes: Sequence[Change],
    *,
    now: datetime,
    causes: Sequence[Cause | None],
) -> None:
    """History rows and events of changes already applied to ``customers``; ``causes[i]`` is
    the event that caused ``changes[i]`` (None: the inactivity job)."""
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
            for ch, cause in zip(changes, causes, strict=True)
        ],
        producer=PRODUCER,
    )


async def _tag_stages(
    conn: AsyncConnection, moved: Sequence[Change], causes: Sequence[Cause | None]
) -> None:
    """Each moved customer's stage tag: ``moved`` holds one change per customer, its last,
    and ``causes[i]`` the event behind ``moved[i]``."""
    await segments.replace_system_tags(
        conn=conn,
        wanted=[
            segments.SystemTag(
                customer_id=ch.customer_id,
                tenant_id=ch.tenant_id,
                org_path=ch.org_path,
                name=tagging.stage_tag(ch.to_stage),
                correlation_id=cause.correlation_id if cause else "",
                causation_id=cause.causation_id if cause else "",
            )
            for ch, cause in zip(moved, causes, strict=True)
        ],
        family=tagging.STAGE_TAGS,
        actor=ACTOR,
    )


@dataclass(frozen=True)
class Report:
    """An order or activity an event reported about a customer (by id, as the event had it)."""

    cause: Cause
    customer_id: str
    won_order: bool
    occurred_at: datetime


_c, _f = customers, customer_lifecycle
# Customers in id order (one lock order for every batch) with their facts, if any.
_LOCK_WITH_FACTS = (
    sa.select(
        _c.c.id,
        _c.c.tenant_id,
        _c.c.owner_org_path,
        _c.c.lifecycle_stage,
        _f.c.won_orders,
        _f.c.last_order_time,
        _f.c.last_activity_time,
    )
    .select_from(_c.outerjoin(_f, _f.c.customer_id == _c.c.id))
    .where(_c.c.id == sa.any_(sa.bindparam("ids", type_=sa.ARRAY(UUID(as_uuid=True)))))
    .order_by(_c.c.id)
    .with_for_update(of=_c)
)
_upsert = insert(_f)
# Absolute values: the customer rows are locked, so the facts read with them are current.
_SET_FACTS = _upsert.on_conflict_do_update(
    index_elements=[_f.c.customer_id],
    set_={
        "won_orders": _upsert.excluded.won_orders,
        "last_order_time": _upsert.excluded.last_order_time,
        "last_activity_time": _upsert.excluded.last_activity_time,
        "update_time": sa.func.now(),
    },
)
_SET_STAGE = (
    _c.update()
    .where(_c.c.id == sa.bindparam("b_id"))
    .values(lifecycle_stage=sa.bindparam("b_stage"), lifecycle_stage_time=sa.bindparam("b_time"))
)


async def record_many(
    *,
    conn: AsyncConnection,
    reports: Sequence[Report],
    now: datetime,
    thresholds: rules.Thresholds,
) -> list[Change]:
    """Count the reported activities (and won orders) of customers of each report's tenant
    and move their stages, reports applied in order: the same facts, changes and events as
    one report at a time, in at most ten statements however many. Unknown customers
    (another tenant's, deleted, or none named) are ignored. Redeliveries never reach here
    (the consumer's inbox)."""
    by_customer: dict[uuid.UUID, list[Report]] = {}
    for report in reports:
        try:
            cid = uuid.UUID(report.customer_id)
        except ValueError:
            continue
        by_customer.setdefault(cid, []).append(report)
    if not by_customer:
        return []
    locked = (await conn.execute(_LOCK_WITH_FACTS, {"ids": sorted(by_customer)})).all()
    facts: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []
    changes: list[Change] = []
    causes: list[Cause | None] = []
    finals: list[Change] = []
    final_causes: list[Cause | None] = []
    for row in locked:
        mine = [r for r in by_customer[row.id] if r.cause.tenant_id == row.tenant_id]
        if not mine:
            continue
        tally, moves = rules.fold(
            row.lifecycle_stage,
            rules.Tally(row.won_orders or 0, row.last_order_time, row.last_activity_time),
            [rules.Reported(r.won_order, r.occurred_at) for r in mine],
            now=now,
            thresholds=thresholds,
        )
        facts.append(
            {
                "customer_id": row.id,
                "tenant_id": row.tenant_id,
                "won_orders": tally.won_orders,
                "last_order_time": tally.last_order_time,
                "last_activity_time": tally.last_activity_time,
            }
        )
        if not moves:
            continue
        stages.append({"b_id": row.id, "b_stage": moves[-1].to_stage, "b_time": now})
        for move in moves:
            changes.append(
                Change(
                    row.id,
                    row.tenant_id,
                    row.owner_org_path,
                    move.from_stage,
                    move.to_stage,
                    move.reason,
                )
            )
            causes.append(mine[move.report].cause)
        finals.append(changes[-1])
        final_causes.append(causes[-1])
    if facts:
        await conn.execute(_SET_FACTS, facts)
    if stages:
        await conn.execute(_SET_STAGE, stages)
    await _write_changes(conn, changes, now=now, causes=causes)
    await _tag_stages(conn, finals, final_causes)
    return changes


async def mark_inactive(
    *, conn: AsyncConnection, now: datetime, thresholds: rules.Thresholds, batch_size: int
) -> list[Change]:
    """Move customers who ordered and have been idle past the thresholds to AT_RISK or LOST:
    one UPDATE ... RETURNING over at most ``batch_size`` rows (the longest idle first),
    claimed with SKIP LOCKED so replicas running it at once split the work, and idempotent
    (a customer already in its stage is not selected); then their stage tags, set-based."""
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
    await _write_changes(conn, changes, now=now, causes=[None] * len(changes))
    await _tag_stages(conn, changes, [None] * len(changes))
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
