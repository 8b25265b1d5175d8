"""Distribution with I/O: running a unit's automatic rules over its pool (also for new leads,
from the capture events), manual distribution, and the owner history. The decisions are the
pure engine's (crm_leads.distribution.engine); this module loads what it needs, persists the
outcome set-based and stages the events.

Guarantees:

- **one owner**: ``owner_org_id`` is a column, and every move is a conditional UPDATE
  (``owner_org_id = <expected> AND assignee_id IS NULL AND status IN (1, 2)``) on rows
  locked first, so of two concurrent distributions of one lead exactly one moves it and the
  other sees it gone; a redelivered event finds nothing left to move;
- **capacities**: a run locks the load rows of every unit it may give leads to (in unit-id
  order, so runs never deadlock) before it reads the pool, so two runs never both spend a
  unit's last place;
- **visibility**: events carry the new owner's org path, so the receiving unit's subtree
  sees them and its siblings do not.

Functions taking ``conn`` never commit; ``run`` owns its transactions (one per batch)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2
from crm_leads.acceptance import service as acceptance
from crm_leads.distribution import store
from crm_leads.distribution.engine import (
    Decision,
    DistributionState,
    Distributor,
    Load,
    cascade,
    moment_at,
)
from crm_leads.distribution.models import distribution_unmatched, lead_owner_history
from crm_leads.distribution.rules import LeadFacts
from crm_leads.lead.models import OPEN_STATUSES, leads
from crm_leads.lead.service import PRODUCER
from crm_leads.orgtree import service as orgtree
from crm_platform import metrics, records
from crm_platform.auth import ROLE_ADMIN, ROLE_MANAGER, Principal, visible_to
from crm_platform.db import Database
from crm_platform.errors import DomainError, FailedPrecondition, NotFound, PermissionDenied
from crm_platform.ids import new_id
from crm_platform.outbox import NewEvent, add_event, add_events, batches
from crm_platform.pagination import PageRequest

# Leads decided and written per transaction by a pool run. Large, because a batch's events go
# one per receiving unit: at 5,000 leads over 2,000 dealers an event carried ~2.5 leads, at
# 20,000 ~10 (100k-lead bench: 37,655 -> 9,732 events, 10,871 -> 14,710 leads/s); a batch
# then holds its leads' locks ~1.5 s.
BATCH_LEADS = 20000
MAX_MANUAL = 1000
# Days and weeks of the capacity counters, and active hours, are in this timezone until lead
# settings carry a tenant timezone.
TIMEZONE = ZoneInfo("Asia/Shanghai")
SYSTEM_ACTOR = "system"
REASON_DISTRIBUTED = "distributed"
REASON_MANUAL = "manual"

_HISTORY_COLUMNS = (
    "id",
    "tenant_id",
    "lead_id",
    "from_org_id",
    "from_org_path",
    "to_org_id",
    "to_org_path",
    "reason",
    "rule_name",
    "actor",
    "occur_time",
)
# Facts of the pool's leads, locked (in id order, as imports lock) so nothing else changes
# them between the decision and the write. The product line is the first enquiry's.
_POOL = (
    "SELECT l.id, l.province, l.city, l.territory, l.custom_fields, l.source, l.grade, l.score, "
    "coalesce((SELECT i.product_interest FROM lead_intents i "
    "WHERE i.lead_id = l.id AND i.created_lead LIMIT 1), '') AS product_line "
    "FROM leads l WHERE l.tenant_id = $1 AND l.owner_org_id = $2 "
    "AND l.assignee_id IS NULL AND l.status IN (1, 2) AND l.id > $3 "
)
_POOL_ALL = _POOL + "AND l.owner_org_path = $4 ORDER BY l.id LIMIT $5 FOR UPDATE OF l"
_POOL_SOME = _POOL + "AND l.id = ANY($4::uuid[]) ORDER BY l.id FOR UPDATE OF l"
_MOVE = (
    "UPDATE leads l SET owner_org_id = u.to_id, owner_org_path = u.to_path, "
    "version = l.version + 1, update_time = now() "
    "FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS u (id, to_id, to_path) "
    "WHERE l.id = u.id AND l.tenant_id = $4 AND l.owner_org_id = $5 "
    "AND l.assignee_id IS NULL AND l.status IN (1, 2) RETURNING l.id"
)
# Rows created in key order, then locked in key order: concurrent runs queue, never deadlock.
_ENSURE_LOADS = (
    "INSERT INTO distribution_load (tenant_id, org_unit_id, day, week_start) "
    "SELECT $1, u, $3, $4 FROM unnest($2::uuid[]) AS u ORDER BY u ON CONFLICT DO NOTHING"
)
_LOCK_LOADS = (
    "SELECT org_unit_id, day, today, week_start, week, open_load FROM distribution_load "
    "WHERE tenant_id = $1 AND org_unit_id = ANY($2::uuid[]) ORDER BY org_unit_id FOR UPDATE"
)
_SAVE_LOADS = (
    "UPDATE distribution_load d SET day = $3, today = u.today, week_start = $4, "
    "week = u.week, open_load = u.open_load "
    "FROM unnest($2::uuid[], $5::int[], $6::int[], $7::int[]) AS u (id, today, week, open_load) "
    "WHERE d.tenant_id = $1 AND d.org_unit_id = u.id"
)
_SAVE_CURSORS = (
    "INSERT INTO distribution_cursors (tenant_id, deciding_unit_id, rule_name, cursor) "
    "SELECT $1, unit, rule, pos FROM unnest($2::uuid[], $3::text[], $4::int[]) "
    "AS c (unit, rule, pos) "
    "ON CONFLICT (tenant_id, deciding_unit_id, rule_name) DO UPDATE SET cursor = EXCLUDED.cursor"
)
_FLAG_UNMATCHED = (
    "INSERT INTO distribution_unmatched (lead_id, tenant_id, org_unit_id, rule_name, reason) "
    "SELECT id, $1, unit, rule, reason "
    "FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[]) AS u (id, unit, rule, reason) "
    "ON CONFLICT (lead_id) DO UPDATE SET org_unit_id = EXCLUDED.org_unit_id, "
    "rule_name = EXCLUDED.rule_name, reason = EXCLUDED.reason, decide_time = now()"
)
_UNFLAG = "DELETE FROM distribution_unmatched WHERE lead_id = ANY($1::uuid[])"


@dataclass
class Plan:
    """What a run at ``start`` needs: the distributors of the units of its subtree that have
    automatic rules (a cascade passes through them) and every unit's row by id."""

    tenant_id: uuid.UUID
    start: Any
    units: dict[str, Any]
    distributors: dict[str, Distributor]

    @property
    def targets(self) -> list[uuid.UUID]:
        """Every unit a run may give leads to, sorted (the lock order)."""
        ids = {t for d in self.distributors.values() for t in d.children}
        return sorted(uuid.UUID(t) for t in ids)


