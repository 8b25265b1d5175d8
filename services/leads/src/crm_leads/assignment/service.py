"""Assignment inside an org unit: the units' policies (append-only versions, like the
distribution rules), automatic runs over a unit's pool or over every pool of a subtree, and
manual (re)assignment by a manager. Keyword-only functions taking the connection never
commit; ``run`` and ``run_subtree`` own their transactions (one per batch)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2
from crm_leads.assignment.models import assignment_policies
from crm_leads.assignment.rules import (
    AssignmentPolicy,
    PoolLead,
    UnitPlan,
    UnitPool,
    check_reps,
    document_json,
    eligible,
    plan_units,
    rep_states,
)
from crm_leads.distribution.store import visible_unit
from crm_leads.lead import hooks
from crm_leads.lead.mapping import lead_to_proto
from crm_leads.lead.models import OPEN_STATUSES, leads
from crm_leads.lead.service import PRODUCER
from crm_leads.orgtree import service as orgtree
from crm_leads.poolrules import service as poolrules
from crm_leads.poolrules.rules import pool_full
from crm_leads.users import service as users
from crm_platform.auth import ROLE_ADMIN, ROLE_MANAGER, ROLE_REP, Principal, visible_to
from crm_platform.db import Database
from crm_platform.errors import (
    DomainError,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
)
from crm_platform.outbox import NewEvent, add_events, batches
from crm_platform.protos import timestamp
from crm_platform.versioned import append_version

MAX_MANUAL = 1000
# Pooled leads per run transaction, across however many units they belong to.
RUN_BATCH = 4000
# Side-by-side batch loops of one subtree run, over disjoint ranges of its units.
RUN_WORKERS = 4
# Why a subtree run skipped a unit.
SKIP_NO_POLICY = "ASSIGNMENT_POLICY_MISSING"
SKIP_MANUAL = "ASSIGNMENT_POLICY_MANUAL"
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


@dataclass(frozen=True, slots=True)
class Move:
    lead_id: uuid.UUID
    assignee_id: uuid.UUID
    previous: uuid.UUID | None  # the rep it is taken from (a manual reassignment)
    strategy: str  # the policy strategy that decided it, or "manual"


async def _apply(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    moves: Sequence[Move],
    by: str,
    batched: bool = False,
) -> list[Any]:
    """Give each lead to its assignee in one UPDATE, whatever units the leads are in;
    previous holders start their cool-down. Events: ``crm.leads.lead.assigned.v1`` per lead,
    or with ``batched`` (assignment runs) ``crm.leads.lead_batch.assigned.v1`` per unit and
    up to ``BATCH_EVENT_ITEMS`` leads."""
    if not moves:
        return []
    rows = list(
        await conn.execute(
            _ASSIGN,
            {
                "ids": [m.lead_id for m in moves],
                "assignees": [m.assignee_id for m in moves],
                "previous": [m.previous for m in moves],
                "tenant_id": tenant_id,
            },
        )
    )
    by_lead = {m.lead_id: m for m in moves}
    await hooks.assigned(conn, rows)
    lost = [(r.id, p) for r in rows if (p := by_lead[r.id].previous) is not None]
    await poolrules.record_releases(conn=conn, tenant_id=tenant_id, pairs=lost, reason="reassigned")
    # One statement for the batch's events, not a round trip per lead.
    events = (
        _batch_events(rows, by_lead, by)
        if batched
        else [
            NewEvent(
                event_type="crm.leads.lead.assigned.v1",
                payload=events_pb2.LeadAssigned(
                    lead=lead_to_proto(row),
                    assignee_id=str(row.assignee_id),
                    previous_assignee_id=""
                    if (move := by_lead[row.id]).previous is None
                    else str(move.previous),
                    by=by,
                    strategy=move.strategy,
                ),
                tenant_id=row.tenant_id,
                org_path=row.owner_org_path,
            )
            for row in rows
        ]
    )
    await add_events(conn, events, producer=PRODUCER)
    return rows


def _batch_events(
    rows: Sequence[Any], by_lead: Mapping[uuid.UUID, Move], by: str
) -> list[NewEvent]:
    """A run's assignments as LeadBatchAssigned events: one per unit (its path on the
    envelope, so no sibling sees another's) and strategy, up to BATCH_EVENT_ITEMS leads each."""
    groups: dict[tuple[uuid.UUID, uuid.UUID, str, str], list[events_pb2.AssignedLead]] = {}
    for row in rows:
        key = (row.tenant_id, row.owner_org_id, row.owner_org_path, by_lead[row.id].strategy)
        groups.setdefault(key, []).append(
            events_pb2.AssignedLead(
                lead_id=str(row.id),
                assignee_id=str(row.assignee_id),
                assign_time=timestamp(row.assigned_time),
            )
        )
    return [
        NewEvent(
            event_type="crm.leads.lead_batch.assigned.v1",
            payload=events_pb2.LeadBatchAssigned(
                tenant_id=str(tenant),
                org_unit_id=str(unit),
                org_unit_path=path,
                by=by,
                strategy=strategy,
                leads=chunk,
            ),
            tenant_id=tenant,
            org_path=path,
        )
        for (tenant, unit, path, strategy), assigned in groups.items()
        for chunk in batches(assigned)
    ]


