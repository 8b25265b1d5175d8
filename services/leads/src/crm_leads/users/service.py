"""Keeping the users replica (crm_leads.users.models) from directory events, and reading it.
Keyword-only functions taking the connection; they never commit (the consumer's unit of work
commits the change with its inbox row).

``created`` and ``deactivated`` are separate consumers, so either may arrive first: a
deactivation of a user not replicated yet inserts them inactive, and the later ``created``
changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.directory.v1 import directory_pb2, events_pb2
from crm.leads.v1 import events_pb2 as leads_events
from crm_leads.lead.mapping import lead_to_proto
from crm_leads.lead.models import OPEN_STATUSES, leads
from crm_leads.lead.service import PRODUCER
from crm_leads.users.models import users
from crm_platform.auth import ROLE_REP
from crm_platform.events import ReceivedEvent
from crm_platform.outbox import add_event


def _values(user: directory_pb2.User, event: ReceivedEvent, *, active: bool) -> dict[str, Any]:
    return {
        "id": uuid.UUID(user.id),
        "tenant_id": uuid.UUID(user.tenant_id),
        "org_unit_id": uuid.UUID(user.org_unit_id),
        "roles": list(user.roles),
        "active": active,
        "update_time": event.envelope.occurred_at.ToDatetime(tzinfo=UTC),
    }


async def on_user_created(conn: AsyncConnection, event: ReceivedEvent) -> None:
    assert isinstance(event.payload, events_pb2.UserCreated)
    stmt = insert(users).values(**_values(event.payload.user, event, active=True))
    await conn.execute(stmt.on_conflict_do_nothing(index_elements=[users.c.id]))


async def on_user_deactivated(conn: AsyncConnection, event: ReceivedEvent) -> None:
    """Mark the user inactive, then return every open lead they hold to its unit's pool in
    one UPDATE, with ``crm.leads.lead.released.v1`` per lead (``by``: the administrator who
    deactivated them). Redelivery finds nothing held any more."""
    assert isinstance(event.payload, events_pb2.UserDeactivated)
    values = _values(event.payload.user, event, active=False)
    stmt = insert(users).values(**values)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[users.c.id],
            set_={"active": False, "update_time": stmt.excluded.update_time},
        )
    )
    released = await conn.execute(
        leads.update()
        .where(
            leads.c.tenant_id == values["tenant_id"],
            leads.c.assignee_id == values["id"],
            leads.c.status.in_(OPEN_STATUSES),
        )
        .values(
            assignee_id=None,
            assigned_time=None,
            version=leads.c.version + 1,
            update_time=sa.func.now(),
        )
        .returning(*leads.c)
    )
    for row in released.all():
        await add_event(
            conn,
            event_type="crm.leads.lead.released.v1",
            payload=leads_events.LeadReleased(
                lead=lead_to_proto(row),
                previous_assignee_id=str(values["id"]),
                by=event.payload.by,
            ),
            tenant_id=row.tenant_id,
            org_path=row.owner_org_path,
            producer=PRODUCER,
        )


async def active_reps(
    *, conn: AsyncConnection, tenant_id: uuid.UUID, unit_id: uuid.UUID
) -> set[uuid.UUID]:
    """Ids of the unit's active users with the rep role (who may hold its leads)."""
    rows = await conn.execute(
        sa.select(users.c.id).where(
            users.c.tenant_id == tenant_id,
            users.c.org_unit_id == unit_id,
            users.c.active,
            users.c.roles.any(ROLE_REP),
        )
    )
    return {row.id for row in rows}


async def get_many(
    *, conn: AsyncConnection, tenant_id: uuid.UUID, user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Any]:
    rows = await conn.execute(
        sa.select(users).where(users.c.tenant_id == tenant_id, users.c.id.in_(list(user_ids)))
    )
    return {row.id: row for row in rows}


def is_active_rep_of(user: Any | None, unit_id: uuid.UUID) -> bool:
    return (
        user is not None and user.active and user.org_unit_id == unit_id and ROLE_REP in user.roles
    )