@dataclass
class RunResult:
    distributed: int = 0  # leads that left the deciding unit's pool
    unmatched: int = 0  # leads no rule placed (flagged where they stopped)
    by_target: Counter[str] = field(default_factory=Counter)  # final owner -> leads

    def add(self, other: RunResult) -> None:
        self.distributed += other.distributed
        self.unmatched += other.unmatched
        self.by_target.update(other.by_target)

    def json(self) -> dict[str, Any]:
        return {
            "distributed": self.distributed,
            "unmatched": self.unmatched,
            "by_target": dict(sorted(self.by_target.items())),
        }


async def load_plan(*, conn: AsyncConnection, tenant_id: uuid.UUID, unit_id: uuid.UUID) -> Plan:
    """Empty ``distributors`` when the unit has no automatic rules (or is not replicated)."""
    rows = await orgtree.subtree(conn=conn, unit_id=unit_id)
    rows = [r for r in rows if r.tenant_id == tenant_id]
    units = {str(r.id): r for r in rows}
    start = units.get(str(unit_id))
    if start is None:
        return Plan(tenant_id, None, {}, {})
    rules = await store.current_rules(conn=conn, tenant_id=tenant_id, unit_ids=[r.id for r in rows])
    if unit_id not in rules:
        return Plan(tenant_id, start, units, {})
    children: dict[uuid.UUID, list[uuid.UUID]] = {}
    for r in rows:
        if r.parent_id in rules:
            children.setdefault(r.parent_id, []).append(r.id)
    profiles = await store.profiles(
        conn=conn, tenant_id=tenant_id, unit_ids=[c for cs in children.values() for c in cs]
    )
    distributors = {
        str(unit): Distributor(
            str(unit),
            document,
            {str(c): profiles[c] for c in children.get(unit, ()) if c in profiles},
        )
        for unit, document in rules.items()
    }
    return Plan(tenant_id, start, units, distributors)