@dataclass
class RunResult:
    assigned: int = 0
    # Leads a run looked at and left in the pool, by reason (rules.LEFT_*).
    left: Counter[str] = field(default_factory=Counter)
    by_assignee: Counter[str] = field(default_factory=Counter)

    def add(self, other: RunResult) -> None:
        self.assigned += other.assigned
        self.left.update(other.left)
        self.by_assignee.update(other.by_assignee)

    def json(self) -> dict[str, Any]:
        return {
            "assigned": self.assigned,
            "left_in_pool": dict(sorted(self.left.items())),
            "by_assignee": dict(sorted(self.by_assignee.items())),
        }


@dataclass(frozen=True)
class SkippedUnit:
    org_unit_id: uuid.UUID
    reason: str  # SKIP_NO_POLICY or SKIP_MANUAL


@dataclass
class SubtreeResult:
    # Every unit of the subtree with an automatic policy, by path (parents first).
    units: dict[uuid.UUID, RunResult]
    skipped: list[SkippedUnit]

    def total(self) -> RunResult:
        total = RunResult()
        for result in self.units.values():
            total.add(result)
        return total

    def json(self) -> dict[str, Any]:
        total = self.total()
        return {
            "assigned": total.assigned,
            "left_in_pool": dict(sorted(total.left.items())),
            "units": [
                {
                    "org_unit_id": str(unit_id),
                    "assigned": r.assigned,
                    "left_in_pool": dict(sorted(r.left.items())),
                }
                for unit_id, r in self.units.items()
            ],
            "skipped_units": [
                {"org_unit_id": str(s.org_unit_id), "reason": s.reason} for s in self.skipped
            ],
        }


@dataclass(frozen=True, slots=True)
class Target:
    """A unit whose pool a run assigns, with its policy as the run found it."""

    id: uuid.UUID
    path: str
    policy: AssignmentPolicy


@dataclass(frozen=True)
class _Scope:
    tenant_id: uuid.UUID
    # The pools' paths: [lo, hi) in ~<~ (byte) order, or exactly lo when hi is None (the
    # root's own pool: ``:run``).
    lo: str
    hi: str | None
    # By path: a unit's pool is its open, unheld leads at exactly its path and id.
    targets: dict[str, Target]

    @property
    def descendants(self) -> bool:
        return self.hi is not None

    @cached_property
    def skill(self) -> bool:
        """Whether the batches need the leads' product interest (a skill policy)."""
        return any(t.policy.strategy == "skill" for t in self.targets.values())


Keyset = tuple[str, uuid.UUID]  # (owner_org_path, lead id) of the last lead read


def _pool_sql(scope: str, *, product: bool) -> sa.TextualSelect:
    # Pools in (path, id) order, so one unit's pool is a contiguous run of a batch and the
    # scan walks ix_leads_pool (text_pattern_ops: its order is ~<~, spelt out here) without
    # sorting. The keyset is (path > p) or (path = p and id > i), with path >= p the index
    # bound. No locks here: the leads are locked (_LOCK_LEADS) once the holders are, the
    # order claims and manual assignments take them in. The product interest (the first
    # enquiry's, as distribution reads it) is one index probe per lead, so it is read only
    # when a skill policy needs it.
    line = (
        "coalesce((SELECT i.product_interest FROM lead_intents AS i "
        "WHERE i.lead_id = l.id AND i.created_lead LIMIT 1), '')"
        if product
        else "''"
    )
    return (
        sa.text(
            f"SELECT l.id, l.owner_org_id, l.owner_org_path, {line} AS product_line "
            "FROM leads AS l "
            "WHERE l.tenant_id = :tenant_id AND l.assignee_id IS NULL "
            f"AND l.status IN ({', '.join(str(s) for s in OPEN_STATUSES)}) AND {scope} "
            "AND l.owner_org_path ~>=~ :after_path "
            "AND (l.owner_org_path ~>~ :after_path OR l.id > :after_id) "
            "ORDER BY l.owner_org_path USING ~<~, l.id LIMIT :limit"
        )
        .bindparams(
            sa.bindparam("tenant_id", type_=leads.c.tenant_id.type),
            sa.bindparam("after_id", type_=leads.c.id.type),
        )
        .columns(
            leads.c.id, leads.c.owner_org_id, leads.c.owner_org_path, sa.column("product_line")
        )
    )


