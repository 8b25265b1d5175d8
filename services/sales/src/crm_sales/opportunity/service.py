"""Opportunity persistence and queries (SQLAlchemy Core, like every service's hot path).
Keyword-only functions taking the connection; they never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from crm.sales.v1 import events_pb2
from crm_platform import records
from crm_platform.auth import WRITE_ROLES, Principal
from crm_platform.ids import new_id
from crm_platform.outbox import NewEvent, add_events
from crm_platform.pagination import PageRequest
from crm_sales.opportunity.mapping import opportunity_to_proto
from crm_sales.opportunity.models import opportunities
from crm_sales.opportunity.rules import NewOpportunity

PRODUCER = "sales"


def new_values(opportunity: NewOpportunity, owner: dict[str, Any]) -> dict[str, Any]:
    """The row of a new opportunity owned by ``owner`` (``records.owned_by`` or the like);
    callers add their own columns (``conversion_id`` ...)."""
    return {
        "id": new_id(),
        **owner,
        "title": opportunity.title,
        "customer_id": opportunity.customer_id,
        "contact_id": opportunity.contact_id,
        "lead_id": opportunity.lead_id,
        "amount": opportunity.amount,
        "currency": opportunity.currency,
        "stage": opportunity.stage,
        "close_date": opportunity.close_date,
        "product": opportunity.product,
        "campaign": opportunity.campaign,
    }


def created_event(row: Any, *, correlation_id: str = "", causation_id: str = "") -> NewEvent:
    return NewEvent(
        event_type="crm.sales.opportunity.created.v1",
        payload=events_pb2.OpportunityCreated(opportunity=opportunity_to_proto(row)),
        tenant_id=row.tenant_id,
        org_path=row.owner_org_path,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )


async def insert_many(*, conn: AsyncConnection, values: Sequence[dict[str, Any]]) -> list[Any]:
    """Insert the rows with one multi-row INSERT; returns them in the order given (RETURNING
    order is not guaranteed, the ids are ours)."""
    if not values:
        return []
    result = await conn.execute(
        opportunities.insert().values(list(values)).returning(*opportunities.c)
    )
    by_id = {row.id: row for row in result.all()}
    return [by_id[v["id"]] for v in values]


async def create(
    *,
    conn: AsyncConnection,
    principal: Principal,
    opportunity: NewOpportunity,
    request_id: uuid.UUID | None,
) -> Any:
    """Insert the opportunity owned by the caller's org unit, with its created event. A
    repeated request_id returns the first opportunity and publishes nothing (race-free:
    unique index)."""
    principal.require_any(WRITE_ROLES)
    row, created = await records.insert_once(
        conn,
        opportunities,
        new_values(opportunity, records.owned_by(principal)),
        request_id=request_id,
    )
    if created:
        await add_events(conn, [created_event(row)], producer=PRODUCER)
    return row


async def get(*, conn: AsyncConnection, principal: Principal, opportunity_id: uuid.UUID) -> Any:
    """An opportunity outside the caller's subtree is reported as missing, so existence
    never leaks."""
    return await records.get_visible(
        conn, opportunities, principal, opportunity_id, kind="opportunity"
    )


async def list_visible(
    *,
    conn: AsyncConnection,
    principal: Principal,
    page: PageRequest,
    customer_id: uuid.UUID | None = None,
) -> list[Any]:
    """Newest first (UUIDv7 ids are time-ordered), keyset-paged; only the given
    customer's when ``customer_id`` is set."""
    where = () if customer_id is None else (opportunities.c.customer_id == customer_id,)
    return await records.visible_page(conn, opportunities, principal, page, *where)