def _period(now: datetime) -> tuple[date, date]:
    today = now.astimezone(TIMEZONE).date()
    return today, today - timedelta(days=today.weekday())


async def _raw(conn: AsyncConnection) -> asyncpg.Connection:
    # The transaction has begun: SQLAlchemy ran the plan's statements on this connection.
    raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
    return raw


async def _lock_state(
    raw: asyncpg.Connection, plan: Plan, day: date, week_start: date
) -> tuple[DistributionState, dict[str, tuple[int, int, int]]]:
    """The state of the current period with the load rows locked; and the values as read, to
    write back only what changed."""
    targets = plan.targets
    await raw.execute(_ENSURE_LOADS, plan.tenant_id, targets, day, week_start)
    loads: dict[str, Load] = {}
    for row in await raw.fetch(_LOCK_LOADS, plan.tenant_id, targets):
        loads[str(row["org_unit_id"])] = Load(
            row["today"] if row["day"] == day else 0,
            row["week"] if row["week_start"] == week_start else 0,
            row["open_load"],
        )
    before = {k: (v.today, v.week, v.open_leads) for k, v in loads.items()}
    cursors = {
        f"{row['deciding_unit_id']}:{row['rule_name']}": row["cursor"]
        for row in await raw.fetch(
            "SELECT deciding_unit_id, rule_name, cursor FROM distribution_cursors "
            "WHERE tenant_id = $1 AND deciding_unit_id = ANY($2::uuid[])",
            plan.tenant_id,
            [uuid.UUID(u) for u in plan.distributors],
        )
    }
    return DistributionState(loads, cursors), before


async def _save_state(
    raw: asyncpg.Connection,
    plan: Plan,
    state: DistributionState,
    before: dict[str, tuple[int, int, int]],
    day: date,
    week_start: date,
) -> None:
    changed = [
        (uuid.UUID(k), v)
        for k, v in state.loads.items()
        if before.get(k) != (v.today, v.week, v.open_leads)
    ]
    if changed:
        await raw.execute(
            _SAVE_LOADS,
            plan.tenant_id,
            [k for k, _ in changed],
            day,
            week_start,
            [v.today for _, v in changed],
            [v.week for _, v in changed],
            [v.open_leads for _, v in changed],
        )
    if state.cursors:
        keys = [k.split(":", 1) for k in state.cursors]
        await raw.execute(
            _SAVE_CURSORS,
            plan.tenant_id,
            [uuid.UUID(unit) for unit, _ in keys],
            [rule for _, rule in keys],
            list(state.cursors.values()),
        )


@dataclass(frozen=True)
class _Move:
    lead_id: uuid.UUID
    hops: tuple[Decision, ...]  # each with a target

    @property
    def to(self) -> str:
        target = self.hops[-1].target_unit_id
        assert target is not None
        return target


def _facts(row: Any, excluded: frozenset[str] = frozenset()) -> LeadFacts:
    return LeadFacts(
        province=row["province"],
        city=row["city"],
        territory=row["territory"],
        product_line=row["product_line"],
        source=row["source"],
        grade=row["grade"],
        score=row["score"],
        custom=_custom(row["custom_fields"]),
        excluded=excluded,
    )