# By (descendants, product): one unit's pool, or every pool with a path in [lo, hi).
_POOLS = {
    (descendants, product): _pool_sql(
        "l.owner_org_path ~>=~ :lo AND l.owner_org_path ~<~ :hi"
        if descendants
        else "l.owner_org_path = :lo",
        product=product,
    )
    for descendants in (False, True)
    for product in (False, True)
}
_MIN_ID = uuid.UUID(int=0)
_MAX_ID = uuid.UUID(int=(1 << 128) - 1)

# The cursor rows are a run's locks: runs over the same unit take turns. Taken in unit id
# order in one statement (created if missing), so a subtree run and single-unit runs,
# whatever their overlap, never wait on each other in a cycle.
_LOCK_CURSORS = sa.text(
    "INSERT INTO assignment_cursors AS c (tenant_id, org_unit_id) "
    "SELECT CAST(:tenant_id AS uuid), u FROM unnest(CAST(:ids AS uuid[])) AS u ORDER BY u "
    "ON CONFLICT (tenant_id, org_unit_id) DO UPDATE SET cursor = c.cursor "
    "RETURNING c.org_unit_id, c.cursor"
)
_SAVE_CURSORS = sa.text(
    "UPDATE assignment_cursors AS c SET cursor = u.cursor "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:cursors AS integer[])) AS u (id, cursor) "
    "WHERE c.tenant_id = CAST(:tenant_id AS uuid) AND c.org_unit_id = u.id"
)
# SKIP LOCKED: a lead being claimed or assigned by hand right now is simply not part of this
# run (and is never waited for while this run holds reps' locks); one taken since the batch
# was read no longer matches.
_LOCK_LEADS = sa.text(
    "SELECT id FROM leads WHERE id = ANY(CAST(:ids AS uuid[])) AND assignee_id IS NULL "
    f"AND status IN ({', '.join(str(s) for s in OPEN_STATUSES)}) FOR UPDATE SKIP LOCKED"
)
# users.service.active_reps for many units in one statement.
_ACTIVE_REPS = sa.text(
    "SELECT id, org_unit_id FROM users WHERE tenant_id = CAST(:tenant_id AS uuid) "
    "AND org_unit_id = ANY(CAST(:units AS uuid[])) AND active AND :rep = ANY(roles)"
)


async def _policies(
    conn: AsyncConnection, tenant_id: uuid.UUID, unit_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, AssignmentPolicy]:
    """Each unit's current policy; units with none stored are absent."""
    table = assignment_policies
    rows = await conn.execute(
        sa.select(table.c.org_unit_id, table.c.document)
        .where(
            table.c.tenant_id == tenant_id,
            table.c.org_unit_id == sa.any_(sa.cast(list(unit_ids), ARRAY(UUID(as_uuid=True)))),
        )
        .distinct(table.c.org_unit_id)
        .order_by(table.c.org_unit_id, table.c.version.desc())
    )
    return {row.org_unit_id: AssignmentPolicy.model_validate(row.document) for row in rows}


