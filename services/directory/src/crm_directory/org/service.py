"""Tenants and the org tree. Keyword-only functions taking the connection; never commit."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.directory.v1 import directory_pb2, events_pb2
from crm_directory.mapping import org_unit_to_proto, tenant_to_proto
from crm_directory.models import org_units, tenants
from crm_directory.org import rules
from crm_platform.auth import ROLE_ADMIN, ROLE_MANAGER, Principal
from crm_platform.errors import AlreadyExists, NotFound
from crm_platform.ids import new_id
from crm_platform.outbox import add_event
from crm_platform.pagination import PageRequest

PRODUCER = "directory"


async def create_tenant(
    *, conn: AsyncConnection, slug: str, display_name: str, default_region: str
) -> tuple[Any, Any]:
    rules.validate_code(slug, "slug")
    rules.validate_region(default_region)
    rules.validate_display_name(display_name)
    tenant_id, root_id = new_id(), new_id()
    try:
        async with conn.begin_nested():
            await conn.execute(
                tenants.insert().values(
                    id=tenant_id,
                    slug=slug,
                    display_name=display_name,
                    default_region=default_region,
                )
            )
    except IntegrityError:
        raise AlreadyExists(f"tenant {slug!r} exists", reason="TENANT_EXISTS") from None
    path = rules.root_path(slug)
    await conn.execute(
        org_units.insert().values(
            id=root_id,
            tenant_id=tenant_id,
            parent_id=None,
            kind=directory_pb2.ORG_UNIT_KIND_HQ,
            code=slug,
            display_name=display_name,
            path=path,
        )
    )
    tenant = (await conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id))).one()
    root = (await conn.execute(sa.select(org_units).where(org_units.c.id == root_id))).one()
    await add_event(
        conn,
        event_type="crm.directory.tenant.created.v1",
        payload=events_pb2.TenantCreated(tenant=tenant_to_proto(tenant)),
        tenant_id=tenant_id,
        org_path=path,
        producer=PRODUCER,
    )
    await _org_unit_created(conn, root)
    return tenant, root


async def _org_unit_created(conn: AsyncConnection, row: Any) -> None:
    await add_event(
        conn,
        event_type="crm.directory.org_unit.created.v1",
        payload=events_pb2.OrgUnitCreated(org_unit=org_unit_to_proto(row)),
        tenant_id=row.tenant_id,
        org_path=row.path,
        producer=PRODUCER,
    )


async def get_tenant(*, conn: AsyncConnection, principal: Principal, tenant_id: uuid.UUID) -> Any:
    row = (await conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id))).first()
    if row is None or row.id != principal.tenant_id:
        raise NotFound(f"tenant {tenant_id} not found", reason="TENANT_NOT_FOUND")
    return row


def _visible(principal: Principal) -> sa.ColumnElement[bool]:
    return sa.and_(
        org_units.c.tenant_id == principal.tenant_id,
        org_units.c.path.startswith(principal.org_path, autoescape=True),
    )


async def get_org_unit(
    *, conn: AsyncConnection, principal: Principal, org_unit_id: uuid.UUID
) -> Any:
    row = (
        await conn.execute(
            sa.select(org_units).where(org_units.c.id == org_unit_id, _visible(principal))
        )
    ).first()
    if row is None:
        raise NotFound(f"org unit {org_unit_id} not found", reason="ORG_UNIT_NOT_FOUND")
    return row


async def list_org_units(
    *, conn: AsyncConnection, principal: Principal, page: PageRequest
) -> list[Any]:
    stmt = (
        sa.select(org_units)
        .where(_visible(principal))
        .order_by(org_units.c.id)
        .limit(page.size + 1)
    )
    if page.after is not None:
        stmt = stmt.where(org_units.c.id > page.after)
    return list((await conn.execute(stmt)).all())


async def create_org_unit(
    *,
    conn: AsyncConnection,
    principal: Principal,
    parent_id: uuid.UUID,
    kind: int,
    code: str,
    display_name: str,
) -> Any:
    principal.require_any([ROLE_ADMIN, ROLE_MANAGER])
    rules.validate_kind(kind)
    rules.validate_code(code)
    rules.validate_display_name(display_name)
    parent = await get_org_unit(conn=conn, principal=principal, org_unit_id=parent_id)
    unit_id = new_id()
    try:
        async with conn.begin_nested():
            await conn.execute(
                org_units.insert().values(
                    id=unit_id,
                    tenant_id=parent.tenant_id,
                    parent_id=parent.id,
                    kind=kind,
                    code=code,
                    display_name=display_name,
                    path=rules.child_path(parent.path, code),
                )
            )
    except IntegrityError:
        raise AlreadyExists(
            f"org unit {code!r} exists under {parent.path}", reason="ORG_UNIT_EXISTS"
        ) from None
    row = (await conn.execute(sa.select(org_units).where(org_units.c.id == unit_id))).one()
    await _org_unit_created(conn, row)
    return row


async def move_org_unit(
    *, conn: AsyncConnection, principal: Principal, org_unit_id: uuid.UUID, new_parent_id: uuid.UUID
) -> Any:
    """Re-parent a unit; every path in its subtree is rewritten in one set-based UPDATE."""
    principal.require_any([ROLE_ADMIN])
    node = await get_org_unit(conn=conn, principal=principal, org_unit_id=org_unit_id)
    parent = await get_org_unit(conn=conn, principal=principal, org_unit_id=new_parent_id)
    rules.check_move(node.path, parent.path)
    old_prefix, new_prefix = node.path, rules.child_path(parent.path, node.code)
    # Lock the tenant's tree so concurrent moves cannot interleave into a cycle.
    await conn.execute(
        sa.select(org_units.c.id).where(org_units.c.tenant_id == node.tenant_id).with_for_update()
    )
    try:
        async with conn.begin_nested():
            await conn.execute(
                org_units.update()
                .where(
                    org_units.c.tenant_id == node.tenant_id,
                    org_units.c.path.startswith(old_prefix, autoescape=True),
                )
                .values(path=new_prefix + sa.func.substr(org_units.c.path, len(old_prefix) + 1))
            )
            await conn.execute(
                org_units.update().where(org_units.c.id == node.id).values(parent_id=parent.id)
            )
    except IntegrityError:
        raise AlreadyExists(
            f"{parent.path} already has a unit {node.code!r}", reason="ORG_UNIT_EXISTS"
        ) from None
    row = (await conn.execute(sa.select(org_units).where(org_units.c.id == node.id))).one()
    await add_event(
        conn,
        event_type="crm.directory.org_unit.moved.v1",
        payload=events_pb2.OrgUnitMoved(
            org_unit=org_unit_to_proto(row), old_path=old_prefix, new_path=new_prefix
        ),
        tenant_id=row.tenant_id,
        org_path=new_prefix,
        producer=PRODUCER,
    )
    return row