def _custom(raw: Any) -> dict[str, str]:
    """The lead's custom attributes as distribution compares them (text); asyncpg hands
    jsonb over as its JSON text."""
    values = json.loads(raw) if isinstance(raw, str) else raw
    return {str(k): str(v) for k, v in values.items()} if values else {}


async def distribute_batch(
    *,
    conn: AsyncConnection,
    plan: Plan,
    actor: str = SYSTEM_ACTOR,
    after: uuid.UUID | None = None,
    limit: int = BATCH_LEADS,
    lead_ids: Sequence[uuid.UUID] | None = None,
    now: datetime | None = None,
) -> tuple[RunResult, uuid.UUID | None]:
    """Distribute up to ``limit`` leads of the start unit's pool with ids above ``after``
    (or just ``lead_ids``, those of them still in the pool) in the caller's transaction:
    decisions, moves, history, flags, counters and events. Returns the outcome and the last
    lead id looked at (None: the pool had nothing more)."""
    start = plan.start
    if start is None or str(start.id) not in plan.distributors:
        return RunResult(), None
    now = now or datetime.now(UTC)
    day, week_start = _period(now)
    raw = await _raw(conn)
    state, before = await _lock_state(raw, plan, day, week_start)
    low = after or uuid.UUID(int=0)
    if lead_ids is None:
        rows = await raw.fetch(_POOL_ALL, plan.tenant_id, start.id, low, start.path, limit)
    else:
        rows = await raw.fetch(_POOL_SOME, plan.tenant_id, start.id, low, list(lead_ids))
    if not rows:
        return RunResult(), None
    at = moment_at(now, TIMEZONE)
    # Units that rejected, let expire or lost a lead are never offered it again.
    excluded = await acceptance.exclusions(conn, [row["id"] for row in rows])
    moves: list[_Move] = []
    stuck: list[tuple[uuid.UUID, str, Decision]] = []
    origin = str(start.id)
    for row in rows:
        facts = _facts(row, excluded.get(row["id"], frozenset()))
        path = cascade(facts, state, start=origin, distributors=plan.distributors, at=at)
        hops = tuple(d for d in path if d.target_unit_id is not None)
        if hops:
            moves.append(_Move(row["id"], hops))
        if path and path[-1].unmatched:
            stuck.append((row["id"], _Move(row["id"], hops).to if hops else origin, path[-1]))
    moved = await _persist_moves(raw, plan, moves, actor, now)
    # Each moved lead waits for its new unit to accept it (crm_leads.acceptance).
    await acceptance.offer(
        conn,
        tenant_id=plan.tenant_id,
        offers=[
            (m.lead_id, uuid.UUID(m.to), plan.units[m.to].path) for m in moves if m.lead_id in moved
        ],
        now=now,
    )
    await _flag(raw, plan.tenant_id, stuck, moved)
    await _save_state(raw, plan, state, before, day, week_start)
    await _batch_events(conn, plan, [m for m in moves if m.lead_id in moved])
    result = RunResult(len(moved), len(stuck))
    result.by_target.update(m.to for m in moves if m.lead_id in moved)
    return result, rows[-1]["id"]


async def _persist_moves(
    raw: asyncpg.Connection, plan: Plan, moves: list[_Move], actor: str, now: datetime
) -> set[uuid.UUID]:
    if not moves:
        return set()
    units = plan.units
    returned = await raw.fetch(
        _MOVE,
        [m.lead_id for m in moves],
        [uuid.UUID(m.to) for m in moves],
        [units[m.to].path for m in moves],
        plan.tenant_id,
        plan.start.id,
    )
    # The rows were locked when read, so every move applies; the condition is the backstop.
    moved = {r["id"] for r in returned}
    history = []
    for m in moves:
        if m.lead_id not in moved:
            continue
        source = units[str(plan.start.id)]
        for hop in m.hops:
            assert hop.target_unit_id is not None
            target = units[hop.target_unit_id]
            history.append(
                (
                    new_id(),
                    plan.tenant_id,
                    m.lead_id,
                    source.id,
                    source.path,
                    target.id,
                    target.path,
                    REASON_DISTRIBUTED,
                    hop.rule_name or "",
                    actor,
                    now,
                )
            )
            source = target
    await raw.copy_records_to_table("lead_owner_history", records=history, columns=_HISTORY_COLUMNS)
    return moved


