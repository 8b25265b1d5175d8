"""Public REST adapter for tickets."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import Field

from crm_platform.http import ApiModel, CurrentPage, CurrentPrincipal, paged, proto_json
from crm_platform.ids import parse_id
from crm_platform.runtime import Runtime
from crm_service_desk.ticket import rules, service
from crm_service_desk.ticket.mapping import ticket_to_proto

Json = dict[str, Any]


class TicketIn(ApiModel):
    subject: str = Field(max_length=rules.MAX_SUBJECT)
    description: str = Field(default="", max_length=rules.MAX_DESCRIPTION)
    customer_id: str | None = Field(default=None, max_length=64)
    # Plain strings, not enums: rules report bad values with the body's other violations.
    priority: str = Field(
        default="NORMAL", max_length=32, description=", ".join(rules.PRIORITIES) + "."
    )
    channel: str = Field(
        default=rules.DEFAULT_CHANNEL, max_length=32, description=", ".join(rules.CHANNELS) + "."
    )


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1/tickets", tags=["tickets"])

    @r.post("", status_code=201)
    async def create_ticket(
        body: TicketIn,
        principal: CurrentPrincipal,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Json:
        """Create a ticket owned by the caller's org unit. `Idempotency-Key` (a UUID) makes
        retries return the first result."""
        new = rules.validate_new_ticket(
            subject=body.subject,
            description=body.description,
            customer_id=body.customer_id or "",
            priority=body.priority,
            channel=body.channel,
        )
        request_id = parse_id(idempotency_key, "Idempotency-Key") if idempotency_key else None
        async with rt.db.unit_of_work() as conn:
            row = await service.create(
                conn=conn, principal=principal, ticket=new, request_id=request_id
            )
        return proto_json(ticket_to_proto(row))

    @r.get("")
    async def list_tickets(
        principal: CurrentPrincipal,
        page: CurrentPage,
        customer_id: Annotated[str, Query(description="Only this customer's.")] = "",
    ) -> Json:
        cid = parse_id(customer_id, "customer_id") if customer_id else None
        async with rt.db.read() as conn:
            rows = await service.list_visible(
                conn=conn, principal=principal, page=page, customer_id=cid
            )
        return paged("tickets", rows, page, lambda x: proto_json(ticket_to_proto(x)))

    @r.get("/{ticket_id}")
    async def get_ticket(ticket_id: str, principal: CurrentPrincipal) -> Json:
        async with rt.db.read() as conn:
            row = await service.get(
                conn=conn, principal=principal, ticket_id=parse_id(ticket_id, "ticket_id")
            )
        return proto_json(ticket_to_proto(row))

    return r
