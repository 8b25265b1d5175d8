"""Field history of customers and contacts: one row per changed field (old -> new as JSON,
actor, time). Keyword-only functions taking the connection; they never commit."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_customers.customer.models import field_changes
from crm_platform.ids import new_id
from crm_platform.pagination import PageRequest


async def record(
    *,
    conn: AsyncConnection,
    customer: Any,
    contact_id: uuid.UUID | None,
    changes: Mapping[str, tuple[object, object]],
    actor: str,
) -> None:
    """One row per changed field, in one statement."""
    if not changes:
        return
    await conn.execute(
        field_changes.insert(),
        [
            {
                "id": new_id(),
                "tenant_id": customer.tenant_id,
                "customer_id": customer.id,
                "contact_id": contact_id,
                "field": name,
                "old_value": old,
                "new_value": new,
                "actor": actor,
            }
            for name, (old, new) in sorted(changes.items())
        ],
    )


async def page_of(
    *,
    conn: AsyncConnection,
    customer_id: uuid.UUID,
    contact_id: uuid.UUID | None,
    page: PageRequest,
) -> Sequence[Any]:
    """Newest first (UUIDv7 ids), keyset-paged; the caller checked the customer is visible."""
    query = (
        sa.select(field_changes)
        .where(
            field_changes.c.customer_id == customer_id,
            field_changes.c.contact_id == contact_id
            if contact_id is not None
            else field_changes.c.contact_id.is_(None),
        )
        .order_by(field_changes.c.id.desc())
        .limit(page.size + 1)
    )
    if page.after is not None:
        query = query.where(field_changes.c.id < page.after)
    return (await conn.execute(query)).all()