async def _flag(
    raw: asyncpg.Connection,
    tenant_id: uuid.UUID,
    stuck: list[tuple[uuid.UUID, str, Decision]],
    moved: set[uuid.UUID],
) -> None:
    if moved:
        await raw.execute(_UNFLAG, list(moved))
    if stuck:
        await raw.execute(
            _FLAG_UNMATCHED,
            tenant_id,
            [lead for lead, _, _ in stuck],
            [uuid.UUID(unit) for _, unit, _ in stuck],
            [d.rule_name or "" for _, _, d in stuck],
            [d.reason for _, _, d in stuck],
        )


async def _batch_events(conn: AsyncConnection, plan: Plan, moves: list[_Move]) -> None:
    """One event per new owner and 1,000 leads, carrying that owner's path: a dealer's
    consumers see the leads it received, never a sibling's."""
    by_owner: dict[str, list[events_pb2.DistributedLead]] = {}
    for m in moves:
        to = plan.units[m.to]
        by_owner.setdefault(m.to, []).append(
            events_pb2.DistributedLead(
                lead_id=str(m.lead_id),
                to_org_id=m.to,
                to_org_path=to.path,
                rule_name=m.hops[-1].rule_name or "",
            )
        )
    # A batch reaches up to a few thousand owners: one INSERT for all their events.
    await add_events(
        conn,
        [
            NewEvent(
                event_type="crm.leads.lead_batch.distributed.v1",
                payload=events_pb2.LeadBatchDistributed(
                    tenant_id=str(plan.tenant_id),
                    deciding_org_id=str(plan.start.id),
                    deciding_org_path=plan.start.path,
                    leads=chunk,
                ),
                tenant_id=plan.tenant_id,
                org_path=plan.units[owner].path,
            )
            for owner, entries in sorted(by_owner.items())
            for chunk in batches(entries)
        ],
        producer=PRODUCER,
    )


async def run(
    db: Database,
    *,
    principal: Principal,
    unit_id: uuid.UUID,
    batch: int = BATCH_LEADS,
) -> RunResult:
    """``POST /v1/distribution-rules/{id}:run``: the unit's automatic rules over its whole
    pool now, cascading, one transaction per ``batch`` leads (administrators, or managers
    above the unit)."""
    async with db.read() as conn:
        unit = await store.visible_unit(conn=conn, principal=principal, unit_id=unit_id)
        store.require_editor(principal, unit)
        plan = await load_plan(conn=conn, tenant_id=principal.tenant_id, unit_id=unit_id)
    if not plan.distributors.get(str(unit_id)):
        raise FailedPrecondition(
            f"org unit {unit_id} has no automatic distribution rules",
            reason="DISTRIBUTION_RULES_MISSING",
            metadata={"org_unit": str(unit_id)},
        )
    total = RunResult()
    after: uuid.UUID | None = None
    while True:
        async with db.unit_of_work() as conn:
            result, last = await distribute_batch(
                conn=conn, plan=plan, actor=principal.subject, after=after, limit=batch
            )
        metrics.LEADS_DISTRIBUTED.inc(result.distributed)
        total.add(result)
        if last is None:
            return total
        after = last


