"""The record access every service repeats: the idempotent create, one visible row by id,
and one keyset page of visible rows.

Tables have a UUIDv7 ``id``; ``insert_once`` needs ``tenant_id`` and ``request_id`` columns
with ``UNIQUE (tenant_id, request_id)``; ``get_visible`` and ``visible_page`` need
``crm_platform.db.owner_columns()`` and filter with ``crm_platform.auth.visible_to``. Like the
services' own functions, these take the caller's connection and never commit."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_platform.auth import Principal, visible_to
from crm_platform.errors import NotFound
from crm_platform.pagination import PageRequest


def owned_by(principal: Principal) -> dict[str, Any]:
    """Values of ``crm_platform.db.owner_columns()`` that make a new record belong to the
    principal's tenant and org unit (and so visible to its subtree)."""
    return {
        "tenant_id": principal.tenant_id,
        "owner_org_id": principal.org_unit_id,
        "owner_org_path": principal.org_path,
    }


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@functools.cache
def _insert_once_sql(table: sa.Table, columns: tuple[str, ...]) -> sa.TextualSelect:
    """The INSERT .. ON CONFLICT DO NOTHING RETURNING statement, built once per table and
    column set. SQLAlchemy 2.0 never caches the PostgreSQL ``Insert`` construct
    (``inherit_cache = False``), so building it per call recompiled it on every create, the
    largest single cost of a create in the lead_create benchmark; a typed ``text()`` is
    cached like any Core statement."""
    sql = (
        f"INSERT INTO {_quoted(table.name)} ({', '.join(_quoted(c) for c in columns)}) "
        f"VALUES ({', '.join(':' + c for c in columns)}) "
        "ON CONFLICT (tenant_id, request_id) DO NOTHING "
        f"RETURNING {', '.join(_quoted(c.name) for c in table.c)}"
    )
    binds = [sa.bindparam(c, type_=table.c[c].type) for c in columns]
    return sa.text(sql).bindparams(*binds).columns(*table.c)


async def insert_once(
    conn: AsyncConnection,
    table: sa.Table,
    values: Mapping[str, Any],
    *,
    request_id: uuid.UUID | None,
) -> tuple[sa.Row[Any], bool]:
    """Insert one row of ``values`` (which carry ``tenant_id``) with ``request_id``, and
    return ``(row, created)``.

    If the tenant already has a row with this ``request_id``, nothing is written and that
    first row comes back with ``created=False``, so the caller skips its side effects
    (events). Race-free under READ COMMITTED (PostgreSQL's default): a concurrent insert of
    the same key waits on the unique index, then finds the committed row (or inserts, if
    the other transaction rolled back). A ``None`` request_id never conflicts."""
    params = {**values, "request_id": request_id}
    row = (await conn.execute(_insert_once_sql(table, tuple(sorted(params))), params)).first()
    if row is not None:
        return row, True
    existing = (
        await conn.execute(
            sa.select(table).where(
                table.c.tenant_id == values["tenant_id"], table.c.request_id == request_id
            )
        )
    ).one()
    return existing, False


async def claim(
    conn: AsyncConnection, table: sa.Table, key: sa.Column[Any], values: Mapping[str, Any]
) -> tuple[sa.Row[Any], bool]:
    """The row whose unique ``key`` is ``values[key.name]``, locked for the transaction;
    inserted with ``values`` if missing. Returns ``(row, inserted)``. One statement, not an
    insert and a locking read: a no-op ON CONFLICT DO UPDATE locks the existing row as FOR
    UPDATE would (waiting for a concurrent holder, then taking its latest version), and
    ``xmax = 0`` on the returned row tells a fresh insert from it."""
    stmt = pg_insert(table).values(**values)
    row = (
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[key], set_={key.name: stmt.excluded[key.name]}
            ).returning(*table.c, sa.literal_column("(xmax = 0)").label("inserted"))
        )
    ).one()
    return row, bool(row.inserted)


async def get_visible(
    conn: AsyncConnection,
    table: sa.Table,
    principal: Principal,
    record_id: uuid.UUID,
    *,
    kind: str,
) -> sa.Row[Any]:
    """The row with ``record_id`` if the principal can see it. Otherwise NotFound with
    reason ``<KIND>_NOT_FOUND`` and metadata ``{kind: id}`` (``kind`` is a one-word resource
    name such as ``"lead"``): a row of another tenant or outside the caller's subtree gets
    the same answer as a missing one, so existence never leaks."""
    row = (
        await conn.execute(
            sa.select(table).where(table.c.id == record_id, visible_to(table, principal))
        )
    ).first()
    if row is None:
        raise NotFound(
            f"{kind} {record_id} not found",
            reason=f"{kind.upper()}_NOT_FOUND",
            metadata={kind: str(record_id)},
        )
    return row


async def visible_page(
    conn: AsyncConnection,
    table: sa.Table,
    principal: Principal,
    page: PageRequest,
    *where: sa.ColumnElement[bool],
) -> list[sa.Row[Any]]:
    """The principal's visible rows newest first (UUIDv7 ids are time-ordered), starting
    below ``page.after`` when given: at most ``page.size + 1`` rows, so
    ``crm_platform.pagination.page_of`` can trim to the page and tell whether more follow.
    ``where``: further filters (a list's query parameters)."""
    stmt = (
        sa.select(table)
        .where(visible_to(table, principal), *where)
        .order_by(table.c.id.desc())
        .limit(page.size + 1)
    )
    if page.after is not None:
        stmt = stmt.where(table.c.id < page.after)
    return list((await conn.execute(stmt)).all())
