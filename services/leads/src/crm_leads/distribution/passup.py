"""Passing leads up: a unit hands leads of its pool to its parent (one level up). A lead a
unit collected itself stays with it unless it does this; distribution only moves leads down.

The unit it left is recorded like a rejecter (``lead_rejections``, kind ``passed_up``), so
no distribution offers it the lead again. A lead waiting for the unit to accept it is
refused here: the unit rejects the offer instead, with a reason code."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2
from crm_leads.acceptance.models import lead_acceptances, lead_rejections
from crm_leads.distribution.models import distribution_unmatched, lead_owner_history
from crm_leads.distribution.service import ManualResult, unmovable
from crm_leads.lead.models import leads
from crm_leads.lead.service import PRODUCER
from crm_leads.orgtree.models import org_units
from crm_leads.sla import service as sla
from crm_platform import metrics
from crm_platform.auth import ROLE_ADMIN, ROLE_MANAGER, Principal, visible_to
from crm_platform.errors import DomainError, FailedPrecondition, PermissionDenied
from crm_platform.ids import new_id
from crm_platform.outbox import add_event

REASON_PASSED_UP = "passed_up"
MAX_NOTE = 500


async def pass_up(
    *,
    conn: AsyncConnection,
    principal: Principal,
    lead_ids: Sequence[uuid.UUID],
    note: str = "",
) -> list[ManualResult]:
    """Move each lead from its owner unit to that unit's parent. Each must be visible,
    open, unassigned, without a pending offer, and owned by a unit that has a parent;
    others get a per-lead error and do not block the rest. Locked in id order, then one
    conditional UPDATE for all."""
    if not principal.roles & {ROLE_ADMIN, ROLE_MANAGER}:
        raise PermissionDenied(
            "only managers and administrators pass leads up", reason="ROLE_REQUIRED"
        )
    ids = list(lead_ids)
    parent = org_units.alias("parent")
    owner = org_units.alias("owner")
    current = {
        row.id: row
        for row in await conn.execute(
            sa.select(
                leads.c.id,
                leads.c.tenant_id,
                leads.c.owner_org_id,
                leads.c.owner_org_path,
                leads.c.assignee_id,
                leads.c.status,
                parent.c.id.label("parent_id"),
                parent.c.path.label("parent_path"),
                lead_acceptances.c.lead_id.label("offered"),
            )
            .select_from(
                leads.outerjoin(owner, owner.c.id == leads.c.owner_org_id)
                .outerjoin(parent, parent.c.id == owner.c.parent_id)
                .outerjoin(lead_acceptances, lead_acceptances.c.lead_id == leads.c.id)
            )
            .where(leads.c.id.in_(ids), visible_to(leads, principal))
            .order_by(leads.c.id)
            .with_for_update(of=leads)
        )
    }
    errors = {lead_id: _why_not(lead_id, current.get(lead_id)) for lead_id in ids}
    movable = [current[x] for x, error in errors.items() if error is None]
    moved: dict[uuid.UUID, Any] = {}
    if movable:
        moved = await _move(conn, movable)
        if moved:
            await _effects(conn, principal, [current[x] for x in moved], note)
    metrics.LEADS_DISTRIBUTED.inc(len(moved))
    return [
        ManualResult(i, str(lead_id), lead=moved[lead_id])
        if lead_id in moved
        else ManualResult(i, str(lead_id), error=errors[lead_id] or _lost(lead_id))
        for i, lead_id in enumerate(ids)
    ]


_MOVE = sa.text(
    "UPDATE leads l SET owner_org_id = u.to_id, owner_org_path = u.to_path, "
    "version = l.version + 1, update_time = now() "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:from_ids AS uuid[]), CAST(:to_ids AS uuid[]), "
    "CAST(:to_paths AS text[])) AS u (id, from_id, to_id, to_path) "
    "WHERE l.id = u.id AND l.owner_org_id = u.from_id AND l.assignee_id IS NULL "
    "AND l.status IN (1, 2) RETURNING l.*"
)


async def _move(conn: AsyncConnection, rows: Sequence[Any]) -> dict[uuid.UUID, Any]:
    """One UPDATE for every lead, each to its own owner's parent; re-checks each row."""
    result = await conn.execute(
        _MOVE,
        {
            "ids": [r.id for r in rows],
            "from_ids": [r.owner_org_id for r in rows],
            "to_ids": [r.parent_id for r in rows],
            "to_paths": [r.parent_path for r in rows],
        },
    )
    return {row.id: row for row in result}


def _why_not(lead_id: uuid.UUID, row: Any) -> DomainError | None:
    meta = {"lead": str(lead_id)}
    blocked = unmovable(lead_id, row)
    if blocked is not None:
        return blocked
    if row.offered is not None:
        return FailedPrecondition(
            f"lead {lead_id} waits for its unit to accept it: reject the offer instead",
            reason="LEAD_OFFER_PENDING",
            metadata=meta,
        )
    if row.parent_id is None:
        return FailedPrecondition(
            f"lead {lead_id} is owned by the root org unit: there is no unit above it",
            reason="ORG_UNIT_IS_ROOT",
            metadata=meta,
        )
    return None


def _lost(lead_id: uuid.UUID) -> DomainError:
    # Locked and checked above, so only a concurrent change of the row gets here.
    return FailedPrecondition(
        f"lead {lead_id} changed while being passed up; read it again",
        reason="LEAD_VERSION_MISMATCH",
        metadata={"lead": str(lead_id)},
    )


async def _effects(
    conn: AsyncConnection, principal: Principal, before: Sequence[Any], note: str
) -> None:
    """History, the unit's exclusion, no flag or clock left behind, and an event each."""
    ids = [row.id for row in before]
    await conn.execute(
        lead_owner_history.insert(),
        [
            {
                "id": new_id(),
                "tenant_id": row.tenant_id,
                "lead_id": row.id,
                "from_org_id": row.owner_org_id,
                "from_org_path": row.owner_org_path,
                "to_org_id": row.parent_id,
                "to_org_path": row.parent_path,
                "reason": REASON_PASSED_UP,
                "rule_name": "",
                "actor": principal.subject,
            }
            for row in before
        ],
    )
    exclusion = insert(lead_rejections).values(
        [
            {
                "lead_id": row.id,
                "org_unit_id": row.owner_org_id,
                "tenant_id": row.tenant_id,
                "org_unit_path": row.owner_org_path,
                "kind": REASON_PASSED_UP,
                "note": note,
                "actor": principal.subject,
            }
            for row in before
        ]
    )
    await conn.execute(exclusion.on_conflict_do_nothing())
    await conn.execute(
        distribution_unmatched.delete().where(distribution_unmatched.c.lead_id.in_(ids))
    )
    await sla.clear(conn, ids)
    for row in before:
        await add_event(
            conn,
            event_type="crm.leads.lead.passed_up.v1",
            payload=events_pb2.LeadPassedUp(
                lead_id=str(row.id),
                from_org_id=str(row.owner_org_id),
                from_org_path=row.owner_org_path,
                to_org_id=str(row.parent_id),
                to_org_path=row.parent_path,
                actor=principal.subject,
                note=note,
            ),
            tenant_id=row.tenant_id,
            org_path=row.parent_path,
            producer=PRODUCER,
        )
