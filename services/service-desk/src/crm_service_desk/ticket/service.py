"""Ticket persistence and queries (SQLAlchemy Core, like every service's hot path).
Keyword-only functions taking the connection; they never commit."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from crm.servicedesk.v1 import events_pb2, ticket_pb2
from crm_platform import records
from crm_platform.auth import WRITE_ROLES, Principal
from crm_platform.ids import new_id
from crm_platform.outbox import add_event
from crm_platform.pagination import PageRequest
from crm_service_desk.ticket.mapping import ticket_to_proto
from crm_service_desk.ticket.models import tickets
from crm_service_desk.ticket.rules import NewTicket

PRODUCER = "service-desk"


async def create(
    *, conn: AsyncConnection, principal: Principal, ticket: NewTicket, request_id: uuid.UUID | None
) -> Any:
    """Insert the ticket owned by the caller's org unit, with its created event. A repeated
    request_id returns the first ticket and publishes nothing (race-free: unique index)."""
    principal.require_any(WRITE_ROLES)
    row, created = await records.insert_once(
        conn,
        tickets,
        {
            "id": new_id(),
            **records.owned_by(principal),
            "subject": ticket.subject,
            "description": ticket.description,
            "customer_id": ticket.customer_id,
            "priority": ticket.priority,
            "status": ticket_pb2.TICKET_STATUS_NEW,
            "channel": ticket.channel,
        },
        request_id=request_id,
    )
    if created:
        await add_event(
            conn,
            event_type="crm.servicedesk.ticket.created.v1",
            payload=events_pb2.TicketCreated(ticket=ticket_to_proto(row)),
            tenant_id=row.tenant_id,
            org_path=row.owner_org_path,
            producer=PRODUCER,
        )
    return row


async def get(*, conn: AsyncConnection, principal: Principal, ticket_id: uuid.UUID) -> Any:
    """A ticket outside the caller's subtree is reported as missing, so existence never
    leaks."""
    return await records.get_visible(conn, tickets, principal, ticket_id, kind="ticket")


async def list_visible(
    *,
    conn: AsyncConnection,
    principal: Principal,
    page: PageRequest,
    customer_id: uuid.UUID | None = None,
) -> list[Any]:
    """Newest first (UUIDv7 ids are time-ordered), keyset-paged; only the given
    customer's when ``customer_id`` is set."""
    where = () if customer_id is None else (tickets.c.customer_id == customer_id,)
    return await records.visible_page(conn, tickets, principal, page, *where)