async def distribute_new(
    *, conn: AsyncConnection, tenant_id: uuid.UUID, unit_id: uuid.UUID, lead_ids: list[uuid.UUID]
) -> RunResult:
    """New leads captured at ``unit_id``, a unit the caller found distributing
    (``store.units_with_rules``): distributed by its automatic rules. Idempotent: a lead
    already moved is no longer in the unit's pool and is not looked at again."""
    if not lead_ids:
        return RunResult()
    plan = await load_plan(conn=conn, tenant_id=tenant_id, unit_id=unit_id)
    result, _ = await distribute_batch(conn=conn, plan=plan, lead_ids=sorted(lead_ids))
    metrics.LEADS_DISTRIBUTED.inc(result.distributed)
    return result


# Manual distribution


@dataclass(frozen=True)
class ManualResult:
    index: int
    lead_id: str
    lead: Any | None = None  # the moved row
    error: DomainError | None = None


async def distribute_manually(
    *,
    conn: AsyncConnection,
    principal: Principal,
    lead_ids: Sequence[uuid.UUID],
    target_id: uuid.UUID,
) -> list[ManualResult]:
    """Move leads of the target's parent pool to the target, one level down. Each lead must
    be visible, open, unassigned and owned by the parent; others get a per-lead error and do
    not block the rest. One locking read and one conditional UPDATE for the whole request."""
    if not principal.roles & {ROLE_ADMIN, ROLE_MANAGER}:
        raise PermissionDenied(
            "only managers and administrators distribute leads", reason="ROLE_REQUIRED"
        )
    target = await store.visible_unit(conn=conn, principal=principal, unit_id=target_id)
    parent = (
        None if target.parent_id is None else await orgtree.get(conn=conn, unit_id=target.parent_id)
    )
    if parent is None:
        raise FailedPrecondition(
            "the root org unit cannot receive distributed leads",
            reason="ORG_UNIT_IS_ROOT",
            metadata={"org_unit": str(target_id)},
        )
    ids = list(lead_ids)
    # Locked in id order; the UPDATE's own condition re-checks each row as it is now.
    current = {
        row.id: row
        for row in await conn.execute(
            sa.select(
                leads.c.id,
                leads.c.owner_org_id,
                leads.c.owner_org_path,
                leads.c.assignee_id,
                leads.c.status,
            )
            .where(leads.c.id.in_(ids), visible_to(leads, principal))
            .order_by(leads.c.id)
            .with_for_update()
        )
    }
    moved = {
        row.id: row
        for row in await conn.execute(
            leads.update()
            .where(
                leads.c.id.in_(ids),
                visible_to(leads, principal),
                leads.c.owner_org_id == parent.id,
                leads.c.assignee_id.is_(None),
                leads.c.status.in_(OPEN_STATUSES),
            )
            .values(
                owner_org_id=target.id,
                owner_org_path=target.path,
                version=leads.c.version + 1,
                update_time=sa.func.now(),
            )
            .returning(*leads.c)
        )
    }
    if moved:
        await _manual_effects(conn, principal, list(moved.values()), current, target)
        await acceptance.offer(
            conn,
            tenant_id=principal.tenant_id,
            offers=[(lead, target.id, target.path) for lead in moved],
            now=datetime.now(UTC),
        )
    results = []
    for i, lead_id in enumerate(ids):
        row = moved.get(lead_id)
        if row is not None:
            results.append(ManualResult(i, str(lead_id), lead=row))
        else:
            error = _why_not(lead_id, current.get(lead_id), parent, target)
            results.append(ManualResult(i, str(lead_id), error=error))
    metrics.LEADS_DISTRIBUTED.inc(len(moved))
    return results


def unmovable(lead_id: uuid.UUID, row: Any) -> DomainError | None:
    """Why a lead (its locked row, None if not visible) cannot change units by hand, if so:
    what manual distribution and passing up both require."""
    meta = {"lead": str(lead_id)}
    if row is None:
        return NotFound(f"lead {lead_id} not found", reason="LEAD_NOT_FOUND", metadata=meta)
    if row.status not in OPEN_STATUSES:
        return FailedPrecondition(
            f"lead {lead_id} is not open", reason="LEAD_NOT_OPEN", metadata=meta
        )
    if row.assignee_id is not None:
        return FailedPrecondition(
            f"lead {lead_id} is held by a user; release it first",
            reason="LEAD_HELD",
            metadata=meta,
        )
    return None


