"""Public REST adapter for opportunities."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import Field

from crm_platform.http import ApiModel, CurrentPage, CurrentPrincipal, MoneyIn, paged, proto_json
from crm_platform.ids import parse_id
from crm_platform.runtime import Runtime
from crm_sales.opportunity import rules, service
from crm_sales.opportunity.mapping import opportunity_to_proto

Json = dict[str, Any]
ID_MAX = 64  # a UUID in any form uuid.UUID accepts


class OpportunityIn(ApiModel):
    title: str = Field(max_length=rules.MAX_TITLE)
    customer_id: str | None = Field(default=None, max_length=ID_MAX)
    contact_id: str | None = Field(default=None, max_length=ID_MAX)
    lead_id: str | None = Field(default=None, max_length=ID_MAX)
    amount: MoneyIn
    # A plain string, not an enum: rules report a bad stage with the body's other violations.
    stage: str = Field(
        default="QUALIFICATION", max_length=32, description=", ".join(rules.STAGES) + "."
    )
    close_date: str | None = Field(default=None, max_length=10, description="YYYY-MM-DD.")
    product: str | None = Field(
        default=None, max_length=rules.MAX_LABEL, description="Product of interest."
    )
    campaign: str | None = Field(
        default=None, max_length=rules.MAX_LABEL, description="Campaign, for attribution."
    )


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1/opportunities", tags=["opportunities"])

    @r.post("", status_code=201)
    async def create_opportunity(
        body: OpportunityIn,
        principal: CurrentPrincipal,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Json:
        """Create an opportunity owned by the caller's org unit. `Idempotency-Key` (a UUID)
        makes retries return the first result."""
        new = rules.validate_new_opportunity(
            title=body.title,
            customer_id=body.customer_id or "",
            contact_id=body.contact_id or "",
            lead_id=body.lead_id or "",
            currency_code=body.amount.currency_code,
            amount=body.amount.amount,
            stage=body.stage,
            close_date=body.close_date or "",
            product=body.product or "",
            campaign=body.campaign or "",
        )
        request_id = parse_id(idempotency_key, "Idempotency-Key") if idempotency_key else None
        async with rt.db.unit_of_work() as conn:
            row = await service.create(
                conn=conn, principal=principal, opportunity=new, request_id=request_id
            )
        return proto_json(opportunity_to_proto(row))

    @r.get("")
    async def list_opportunities(
        principal: CurrentPrincipal,
        page: CurrentPage,
        customer_id: Annotated[str, Query(description="Only this customer's.")] = "",
    ) -> Json:
        cid = parse_id(customer_id, "customer_id") if customer_id else None
        async with rt.db.read() as conn:
            rows = await service.list_visible(
                conn=conn, principal=principal, page=page, customer_id=cid
            )
        return paged("opportunities", rows, page, lambda x: proto_json(opportunity_to_proto(x)))

    @r.get("/{opportunity_id}")
    async def get_opportunity(opportunity_id: str, principal: CurrentPrincipal) -> Json:
        async with rt.db.read() as conn:
            row = await service.get(
                conn=conn,
                principal=principal,
                opportunity_id=parse_id(opportunity_id, "opportunity_id"),
            )
        return proto_json(opportunity_to_proto(row))

    return r
