"""Assignment inside an org unit: the units' policies (append-only versions, like the
distribution rules), automatic runs over a unit's pool, and manual (re)assignment by a
manager. Keyword-only functions taking the connection never commit; ``run`` owns its
transactions (one per batch)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2
from crm_leads.assignment.models import assignment_cursors, assignment_policies
from crm_leads.assignment.rules import (
    AssignmentPolicy,
    PoolLead,
    check_reps,
    document_json,
    eligible,
    plan,
    rep_states,
)
from crm_leads.distribution.store import visible_unit
from crm_leads.lead import hooks
from crm_leads.lead.mapping import lead_to_proto
from crm_leads.lead.models import OPEN_STATUSES, lead_intents, leads
from crm_leads.lead.service import PRODUCER
from crm_leads.poolrules import service as poolrules
from crm_leads.poolrules.rules import pool_full
from crm_leads.users import service as users
from crm_platform.auth import ROLE_ADMIN, ROLE_MANAGER, Principal, visible_to
from crm_platform.db import Database
from crm_platform.errors import (
    DomainError,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
)
from crm_platform.outbox import NewEvent, add_events
from crm_platform.versioned import append_version

MAX_MANUAL = 1000
RUN_BATCH = 1000
EDITOR_ROLES = frozenset({ROLE_ADMIN, ROLE_MANAGER})

# Set-based (re)assignment: one UPDATE for the batch. The assignee_id guard makes a lead
# claimed or reassigned since it was read match nothing (it is then not in the result).
_ASSIGN = (
    sa.text(
        "UPDATE leads AS l SET assignee_id = u.assignee, assigned_time = now(), "
        "version = l.version + 1, update_time = now() "
        "FROM unnest(CAST(:ids AS uuid[]), CAST(:assignees AS uuid[]), "
        "CAST(:previous AS uuid[])) AS u (id, assignee, previous) "
        "WHERE l.id = u.id AND l.tenant_id = :tenant_id AND l.status IN (1, 2) "
        "AND l.assignee_id IS NOT DISTINCT FROM u.previous "
        "RETURNING " + ", ".join(f"l.{c.name}" for c in leads.c)
    )
    .bindparams(sa.bindparam("tenant_id", type_=leads.c.tenant_id.type))
    .columns(*leads.c)
)


@dataclass(frozen=True)
class StoredPolicy:
    version: int  # 0: none stored (manual assignment only)
    policy: AssignmentPolicy
    author: str = ""
    create_time: datetime | None = None


def require_editor(principal: Principal, unit: Any) -> None:
    """Tenant administrators, or managers whose subtree contains ``unit``."""
    if ROLE_ADMIN in principal.roles:
        return
    if ROLE_MANAGER in principal.roles and principal.can_see(unit.tenant_id, unit.path):
        return
    raise PermissionDenied(
        "only tenant administrators and managers of the org unit may assign its leads",
        reason="ASSIGNMENT_MANAGER_REQUIRED",
    )


async def get_policy(*, conn: AsyncConnection, unit: Any) -> StoredPolicy:
    table = assignment_policies
    row = (
        await conn.execute(
            sa.select(table)
            .where(table.c.tenant_id == unit.tenant_id, table.c.org_unit_id == unit.id)
            .order_by(table.c.version.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return StoredPolicy(0, AssignmentPolicy())
    return StoredPolicy(
        row.version, AssignmentPolicy.model_validate(row.document), row.created_by, row.create_time
    )


async def put_policy(
    *, conn: AsyncConnection, principal: Principal, unit: Any, policy: AssignmentPolicy
) -> StoredPolicy:
    """Store ``policy`` as the unit's next version; every listed rep must be an active rep of
    the unit in the replica (InvalidArgument naming ``reps.N.user_id``)."""
    require_editor(principal, unit)
    reps = await users.active_reps(conn=conn, tenant_id=unit.tenant_id, unit_id=unit.id)
    check_reps(policy, frozenset(reps))
    row = await append_version(
        conn,
        assignment_policies,
        key={"tenant_id": unit.tenant_id, "org_unit_id": unit.id},
        values={"document": document_json(policy), "created_by": principal.subject},
        conflict="the assignment policy is being changed concurrently; retry",
        reason="ASSIGNMENT_POLICY_CONFLICT",
    )
    return StoredPolicy(row.version, policy, principal.subject, row.create_time)


async def _apply(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    moves: Sequence[tuple[uuid.UUID, uuid.UUID, uuid.UUID | None]],
    by: str,
    strategy: str,
) -> list[Any]:
    """Give each (lead, assignee, previous holder) in one UPDATE; previous holders start their
    cool-down; ``crm.leads.lead.assigned.v1`` per lead."""
    if not moves:
        return []
    rows = list(
        await conn.execute(
            _ASSIGN,
            {
                "ids": [m[0] for m in moves],
                "assignees": [m[1] for m in moves],
                "previous": [m[2] for m in moves],
                "tenant_id": tenant_id,
            },
        )
    )
    previous = {m[0]: m[2] for m in moves}
    await hooks.assigned(conn, rows)
    lost = [(r.id, p) for r in rows if (p := previous[r.id]) is not None]
    await poolrules.record_releases(conn=conn, tenant_id=tenant_id, pairs=lost, reason="reassigned")
    # One statement for the batch's events, not a round trip per lead.
    await add_events(
        conn,
        [
            NewEvent(
                event_type="crm.leads.lead.assigned.v1",
                payload=events_pb2.LeadAssigned(
                    lead=lead_to_proto(row),
                    assignee_id=str(row.assignee_id),
                    previous_assignee_id="" if previous[row.id] is None else str(previous[row.id]),
                    by=by,
                    strategy=strategy,
                ),
                tenant_id=row.tenant_id,
                org_path=row.owner_org_path,
            )
            for row in rows
        ],
        producer=PRODUCER,
    )
    return rows


@dataclass
class RunResult:
    assigned: int = 0
    # Leads a run looked at and left in the pool, by reason (rules.LEFT_*).
    left: Counter[str] = field(default_factory=Counter)
    by_assignee: Counter[str] = field(default_factory=Counter)

    def json(self) -> dict[str, Any]:
        return {
            "assigned": self.assigned,
            "left_in_pool": dict(sorted(self.left.items())),
            "by_assignee": dict(sorted(self.by_assignee.items())),
        }


def _pool_batch(
    tenant_id: uuid.UUID, unit_id: uuid.UUID, unit_path: str, after: uuid.UUID | None
) -> Any:
    # The product interest is the first enquiry's, as distribution reads it.
    product = (
        sa.select(lead_intents.c.product_interest)
        .where(lead_intents.c.lead_id == leads.c.id, lead_intents.c.created_lead)
        .limit(1)
        .scalar_subquery()
    )
    stmt = sa.select(leads.c.id, sa.func.coalesce(product, "").label("product_line")).where(
        leads.c.tenant_id == tenant_id,
        # The exact path as well as the id: ix_leads_pool (tenant, path, id) then reads just
        # this unit's pool in id order, where the id alone made it scan the tenant's pool.
        leads.c.owner_org_path == unit_path,
        leads.c.owner_org_id == unit_id,
        leads.c.assignee_id.is_(None),
        leads.c.status.in_(OPEN_STATUSES),
    )
    if after is not None:
        stmt = stmt.where(leads.c.id > after)
    # SKIP LOCKED: a lead being claimed right now is simply not part of this run.
    return stmt.order_by(leads.c.id).limit(RUN_BATCH).with_for_update(of=leads, skip_locked=True)


async def _locked_cursor(conn: AsyncConnection, tenant_id: uuid.UUID, unit_id: uuid.UUID) -> int:
    table = assignment_cursors
    await conn.execute(
        pg_insert(table).values(tenant_id=tenant_id, org_unit_id=unit_id).on_conflict_do_nothing()
    )
    cursor: int = (
        await conn.execute(
            sa.select(table.c.cursor)
            .where(table.c.tenant_id == tenant_id, table.c.org_unit_id == unit_id)
            .with_for_update()
        )
    ).scalar_one()
    return cursor


async def _run_batch(
    conn: AsyncConnection, principal: Principal, unit_id: uuid.UUID, after: uuid.UUID | None
) -> tuple[RunResult, uuid.UUID | None]:
    unit = await visible_unit(conn=conn, principal=principal, unit_id=unit_id)
    require_editor(principal, unit)
    stored = await get_policy(conn=conn, unit=unit)
    policy = stored.policy
    if stored.version == 0 or policy.strategy == "manual":
        raise FailedPrecondition(
            f"org unit {unit_id} assigns by hand (no automatic assignment policy)",
            reason="ASSIGNMENT_POLICY_MANUAL",
            metadata={"org_unit": str(unit_id)},
        )
    # The cursor row is the run's lock: concurrent runs of one unit take turns.
    cursor = await _locked_cursor(conn, unit.tenant_id, unit.id)
    active = await users.active_reps(conn=conn, tenant_id=unit.tenant_id, unit_id=unit.id)
    reps = eligible(policy, frozenset(active))
    ids = [uuid.UUID(r.user_id) for r in reps]
    limits = await poolrules.limits(conn=conn, tenant_id=unit.tenant_id)
    await poolrules.lock_holders(conn=conn, user_ids=ids)
    held = await poolrules.held_counts(conn=conn, tenant_id=unit.tenant_id, user_ids=ids)
    batch = [
        PoolLead(row.id, row.product_line)
        for row in await conn.execute(_pool_batch(unit.tenant_id, unit.id, unit.path, after))
    ]
    decided = plan(policy.strategy, rep_states(reps, held), batch, cap=limits.cap, cursor=cursor)
    rows = await _apply(
        conn,
        tenant_id=unit.tenant_id,
        moves=[(lead, rep, None) for lead, rep in decided.assignments],
        by=principal.subject,
        strategy=policy.strategy,
    )
    await conn.execute(
        assignment_cursors.update()
        .where(
            assignment_cursors.c.tenant_id == unit.tenant_id,
            assignment_cursors.c.org_unit_id == unit.id,
        )
        .values(cursor=decided.cursor)
    )
    result = RunResult(len(rows), decided.left, Counter(str(r.assignee_id) for r in rows))
    more = len(batch) == RUN_BATCH and bool(rows)
    return result, (batch[-1].lead_id if more else None)


async def run(db: Database, *, principal: Principal, unit_id: uuid.UUID) -> RunResult:
    """Assign the unit's pool (its own open, unheld leads) by its policy, in batches of
    ``RUN_BATCH``, each its own transaction; stops when the pool is done or nobody can take
    more (every eligible rep at the cap)."""
    total = RunResult()
    after: uuid.UUID | None = None
    while True:
        async with db.unit_of_work() as conn:
            result, after = await _run_batch(conn, principal, unit_id, after)
        total.assigned += result.assigned
        total.left.update(result.left)
        total.by_assignee.update(result.by_assignee)
        if after is None:
            return total


@dataclass(frozen=True)
class AssignResult:
    index: int
    lead_id: str
    lead: Any | None = None
    error: DomainError | None = None


def _refusal(row: Any | None, lead_id: uuid.UUID, assignee: Any | None) -> DomainError | None:
    if row is None:
        return NotFound(
            f"lead {lead_id} not found", reason="LEAD_NOT_FOUND", metadata={"lead": str(lead_id)}
        )
    if row.status not in OPEN_STATUSES:
        return FailedPrecondition(f"lead {lead_id} is not open", reason="LEAD_NOT_OPEN")
    if not users.is_active_rep_of(assignee, row.owner_org_id):
        return FailedPrecondition(
            "the assignee is not an active rep of the lead's owner org unit",
            reason="ASSIGNEE_NOT_IN_UNIT",
        )
    return None


async def assign_manually(
    *,
    conn: AsyncConnection,
    principal: Principal,
    lead_ids: Sequence[uuid.UUID],
    assignee_id: uuid.UUID,
) -> list[AssignResult]:
    """Give visible leads to one rep of their owner unit (managers and administrators; a lead
    another rep holds is reassigned, and that rep's cool-down starts). One result per lead, in
    order; a refused lead (not found, not open, assignee not a rep of its unit, the assignee's
    private pool full) never blocks the others."""
    principal.require_any(EDITOR_ROLES)
    found: dict[uuid.UUID, Any] = {
        row.id: row
        for row in await conn.execute(
            sa.select(leads)
            .where(leads.c.id.in_(list(lead_ids)), visible_to(leads, principal))
            .order_by(leads.c.id)
            .with_for_update()
        )
    }
    assignee = (
        await users.get_many(conn=conn, tenant_id=principal.tenant_id, user_ids=[assignee_id])
    ).get(assignee_id)
    limits = await poolrules.limits(conn=conn, tenant_id=principal.tenant_id)
    await poolrules.lock_holders(conn=conn, user_ids=[assignee_id])
    held = (
        await poolrules.held_counts(
            conn=conn, tenant_id=principal.tenant_id, user_ids=[assignee_id]
        )
    )[assignee_id]
    results: list[AssignResult] = []
    moves: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID | None]] = []
    for index, lead_id in enumerate(lead_ids):
        row: Any = found.get(lead_id)
        error = _refusal(row, lead_id, assignee)
        # Already the assignee's: nothing to change (and no event).
        if error is None and row.assignee_id != assignee_id:
            if held >= limits.cap:
                error = pool_full(assignee_id, limits)
            else:
                held += 1
                moves.append((lead_id, assignee_id, row.assignee_id))
        results.append(AssignResult(index, str(lead_id), row if error is None else None, error))
    updated = {
        r.id: r
        for r in await _apply(
            conn,
            tenant_id=principal.tenant_id,
            moves=moves,
            by=principal.subject,
            strategy="manual",
        )
    }
    return [
        AssignResult(r.index, r.lead_id, updated.get(uuid.UUID(r.lead_id), r.lead), r.error)
        for r in results
    ]