def _why_not(lead_id: uuid.UUID, row: Any, parent: Any, target: Any) -> DomainError:
    meta = {"lead": str(lead_id)}
    blocked = unmovable(lead_id, row)
    if blocked is not None:
        return blocked
    if row.owner_org_id == target.id:
        return FailedPrecondition(
            f"lead {lead_id} is already owned by the target",
            reason="LEAD_ALREADY_OWNED",
            metadata=meta,
        )
    return FailedPrecondition(
        f"lead {lead_id} is not in the pool of {parent.path} (the target's parent): a lead "
        "moves one level down, to a child of its owner",
        reason="LEAD_NOT_IN_PARENT_POOL",
        metadata=meta,
    )


async def _manual_effects(
    conn: AsyncConnection,
    principal: Principal,
    moved: list[Any],
    before: dict[uuid.UUID, Any],
    target: Any,
) -> None:
    await conn.execute(
        lead_owner_history.insert(),
        [
            {
                "id": new_id(),
                "tenant_id": row.tenant_id,
                "lead_id": row.id,
                "from_org_id": before[row.id].owner_org_id,
                "from_org_path": before[row.id].owner_org_path,
                "to_org_id": target.id,
                "to_org_path": target.path,
                "reason": REASON_MANUAL,
                "rule_name": "",
                "actor": principal.subject,
            }
            for row in moved
        ],
    )
    await conn.execute(
        distribution_unmatched.delete().where(
            distribution_unmatched.c.lead_id.in_([row.id for row in moved])
        )
    )
    for row in moved:
        await add_event(
            conn,
            event_type="crm.leads.lead.distributed.v1",
            payload=events_pb2.LeadDistributed(
                lead_id=str(row.id),
                from_org_id=str(before[row.id].owner_org_id),
                from_org_path=before[row.id].owner_org_path,
                to_org_id=str(target.id),
                to_org_path=target.path,
                manual=True,
                actor=principal.subject,
            ),
            tenant_id=row.tenant_id,
            org_path=target.path,
            producer=PRODUCER,
        )


# Reads


async def owner_history_page(
    *, conn: AsyncConnection, principal: Principal, lead_id: uuid.UUID, page: PageRequest
) -> Sequence[Any]:
    """The owners a visible lead had, newest move first (UUIDv7 ids), keyset-paged."""
    await records.get_visible(conn, leads, principal, lead_id, kind="lead")
    query = (
        sa.select(lead_owner_history)
        .where(lead_owner_history.c.lead_id == lead_id)
        .order_by(lead_owner_history.c.id.desc())
        .limit(page.size + 1)
    )
    if page.after is not None:
        query = query.where(lead_owner_history.c.id < page.after)
    return (await conn.execute(query)).all()


async def unmatched_page(
    *, conn: AsyncConnection, principal: Principal, unit_id: uuid.UUID, page: PageRequest
) -> Sequence[Any]:
    """Leads the unit's rules could not place that are still in its pool, newest first."""
    unit = await store.visible_unit(conn=conn, principal=principal, unit_id=unit_id)
    flags = distribution_unmatched
    query = (
        sa.select(
            flags.c.lead_id.label("id"),
            flags.c.org_unit_id,
            flags.c.rule_name,
            flags.c.reason,
            flags.c.decide_time,
        )
        .select_from(flags)
        .join(leads, leads.c.id == flags.c.lead_id)
        .where(
            flags.c.org_unit_id == unit.id,
            leads.c.owner_org_id == unit.id,
            leads.c.assignee_id.is_(None),
            leads.c.status.in_(OPEN_STATUSES),
        )
        .order_by(flags.c.lead_id.desc())
        .limit(page.size + 1)
    )
    if page.after is not None:
        query = query.where(flags.c.lead_id < page.after)
    return (await conn.execute(query)).all()
