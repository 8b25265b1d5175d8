"""Append-only versioned documents (rules, policies): each change is stored as the next
version, so every version stays on record with who made it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_platform.errors import EtagMismatch

ATTEMPTS = 5


async def append_version(
    conn: AsyncConnection,
    table: sa.Table,
    *,
    key: Mapping[str, Any],
    values: Mapping[str, Any],
    conflict: str,
    reason: str,
) -> Any:
    """Insert ``values`` as version max+1 of the rows matching ``key`` (the table's primary
    key is ``key`` + ``version``); returns the new row's ``version`` and ``create_time``.

    Two concurrent appends compute the same next version: the second waits on the primary
    key, skips (ON CONFLICT DO NOTHING), and its next attempt — a new snapshot — takes the
    version after it. EtagMismatch(``conflict``, ``reason``) if it keeps losing."""
    columns = [*key, "version", *values]
    next_version = sa.select(
        *(sa.literal(v, table.c[k].type) for k, v in key.items()),
        sa.func.coalesce(sa.func.max(table.c.version), 0) + 1,
        *(sa.literal(v, table.c[k].type) for k, v in values.items()),
    ).where(*(table.c[k] == v for k, v in key.items()))
    stmt = (
        pg_insert(table)
        .from_select(columns, next_version)
        .on_conflict_do_nothing()
        .returning(table.c.version, table.c.create_time)
    )
    for _ in range(ATTEMPTS):
        row = (await conn.execute(stmt)).first()
        if row is not None:
            return row
    raise EtagMismatch(conflict, reason=reason)
