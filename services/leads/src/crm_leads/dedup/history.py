"""Lead field history: what duplicate captures changed (old -> new per field). Keyword-only
functions taking the connection; they never commit."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.dedup.models import lead_history
from crm_leads.lead.models import leads
from crm_platform import records
from crm_platform.auth import Principal
from crm_platform.ids import new_id
from crm_platform.pagination import PageRequest
from crm_platform.protos import timestamp


async def record(
    *,
    conn: AsyncConnection,
    lead: Any,
    changed: Mapping[str, tuple[str, str]],
    action: str,
    rule: str,
    intent_id: uuid.UUID | None,
    request_id: uuid.UUID | None,
    author: str,
) -> None:
    """One row per changed field, in one statement."""
    if not changed:
        return
    await conn.execute(
        lead_history.insert(),
        [
            {
                "id": new_id(),
                "tenant_id": lead.tenant_id,
                "lead_id": lead.id,
                "field": field,
                "old_value": old,
                "new_value": new,
                "action": action,
                "rule": rule,
                "intent_id": intent_id,
                "request_id": request_id,
                "author": author,
            }
            for field, (old, new) in sorted(changed.items())
        ],
    )


async def page_of_lead(
    *, conn: AsyncConnection, principal: Principal, lead_id: uuid.UUID, page: PageRequest
) -> Sequence[Any]:
    """Newest first (UUIDv7 ids), keyset-paged; NotFound unless the lead is visible."""
    await records.get_visible(conn, leads, principal, lead_id, kind="lead")
    query = (
        sa.select(lead_history)
        .where(lead_history.c.lead_id == lead_id)
        .order_by(lead_history.c.id.desc())
        .limit(page.size + 1)
    )
    if page.after is not None:
        query = query.where(lead_history.c.id < page.after)
    return (await conn.execute(query)).all()


def change_json(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "field": row.field,
        "old_value": row.old_value,
        "new_value": row.new_value,
        "action": row.action,
        "rule": row.rule,
        "intent_id": str(row.intent_id) if row.intent_id else "",
        "request_id": str(row.request_id) if row.request_id else "",
        "author": row.author,
        "change_time": timestamp(row.change_time).ToJsonString(),
    }
