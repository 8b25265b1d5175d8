"""Lead persistence and queries (SQLAlchemy Core: lead create is a hot path).
Keyword-only functions taking the connection; they never commit."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2, lead_pb2
from crm_leads.lead.mapping import lead_to_proto
from crm_leads.lead.models import leads
from crm_leads.lead.rules import NewLead
from crm_platform import records
from crm_platform.auth import WRITE_ROLES, Principal
from crm_platform.ids import new_id
from crm_platform.outbox import add_event
from crm_platform.pagination import PageRequest

PRODUCER = "leads"


async def create(
    *, conn: AsyncConnection, principal: Principal, lead: NewLead, request_id: uuid.UUID | None
) -> Any:
    """Insert the lead owned by the caller's org unit, with its created event. A repeated
    request_id returns the first lead and publishes nothing (race-free: unique index)."""
    principal.require_any(WRITE_ROLES)
    row, created = await records.insert_once(
        conn,
        leads,
        {
            "id": new_id(),
            **records.owned_by(principal),
            "full_name": lead.full_name,
            "phone": lead.phone,
            "email": lead.email,
            "company": lead.company,
            "province": lead.province,
            "city": lead.city,
            "source": lead.source,
            "status": lead_pb2.LEAD_STATUS_NEW,
        },
        request_id=request_id,
    )
    if created:
        await add_event(
            conn,
            event_type="crm.leads.lead.created.v1",
            payload=events_pb2.LeadCreated(lead=lead_to_proto(row)),
            tenant_id=row.tenant_id,
            org_path=row.owner_org_path,
            producer=PRODUCER,
        )
    return row


async def get(*, conn: AsyncConnection, principal: Principal, lead_id: uuid.UUID) -> Any:
    """A lead outside the caller's subtree is reported as missing, so existence never leaks."""
    return await records.get_visible(conn, leads, principal, lead_id, kind="lead")


async def list_visible(
    *, conn: AsyncConnection, principal: Principal, page: PageRequest
) -> list[Any]:
    """Newest first (UUIDv7 ids are time-ordered), keyset-paged."""
    return await records.visible_page(conn, leads, principal, page)
