"""Public REST adapter for campaigns."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import Field

from crm_marketing.campaign import rules, service
from crm_marketing.campaign.mapping import campaign_to_proto
from crm_platform.http import ApiModel, CurrentPage, CurrentPrincipal, MoneyIn, paged, proto_json
from crm_platform.ids import parse_id
from crm_platform.runtime import Runtime

Json = dict[str, Any]


class CampaignIn(ApiModel):
    name: str = Field(max_length=rules.MAX_NAME)
    # Plain strings, not enums or dates: rules report bad values with the body's other
    # violations, in the same words as over gRPC.
    channel: str = Field(max_length=16, description=", ".join(rules.CHANNELS) + ".")
    budget: MoneyIn
    start_date: str = Field(max_length=10, description="YYYY-MM-DD.")
    end_date: str = Field(max_length=10, description="YYYY-MM-DD, not before start_date.")


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])

    @r.post("", status_code=201)
    async def create_campaign(
        body: CampaignIn,
        principal: CurrentPrincipal,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Json:
        """Create a draft campaign owned by the caller's org unit. `Idempotency-Key` (a UUID)
        makes retries return the first result."""
        new = rules.validate_new_campaign(
            name=body.name,
            channel=body.channel,
            currency_code=body.budget.currency_code,
            amount=body.budget.amount,
            start_date=body.start_date,
            end_date=body.end_date,
        )
        request_id = parse_id(idempotency_key, "Idempotency-Key") if idempotency_key else None
        async with rt.db.unit_of_work() as conn:
            row = await service.create(
                conn=conn, principal=principal, campaign=new, request_id=request_id
            )
        return proto_json(campaign_to_proto(row))

    @r.get("")
    async def list_campaigns(
        principal: CurrentPrincipal,
        page: CurrentPage,
    ) -> Json:
        async with rt.db.read() as conn:
            rows = await service.list_visible(conn=conn, principal=principal, page=page)
        return paged("campaigns", rows, page, lambda x: proto_json(campaign_to_proto(x)))

    @r.get("/{campaign_id}")
    async def get_campaign(campaign_id: str, principal: CurrentPrincipal) -> Json:
        async with rt.db.read() as conn:
            row = await service.get(
                conn=conn, principal=principal, campaign_id=parse_id(campaign_id, "campaign_id")
            )
        return proto_json(campaign_to_proto(row))

    return r