async def _run_batch(
    conn: AsyncConnection, principal: Principal, scope: _Scope, after: Keyset
) -> tuple[dict[uuid.UUID, RunResult], Keyset | None]:
    """One batch of the scope's pools, whatever units it spans, in a constant number of
    statements: the batch, cursors, reps, holder locks, held counts, the leads' locks, one
    ``_apply``, the cursors again. Locks in the order claims and manual assignments take
    them (cursors, then holders, then leads without waiting), so none waits in a cycle.
    Returns the per-unit results and where the next batch starts."""
    tenant_id = scope.tenant_id
    params: dict[str, Any] = {
        "tenant_id": tenant_id,
        "lo": scope.lo,
        "after_path": after[0],
        "after_id": after[1],
        "limit": RUN_BATCH,
    }
    if scope.hi is not None:
        params["hi"] = scope.hi
    batch = (await conn.execute(_POOLS[scope.descendants, scope.skill], params)).all()
    if not batch:
        return {}, None
    chunks: dict[str, list[PoolLead]] = {}
    for row in batch:
        target = scope.targets.get(row.owner_org_path)
        # A unit without an automatic policy, or an owner that disagrees with the path (a
        # move being replicated): not this run's to touch.
        if target is not None and target.id == row.owner_org_id:
            chunks.setdefault(row.owner_org_path, []).append(PoolLead(row.id, row.product_line))
    units = [scope.targets[path] for path in chunks]
    plans: dict[uuid.UUID, UnitPlan] = {}
    results: dict[uuid.UUID, RunResult] = {}
    if units:
        ids = sorted(t.id for t in units)
        cursors: dict[uuid.UUID, int] = {
            r.org_unit_id: r.cursor
            for r in await conn.execute(_LOCK_CURSORS, {"tenant_id": tenant_id, "ids": ids})
        }
        active: dict[uuid.UUID, set[uuid.UUID]] = {}
        for r in await conn.execute(
            _ACTIVE_REPS, {"tenant_id": tenant_id, "units": ids, "rep": ROLE_REP}
        ):
            active.setdefault(r.org_unit_id, set()).add(r.id)
        reps = {t.id: eligible(t.policy, frozenset(active.get(t.id, ()))) for t in units}
        rep_ids = [uuid.UUID(r.user_id) for unit_reps in reps.values() for r in unit_reps]
        limits = await poolrules.limits(conn=conn, tenant_id=tenant_id)
        await poolrules.lock_holders(conn=conn, user_ids=rep_ids)
        held = await poolrules.held_counts(conn=conn, tenant_id=tenant_id, user_ids=rep_ids)
        ours = {
            r.id
            for r in await conn.execute(
                _LOCK_LEADS, {"ids": [x.lead_id for c in chunks.values() for x in c]}
            )
        }
        plans = plan_units(
            [
                UnitPool(
                    t.id,
                    t.policy.strategy,
                    rep_states(reps[t.id], held),
                    cursors[t.id],
                    [x for x in chunks[t.path] if x.lead_id in ours],
                )
                for t in units
            ],
            cap=limits.cap,
        )
        rows = await _apply(
            conn,
            tenant_id=tenant_id,
            moves=[
                Move(lead, rep, None, t.policy.strategy)
                for t in units
                for lead, rep in plans[t.id].plan.assignments
            ],
            by=principal.subject,
            batched=True,
        )
        moved = [
            (t.id, cursor) for t in units if (cursor := plans[t.id].plan.cursor) != cursors[t.id]
        ]
        if moved:
            await conn.execute(
                _SAVE_CURSORS,
                {
                    "tenant_id": tenant_id,
                    "ids": [m[0] for m in moved],
                    "cursors": [m[1] for m in moved],
                },
            )
        results = {t.id: RunResult(left=Counter(plans[t.id].plan.left)) for t in units}
        for row in rows:
            result = results[row.owner_org_id]
            result.assigned += 1
            result.by_assignee[str(row.assignee_id)] += 1
    return results, next_keyset(
        batch, limit=RUN_BATCH, targets=scope.targets, plans=plans, descendants=scope.descendants
    )


def next_keyset(
    batch: Sequence[Any],
    *,
    limit: int,
    targets: Mapping[str, Target],
    plans: Mapping[uuid.UUID, UnitPlan],
    descendants: bool,
) -> Keyset | None:
    """Where the batch after ``batch`` (rows with ``owner_org_path`` and ``id``, in pool
    order) starts, or None when the run is done. Nobody at the last unit able to take more
    (or the unit not assigned automatically): the rest of its pool is not read."""
    if len(batch) < limit:
        return None
    last = batch[-1]
    target = targets.get(last.owner_org_path)
    done = plans.get(target.id) if target is not None else None
    if target is not None and (done is None or not done.full):
        return (last.owner_org_path, last.id)
    return (last.owner_org_path, _MAX_ID) if descendants else None


async def _run_scope(
    db: Database, principal: Principal, scope: _Scope
) -> dict[uuid.UUID, RunResult]:
    totals = {t.id: RunResult() for t in scope.targets.values()}
    after: Keyset | None = (scope.lo, _MIN_ID)
    while after is not None:
        async with db.unit_of_work() as conn:
            results, after = await _run_batch(conn, principal, scope, after)
        for unit_id, result in results.items():
            totals[unit_id].add(result)
    return totals


def _skip_reason(policy: AssignmentPolicy | None) -> str | None:
    """Why a unit is not assigned automatically (a SKIP_* reason), or None."""
    if policy is None:
        return SKIP_NO_POLICY
    return SKIP_MANUAL if policy.strategy == "manual" else None


