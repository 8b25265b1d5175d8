"""Keeping the org-tree replica (crm_leads.orgtree.models) from directory events, and reading
it. Keyword-only functions taking the connection; they never commit (the consumer's unit of
work commits the change with its inbox row).

Events of one subject arrive in order, but ``created`` and ``moved`` are separate consumers,
so the handlers make no assumption about the order between them: a unit's created event
after its move changes nothing, a child created before a move but replicated after it takes
its parent's current path, and an older move never undoes a newer one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.directory.v1 import events_pb2
from crm_leads.orgtree.models import org_units
from crm_platform.events import ReceivedEvent


def _occurred(event: ReceivedEvent) -> datetime:
    return event.envelope.occurred_at.ToDatetime(tzinfo=UTC)


def _parent_id(value: str) -> uuid.UUID | None:
    return uuid.UUID(value) if value else None


async def on_org_unit_created(conn: AsyncConnection, event: ReceivedEvent) -> None:
    """Insert the unit; a row already there came from a later move and is newer."""
    assert isinstance(event.payload, events_pb2.OrgUnitCreated)
    unit = event.payload.org_unit
    parent_id = _parent_id(unit.parent_id)
    path: Any = unit.path
    if parent_id is not None:
        parent = org_units.alias("parent")
        # The parent may have moved since this event was written: derive from where it is.
        path = sa.func.coalesce(
            sa.select(parent.c.path + unit.code + "/")
            .where(parent.c.id == parent_id)
            .scalar_subquery(),
            unit.path,
        )
    await conn.execute(
        insert(org_units)
        .values(
            id=uuid.UUID(unit.id),
            tenant_id=uuid.UUID(unit.tenant_id),
            parent_id=parent_id,
            path=path,
            code=unit.code,
            name=unit.display_name,
            kind=unit.kind,
            update_time=_occurred(event),
        )
        .on_conflict_do_nothing(index_elements=[org_units.c.id])
    )


async def on_org_unit_moved(conn: AsyncConnection, event: ReceivedEvent) -> None:
    """Re-parent the unit, then rewrite every path of its subtree in one set-based UPDATE
    (as the directory does), unless a newer change of the unit is already applied."""
    assert isinstance(event.payload, events_pb2.OrgUnitMoved)
    moved = event.payload
    unit = moved.org_unit
    unit_id, tenant_id = uuid.UUID(unit.id), uuid.UUID(unit.tenant_id)
    stmt = insert(org_units).values(
        id=unit_id,
        tenant_id=tenant_id,
        parent_id=_parent_id(unit.parent_id),
        path=moved.new_path,
        code=unit.code,
        name=unit.display_name,
        kind=unit.kind,
        update_time=_occurred(event),
    )
    applied = await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[org_units.c.id],
            set_={
                name: stmt.excluded[name]
                for name in ("parent_id", "path", "code", "name", "kind", "update_time")
            },
            where=org_units.c.update_time <= stmt.excluded.update_time,
        ).returning(org_units.c.id)
    )
    if applied.first() is None:
        return
    old, new = moved.old_path, moved.new_path
    await conn.execute(
        org_units.update()
        .where(
            org_units.c.tenant_id == tenant_id,
            org_units.c.path.startswith(old, autoescape=True),
            org_units.c.id != unit_id,
        )
        .values(path=new + sa.func.substr(org_units.c.path, len(old) + 1))
    )


async def get(*, conn: AsyncConnection, unit_id: uuid.UUID) -> Any | None:
    return (await conn.execute(sa.select(org_units).where(org_units.c.id == unit_id))).first()


async def children_of(*, conn: AsyncConnection, unit_id: uuid.UUID) -> list[Any]:
    """The unit's direct children, by path."""
    stmt = sa.select(org_units).where(org_units.c.parent_id == unit_id).order_by(org_units.c.path)
    return list((await conn.execute(stmt)).all())


async def subtree(*, conn: AsyncConnection, unit_id: uuid.UUID) -> list[Any]:
    """The unit and all its descendants, by path (parents before their children); empty if
    the unit is not replicated (yet)."""
    root = org_units.alias("root")
    stmt = (
        sa.select(org_units)
        .join(
            root,
            sa.and_(
                root.c.id == unit_id,
                org_units.c.tenant_id == root.c.tenant_id,
                # Path segments are codes (a-z, 0-9, '-'): no LIKE wildcards to escape.
                org_units.c.path.startswith(root.c.path),
            ),
        )
        .order_by(org_units.c.path)
    )
    return list((await conn.execute(stmt)).all())