async def run(db: Database, *, principal: Principal, unit_id: uuid.UUID) -> RunResult:
    """Assign the unit's pool (its own open, unheld leads) by its policy, in batches of
    ``RUN_BATCH``, each its own transaction; stops when the pool is done or nobody can take
    more (every eligible rep at the cap)."""
    async with db.read() as conn:
        unit = await visible_unit(conn=conn, principal=principal, unit_id=unit_id)
        require_editor(principal, unit)
        policy = (await _policies(conn, unit.tenant_id, [unit.id])).get(unit.id)
    if policy is None or _skip_reason(policy) is not None:
        raise FailedPrecondition(
            f"org unit {unit_id} assigns by hand (no automatic assignment policy)",
            reason="ASSIGNMENT_POLICY_MANUAL",
            metadata={"org_unit": str(unit_id)},
        )
    scope = _Scope(unit.tenant_id, unit.path, None, {unit.path: Target(unit.id, unit.path, policy)})
    return (await _run_scope(db, principal, scope))[unit.id]


def slices(root_path: str, paths: Sequence[str], workers: int) -> list[tuple[str, str]]:
    """[lo, hi) path ranges covering the whole subtree of ``root_path`` (its paths end in
    '/'), at most ``workers`` of them, each starting at one of ``paths`` (the automatic
    units', sorted) but the first, with about as many of those units each."""
    n = min(workers, len(paths))
    if n == 0:
        return []
    end = root_path[:-1] + chr(ord(root_path[-1]) + 1)
    starts = [root_path] + [paths[len(paths) * i // n] for i in range(1, n)]
    return list(zip(starts, [*starts[1:], end], strict=True))


async def run_subtree(db: Database, *, principal: Principal, unit_id: uuid.UUID) -> SubtreeResult:
    """``run`` for every unit of the subtree rooted at ``unit_id`` (the root included) with
    an automatic policy, set-based across units: each batch of pooled leads, whichever units
    they are in, costs the same few statements. The caller must be allowed to assign at the
    root (administrators, managers whose subtree contains it), hence at every unit below;
    units without an automatic policy are skipped and reported, their leads untouched. The
    tree and policies are read once, from the replica, when the run starts."""
    async with db.read() as conn:
        root = await visible_unit(conn=conn, principal=principal, unit_id=unit_id)
        require_editor(principal, root)
        units = await orgtree.subtree(conn=conn, unit_id=root.id)
        policies = await _policies(conn, root.tenant_id, [u.id for u in units])
    targets: dict[str, Target] = {}
    skipped: list[SkippedUnit] = []
    for unit in units:
        policy = policies.get(unit.id)
        reason = _skip_reason(policy)
        if policy is None or reason is not None:
            skipped.append(SkippedUnit(unit.id, reason or SKIP_NO_POLICY))
        else:
            targets[unit.path] = Target(unit.id, unit.path, policy)
    # Disjoint ranges of units run side by side, so the database works on one batch while
    # this process builds another's events; they share no cursor and no rep (a rep is in
    # one unit), so they never wait on each other.
    paths = sorted(targets)
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(
                _run_scope(
                    db,
                    principal,
                    _Scope(root.tenant_id, lo, hi, {p: targets[p] for p in paths if lo <= p < hi}),
                )
            )
            for lo, hi in slices(root.path, paths, RUN_WORKERS)
        ]
    results: dict[uuid.UUID, RunResult] = {}
    for task in tasks:
        results.update(task.result())
    # Parents first, as the tree lists them.
    return SubtreeResult({t.id: results[t.id] for t in targets.values()}, skipped)


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
    moves: list[Move] = []
    for index, lead_id in enumerate(lead_ids):
        row: Any = found.get(lead_id)
        error = _refusal(row, lead_id, assignee)
        # Already the assignee's: nothing to change (and no event).
        if error is None and row.assignee_id != assignee_id:
            if held >= limits.cap:
                error = pool_full(assignee_id, limits)
            else:
                held += 1
                moves.append(Move(lead_id, assignee_id, row.assignee_id, "manual"))
        results.append(AssignResult(index, str(lead_id), row if error is None else None, error))
    updated = {
        r.id: r
        for r in await _apply(
            conn,
            tenant_id=principal.tenant_id,
            moves=moves,
            by=principal.subject,
        )
    }
    return [
        AssignResult(r.index, r.lead_id, updated.get(uuid.UUID(r.lead_id), r.lead), r.error)
        for r in results
    ]
